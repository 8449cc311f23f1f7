//! The fault scenarios every relay runs, written once against [`Broker`]: each crate
//! implements the trait for its broker in its `tests/support` and calls a scenario per test.
//!
//! What every scenario ends with: the broker holds exactly the committed log, in position
//! order, each event once ([`Broker::assert_holds`]).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::{
    AnyEvent, BoxError, Consumer, ConsumerHandle, ConsumerState, Delivery, Envelope, EventHandler,
    GlobalLog, MemoryStore, RecordedEvent, RetryPolicy, Status, StreamStore,
};
use tokio::sync::watch;

use crate::events::{Rng, log_of, write};
use crate::file_log::{FileLog, mirror_to_file};
use crate::postgres::{drop_schema, postgres_store, unique_schema};
use crate::proxy::Proxy;

/// How long a scenario waits for a relay or a consumer to catch up before failing.
pub const WAIT: Duration = Duration::from_secs(60);

/// The name of the test that every test binary running [`relay_killed_over_memory`] or
/// [`relay_killed_over_postgres`] defines, calling [`child_relay`]: the scenario starts the
/// binary again with `--exact child_relay_process` to get a relay in a process of its own.
pub const CHILD_TEST: &str = "child_relay_process";

const CHILD_BROKER: &str = "RELAY_TESTING_CHILD_BROKER";
const CHILD_SOURCE: &str = "RELAY_TESTING_CHILD_SOURCE";

/// A broker under test, as the scenarios see it: where relays write and what they hold,
/// where broker-side consumers read and keep their checkpoints, and how it fails.
pub trait Broker: Clone + Send + Sync + 'static {
    /// The relay: the handler of every event and the delivery of its own checkpoint.
    type Relay: EventHandler<()> + Delivery<Tx = ()> + 'static;
    /// The log a broker-side consumer reads.
    type Log: GlobalLog + 'static;
    /// The checkpoints and parked events of a broker-side consumer.
    type Delivery: Delivery<Tx = ()> + 'static;

    /// The broker's name in error messages (`Redis`, `NATS`).
    const NAME: &'static str;
    /// What a relay's error says when the broker refuses its connection.
    const REFUSED: &'static str;

    /// A new relay (with a connection of its own, as a new process makes) over `log`, as
    /// consumer `name`.
    fn relay<L: GlobalLog>(&self, name: &str, log: L) -> Consumer<Self::Relay, L, Self::Relay>;

    /// The last position the broker holds, read from the broker.
    fn last_published(&self) -> impl Future<Output = u64> + Send;

    /// Asserts that the broker holds exactly `log`, in order, field for field, everywhere
    /// the relay writes.
    fn assert_holds(&self, log: &[RecordedEvent]) -> impl Future<Output = ()> + Send;

    /// How many events the broker holds where relays resume from.
    fn held(&self) -> impl Future<Output = usize> + Send;

    /// Loses what the broker holds where relays resume from, as a server that lost its data.
    fn lose_data(&self) -> impl Future<Output = ()> + Send;

    /// The log and delivery of broker-side consumer `name`.
    fn consumer_source(&self, name: &str) -> (Self::Log, Self::Delivery);

    /// The checkpoint the broker keeps for broker-side consumer `name`, read from the broker.
    fn checkpoint(&self, name: &str) -> impl Future<Output = Option<u64>> + Send;

    /// Deletes what the test wrote to the broker.
    fn cleanup(&self) -> impl Future<Output = ()> + Send;

    /// This broker, as [`Broker::from_arg`] reads it back in a child process.
    fn to_arg(&self) -> String;

    /// The broker named by [`Broker::to_arg`], configured as the fault scenarios configure it.
    fn from_arg(arg: &str) -> Self;

    /// The server's address (where a [`Proxy`] forwards to).
    fn address(&self) -> SocketAddr;

    /// The same broker reached through a proxy on `port`: relays connect through it.
    fn through(&self, port: u16) -> Self;

    /// The broker's URL through a proxy on `port`, as error messages name it.
    fn url_through(&self, port: u16) -> String;

    /// The faults [`outage`] applies, in order.
    fn faults(&self) -> Vec<Fault>;

    /// Closes this broker's relay connections from the server's side; how many there were.
    /// Called only for [`Fault::Kill`].
    fn kill_relay_connections(&self) -> impl Future<Output = usize> + Send {
        async { panic!("{} cannot close connections from the server", Self::NAME) }
    }
}

/// One fault of [`outage`].
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// The server closes the relay's connections ([`Broker::kill_relay_connections`]).
    Kill,
    /// The network drops them (the proxy closes both sides).
    Drop,
    /// The broker is unreachable for this long (connections refused and dropped) while
    /// events are written.
    Outage(Duration),
}

/// Runs the relay of [`relay_killed_over_memory`] or [`relay_killed_over_postgres`] in a
/// child process, until it is killed. Call it from a test named [`CHILD_TEST`]; run as a
/// plain test, it returns at once.
pub fn child_relay<B: Broker>() {
    let Ok(broker) = std::env::var(CHILD_BROKER) else {
        return;
    };
    let source = std::env::var(CHILD_SOURCE).expect("the child's source");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let broker = B::from_arg(&broker);
        let _handle = match source.strip_prefix("postgres:") {
            Some(schema) => broker.relay("child", postgres_store(schema).await).spawn(),
            None => broker.relay("child", FileLog::new(source)).spawn(),
        };
        eprintln!("child relay running");
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}

/// 16 writers append 20,000 events to a [`MemoryStore`] while relays are started and killed
/// at random points; then the broker holds exactly the log. See [`killed_relay`].
pub async fn relay_killed_over_memory<B: Broker>(broker: B) {
    let store = MemoryStore::new();
    // A child process cannot read this process's memory: it relays a mirror of the log.
    let mirror = std::env::temp_dir().join(format!(
        "relay-testing-mirror-{}-{}.jsonl",
        std::process::id(),
        Rng::new().next_u64()
    ));
    let mirroring = mirror_to_file(&store, &mirror);
    let source = Memory {
        store: store.clone(),
        mirror: mirror.clone(),
    };
    killed_relay(store, source, &broker, Duration::from_millis(2)).await;
    mirroring.abort();
    let _ = std::fs::remove_file(&mirror);
}

/// [`relay_killed_over_memory`] with the log in PostgreSQL (a fresh schema named
/// `{schema_prefix}_…`, dropped at the end).
pub async fn relay_killed_over_postgres<B: Broker>(broker: B, schema_prefix: &str) {
    let schema = unique_schema(schema_prefix);
    let store = postgres_store(&schema).await;
    let source = Postgres {
        schema: schema.clone(),
    };
    killed_relay(store.clone(), source, &broker, Duration::ZERO).await;
    drop_schema(&store, &schema).await;
}

/// Where a restarted relay reads the log: a store made afresh in its own runtime (as a new
/// process would), and the source a child process is told to read.
trait Source: Clone + Send + Sync + 'static {
    type Store: StreamStore + GlobalLog + Clone + 'static;
    fn open(&self) -> impl Future<Output = Self::Store> + Send;
    fn for_child(&self) -> String;
}

#[derive(Clone)]
struct Memory {
    store: MemoryStore,
    mirror: PathBuf,
}

impl Source for Memory {
    type Store = MemoryStore;
    async fn open(&self) -> MemoryStore {
        self.store.clone()
    }
    fn for_child(&self) -> String {
        self.mirror.display().to_string()
    }
}

#[derive(Clone)]
struct Postgres {
    schema: String,
}

impl Source for Postgres {
    type Store = es_postgres::PostgresStore;
    async fn open(&self) -> es_postgres::PostgresStore {
        postgres_store(&self.schema).await
    }
    fn for_child(&self) -> String {
        format!("postgres:{}", self.schema)
    }
}

/// 16 writers append 20,000 events to `store`; meanwhile the relay is started and killed 5
/// times at random points (aborted in-process runtimes and SIGKILLed child processes,
/// alternating); then a last relay catches up and the broker must hold exactly the log.
async fn killed_relay<S: Source, B: Broker>(
    store: S::Store,
    source: S,
    broker: &B,
    pause: Duration,
) {
    let mut rng = Rng::new();
    let writers = tokio::spawn({
        let store = store.clone();
        async move { write(&store, 16, 1_250, pause).await }
    });
    for restart in 0..5 {
        let run_for = Duration::from_millis(rng.between(150, 700));
        if restart % 2 == 1 {
            let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
                .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
                .env(CHILD_SOURCE, source.for_child())
                .env(CHILD_BROKER, broker.to_arg())
                .env("SEED", rng.next_u64().to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("start the child relay");
            tokio::time::sleep(run_for).await;
            child.kill().expect("kill -9 the child relay");
            let status = child.wait().expect("reap the child");
            assert!(!status.success(), "the child was killed, not finished");
        } else {
            let broker = broker.clone();
            let source = source.clone();
            let running = Killable::start(move || async move {
                broker.relay("in-process", source.open().await).spawn()
            });
            tokio::time::sleep(run_for).await;
            running.kill();
        }
        eprintln!(
            "restart {restart}: killed after {run_for:?}; broker at {}, store at {}",
            broker.last_published().await,
            store.head_position().await.expect("head")
        );
    }
    writers.await.expect("writers");

    // A last run catches up; the broker then holds exactly the committed events.
    let log = log_of(&store).await;
    assert_eq!(log.len(), 20_000);
    let head = store.head_position().await.expect("head");
    let handle = broker.relay("final", store.clone()).spawn();
    handle
        .wait_for(head, WAIT)
        .await
        .expect("the last relay catches up");
    handle.shutdown().await.expect("clean stop");
    broker.assert_holds(&log).await;
    broker.cleanup().await;
}

/// Runs a new relay over `store` until it has relayed the whole log.
pub async fn relay_all<B: Broker>(broker: &B, store: &MemoryStore) {
    let progress = broker
        .relay("relay", store.clone())
        .catch_up()
        .await
        .expect("relay catches up");
    assert_eq!(
        progress.position,
        store.head_position().await.expect("head")
    );
}

/// Two relays at once publish nothing twice; the broker then loses its data (a restart
/// without persistence, lost storage), and the relays publish the whole log again, once.
pub async fn two_relays_and_lost_data<B: Broker>(broker: &B) {
    let store = MemoryStore::new();
    let first = broker.relay("a", store.clone()).spawn();
    let second = broker.relay("b", store.clone()).spawn();
    write(&store, 8, 100, Duration::from_micros(200)).await;
    for (relay, name) in [(&first, "first"), (&second, "second")] {
        let head = store.head_position().await.expect("head");
        if let Err(error) = relay.wait_for(head, WAIT).await {
            panic!("the {name} relay does not catch up: {error}");
        }
    }
    broker.assert_holds(&log_of(&store).await).await;

    // The next batch finds the broker behind: the relays publish everything again, once.
    broker.lose_data().await;
    write(&store, 2, 10, Duration::ZERO).await;
    for (relay, name) in [(&first, "first"), (&second, "second")] {
        let head = store.head_position().await.expect("head");
        if let Err(error) = relay.wait_for(head, WAIT).await {
            panic!("the {name} relay does not go on after the loss: {error}");
        }
    }
    let log = log_of(&store).await;
    // Both relays may refill concurrently; the broker still ends up holding exactly the log.
    let deadline = tokio::time::Instant::now() + WAIT;
    while broker.held().await < log.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.assert_holds(&log).await;
    first.shutdown().await.expect("first relay stops cleanly");
    second.shutdown().await.expect("second relay stops cleanly");
    broker.cleanup().await;
}

/// The broker refuses the relay's connections at start (a clear error in its status, and
/// retries), then, while writers append, its connections are dropped and it is unreachable
/// for a while ([`Broker::faults`]): the relay reports each failure, catches up, and the
/// broker holds exactly the log.
pub async fn outage<B: Broker>(broker: &B) {
    let proxy = Proxy::closed(broker.address()).await;
    let store = MemoryStore::new();
    write(&store, 4, 100, Duration::ZERO).await;
    let proxied = broker.through(proxy.port);
    let handle = proxied.relay("relay", store.clone()).spawn();
    let mut status = handle.watch();
    let errors = collect_errors(handle.watch());

    // Refused at start: a clear error in the status, and retries.
    let refused = wait_for_status(&mut status, "the refused connection", |s| {
        s.state == ConsumerState::Retrying
            && s.last_error
                .as_deref()
                .is_some_and(|e| e.contains(B::REFUSED))
    })
    .await;
    let message = refused.last_error.expect("error");
    assert!(
        message.contains(&format!(
            "{} at {}",
            B::NAME,
            broker.url_through(proxy.port)
        )),
        "the error names the broker: {message}"
    );
    assert_eq!(refused.checkpoint, 0);

    // The broker comes up: the relay catches up.
    proxy.open().await;
    handle
        .wait_for(store.head_position().await.expect("head"), WAIT)
        .await
        .expect("caught up once the broker is reachable");

    // The faults, all while writers append; after each, events the relay must publish over
    // the broken connection.
    let writers = tokio::spawn({
        let store = store.clone();
        async move { write(&store, 8, 250, Duration::from_millis(1)).await }
    });
    let faults = broker.faults();
    let mut killed = 0;
    for fault in &faults {
        tokio::time::sleep(Duration::from_millis(150)).await;
        match *fault {
            Fault::Kill => killed += proxied.kill_relay_connections().await,
            Fault::Drop => proxy.drop_connections(),
            Fault::Outage(outage) => {
                proxy.close();
                proxy.drop_connections();
                write(&store, 1, 20, Duration::ZERO).await;
                tokio::time::sleep(outage).await;
                proxy.open().await;
            }
        }
        write(&store, 1, 20, Duration::ZERO).await;
    }
    if faults.iter().any(|f| matches!(f, Fault::Kill)) {
        assert!(killed > 0, "the server found the relay's connections");
    }
    writers.await.expect("writers");
    let head = store.head_position().await.expect("head");
    handle
        .wait_for(head, WAIT)
        .await
        .expect("caught up after the faults");
    handle.shutdown().await.expect("clean stop");

    let errors = errors.lock().expect("lock").clone();
    eprintln!("errors reported: {errors:#?}");
    assert!(
        errors.iter().any(|e| e.contains(B::REFUSED)),
        "refusals reported: {errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains(&format!("{} at", B::NAME)) && !e.contains(B::REFUSED)),
        "a dropped connection mid-run was reported: {errors:?}"
    );
    broker.assert_holds(&log_of(&store).await).await;
    broker.cleanup().await;
}

/// The position [`broker_side_consumer_crashes_and_resumes`] cannot handle until told to.
pub const POISON: u64 = 2_500;

/// A broker-side consumer crashes mid-way (its runtime dropped at whatever await point it
/// reached) and resumes from the checkpoint the broker keeps, skipping nothing; an event it
/// cannot handle is parked in the broker, then replayed. Returns the log's head (3,000), the
/// consumer's final checkpoint; leaves the broker's data for the caller's own checks and
/// cleanup.
pub async fn broker_side_consumer_crashes_and_resumes<B: Broker>(broker: &B) -> u64 {
    let store = MemoryStore::new();
    write(&store, 4, 750, Duration::ZERO).await;
    let head = store.head_position().await.expect("head");
    broker
        .relay("relay", store.clone())
        .catch_up()
        .await
        .expect("relayed");

    let broken = Arc::new(AtomicBool::new(true));
    let first_run = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder {
        seen: first_run.clone(),
        poison: POISON,
        broken: broken.clone(),
    };
    let start = |recorder: Recorder| {
        let broker = broker.clone();
        move || async move {
            let (log, delivery) = broker.consumer_source("balances");
            Consumer::new("balances", log, delivery, recorder)
                .batch_size(100)
                .retry(RetryPolicy {
                    attempts: 2,
                    initial_backoff: Duration::from_millis(10),
                    max_backoff: Duration::from_millis(10),
                })
                .spawn()
        }
    };

    // Crash mid-way.
    let running = Killable::start(start(recorder.clone()));
    let mut status = running.status.clone();
    wait_for_status(&mut status, "progress", |s| s.checkpoint >= 1_000).await;
    running.kill();
    let seen_before = first_run.lock().expect("lock").clone();
    assert!(seen_before.windows(2).all(|w| w[0] < w[1]), "in order");
    let checkpoint = broker
        .checkpoint("balances")
        .await
        .expect("the broker holds the consumer's checkpoint");
    let handled_to = *seen_before.last().expect("handled some");
    assert!(
        checkpoint >= 1_000 && checkpoint <= handled_to,
        "checkpoint {checkpoint}, handled up to {handled_to}"
    );

    // Resume: from the checkpoint, nothing skipped; the poison event is parked in the broker.
    let second_run = Arc::new(Mutex::new(Vec::new()));
    let handle = start(Recorder {
        seen: second_run.clone(),
        ..recorder
    })()
    .await;
    if let Err(error) = handle.wait_for(head, WAIT).await {
        panic!(
            "the consumer did not catch up ({error}): {:?}",
            handle.status()
        );
    }
    let seen_after = second_run.lock().expect("lock").clone();
    assert_eq!(
        seen_after.first(),
        Some(&(checkpoint + 1)),
        "resumed right after the checkpoint"
    );
    assert!(seen_after.windows(2).all(|w| w[0] < w[1]), "in order");
    let mut all: Vec<u64> = seen_before.iter().chain(&seen_after).copied().collect();
    all.sort_unstable();
    all.dedup();
    let expected: Vec<u64> = (1..=head).filter(|p| *p != POISON).collect();
    assert_eq!(all, expected, "every event handled but the parked one");

    let parked = handle.parked().await.expect("parked");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].position, POISON);
    assert!(parked[0].error.contains("cannot take this event"));
    let (_, in_broker) = broker.consumer_source("balances");
    assert_eq!(
        in_broker
            .parked("balances")
            .await
            .expect("parked in the broker")
            .len(),
        1
    );
    broken.store(false, Ordering::SeqCst);
    assert!(handle.replay_parked(POISON).await.expect("replayed"));
    assert!(
        in_broker
            .parked("balances")
            .await
            .expect("parked in the broker")
            .is_empty()
    );
    assert!(handle.parked().await.expect("parked").is_empty());
    assert!(second_run.lock().expect("lock").contains(&POISON));
    handle.shutdown().await.expect("clean stop");
    assert_eq!(
        broker.checkpoint("balances").await,
        Some(head),
        "the broker keeps the final checkpoint"
    );
    head
}

/// Records every position it handles; fails on `poison` while `broken` is set.
#[derive(Clone)]
struct Recorder {
    seen: Arc<Mutex<Vec<u64>>>,
    poison: u64,
    broken: Arc<AtomicBool>,
}

impl EventHandler for Recorder {
    type Event = AnyEvent;

    async fn handle(&mut self, _: &mut (), event: &Envelope<AnyEvent>) -> Result<(), BoxError> {
        if event.position() == self.poison && self.broken.load(Ordering::SeqCst) {
            return Err("the handler cannot take this event yet".into());
        }
        self.seen.lock().expect("lock").push(event.position());
        tokio::time::sleep(Duration::from_micros(300)).await;
        Ok(())
    }
}

/// A consumer running on a runtime of its own, so that "killing" it drops every task of it
/// at whatever await point it has reached, as a crash would (no graceful shutdown).
struct Killable {
    kill: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    status: watch::Receiver<Status>,
}

impl Killable {
    fn start<F>(make: impl FnOnce() -> F + Send + 'static) -> Self
    where
        F: Future<Output = ConsumerHandle>,
    {
        let (kill, killed) = std::sync::mpsc::channel::<()>();
        let (status_tx, status_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let handle = runtime.block_on(make());
            status_tx.send(handle.watch()).expect("send the status");
            let _ = killed.recv();
            runtime.shutdown_background();
            std::mem::forget(handle);
        });
        let status = status_rx.recv().expect("the consumer started");
        Self {
            kill,
            thread,
            status,
        }
    }

    fn kill(self) {
        let _ = self.kill.send(());
        self.thread.join().expect("runtime thread");
    }
}

/// Collects every distinct `last_error` a consumer reports.
fn collect_errors(mut status: watch::Receiver<Status>) -> Arc<Mutex<Vec<String>>> {
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = errors.clone();
    tokio::spawn(async move {
        loop {
            if let Some(error) = status.borrow_and_update().last_error.clone() {
                let mut seen = seen.lock().expect("lock");
                if seen.last() != Some(&error) {
                    seen.push(error);
                }
            }
            if status.changed().await.is_err() {
                return;
            }
        }
    });
    errors
}

/// Waits until the consumer's status passes `check`, failing after [`WAIT`] with `what`.
async fn wait_for_status(
    status: &mut watch::Receiver<Status>,
    what: &str,
    check: impl FnMut(&Status) -> bool,
) -> Status {
    let reached = match tokio::time::timeout(WAIT, status.wait_for(check)).await {
        Ok(Ok(status)) => Some(status.clone()),
        _ => None,
    };
    reached.unwrap_or_else(|| panic!("the consumer never reported {what}: {:?}", *status.borrow()))
}
