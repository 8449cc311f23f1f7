//! Faults against the local NATS: the relay killed at random points (aborted tasks and
//! kill -9 of a child process) while 16 writers append, the broker refusing and dropping
//! connections, and a broker-side consumer crashing and resuming from its checkpoint.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::{
    AnyEvent, BoxError, ConsumerHandle, ConsumerState, Delivery, Envelope, EventHandler, GlobalLog,
    MemoryStore, RetryPolicy, Status,
};
use es_nats::{
    DurableSettings, JetStreamRelay, JetStreamRelayConfig, JetStreamSource, NatsOptions,
    StreamSettings,
};
use support::*;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(60);

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
        F: std::future::Future<Output = ConsumerHandle>,
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

fn relay_config(stream: &StreamSettings) -> JetStreamRelayConfig {
    JetStreamRelayConfig {
        batch_size: 200,
        max_in_flight: 64,
        ..JetStreamRelayConfig::new(stream.clone())
    }
}

/// Not a test on its own: the child process of
/// `relay_killed_at_random_points_publishes_each_committed_event_once`, which relays the
/// mirrored log until it is killed with SIGKILL.
#[test]
fn child_relay_process() {
    let Ok(name) = std::env::var("ES_NATS_CHILD_STREAM") else {
        return;
    };
    let source = std::env::var("ES_NATS_CHILD_SOURCE").expect("the child's source");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let stream = StreamSettings::new(name.clone(), name.to_lowercase());
        let relay = JetStreamRelay::new(nats_url(), relay_config(&stream));
        let _handle = match source.strip_prefix("postgres:") {
            Some(schema) => relay
                .consumer("child", postgres_store(schema).await)
                .spawn(),
            None => relay.consumer("child", FileLog::new(source)).spawn(),
        };
        eprintln!("child relay running");
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}

/// Where a restarted relay reads the log: a store made afresh in its own runtime (as a new
/// process would), and the source a child process is told to read.
trait Source: Clone + Send + Sync + 'static {
    type Store: es_core::StreamStore + GlobalLog + Clone + 'static;
    fn open(&self) -> impl std::future::Future<Output = Self::Store> + Send;
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
/// alternating); then a last relay catches up and the stream must hold exactly the log.
async fn killed_relay<S: Source>(
    store: S::Store,
    source: S,
    settings: &StreamSettings,
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
                .args([
                    "--exact",
                    "child_relay_process",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("ES_NATS_CHILD_SOURCE", source.for_child())
                .env("ES_NATS_CHILD_STREAM", &settings.name)
                .env("SEED", rng.next().to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("start the child relay");
            tokio::time::sleep(run_for).await;
            child.kill().expect("kill -9 the child relay");
            let status = child.wait().expect("reap the child");
            assert!(!status.success(), "the child was killed, not finished");
        } else {
            let relay = JetStreamRelay::new(nats_url(), relay_config(settings));
            let source = source.clone();
            let running = Killable::start(move || async move {
                relay.consumer("in-process", source.open().await).spawn()
            });
            tokio::time::sleep(run_for).await;
            running.kill();
        }
        let published = JetStreamRelay::new(nats_url(), relay_config(settings))
            .last_published()
            .await
            .expect("read the broker");
        eprintln!(
            "restart {restart}: killed after {run_for:?}; broker at {published}, store at {}",
            store.head_position().await.expect("head")
        );
    }
    writers.await.expect("writers");

    // A last run catches up; the broker then holds exactly the committed events.
    let log = log_of(&store).await;
    assert_eq!(log.len(), 20_000);
    let head = store.head_position().await.expect("head");
    let relay = JetStreamRelay::new(nats_url(), relay_config(settings));
    let handle = relay.consumer("final", store.clone()).spawn();
    handle
        .wait_for(head, WAIT)
        .await
        .expect("the last relay catches up");
    handle.shutdown().await.expect("clean stop");
    assert_stream_holds(settings, &log).await;
    cleanup(settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_at_random_points_publishes_each_committed_event_once() {
    let _ = admin().await;
    let store = MemoryStore::new();
    // A child process cannot read this process's memory: it relays a mirror of the log.
    let mirror = std::env::temp_dir().join(format!(
        "es-nats-mirror-{}-{}.jsonl",
        std::process::id(),
        Rng::new().next()
    ));
    let mirroring = mirror_to_file(&store, &mirror);
    let source = Memory {
        store: store.clone(),
        mirror: mirror.clone(),
    };
    killed_relay(
        store,
        source,
        &unique_stream("killed"),
        Duration::from_millis(2),
    )
    .await;
    mirroring.abort();
    let _ = std::fs::remove_file(&mirror);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_of_postgresql_killed_at_random_points_publishes_each_committed_event_once() {
    let _ = admin().await;
    let schema = format!("es_nats_test_{}", uuid::Uuid::now_v7().simple());
    let store = postgres_store(&schema).await;
    let source = Postgres {
        schema: schema.clone(),
    };
    killed_relay(
        store.clone(),
        source,
        &unique_stream("killed_pg"),
        Duration::ZERO,
    )
    .await;
    drop_schema(&store, &schema).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_refusing_then_dropping_connections_loses_nothing() {
    let _ = admin().await;
    let settings = unique_stream("refused");
    let proxy = Proxy::closed("127.0.0.1:4222".parse().expect("addr")).await;
    let store = MemoryStore::new();
    write(&store, 4, 100, Duration::ZERO).await;

    let mut options = NatsOptions::new(format!("nats://127.0.0.1:{}", proxy.port));
    options.request_timeout = Duration::from_secs(2);
    let relay = JetStreamRelay::new(options, relay_config(&settings));
    let handle = relay.consumer("relay", store.clone()).spawn();
    let mut status = handle.watch();
    let errors = collect_errors(handle.watch());

    // Refused at start: a clear error in the status, and retries.
    let refused = wait_for_status(&mut status, "the refused connection", |s| {
        s.state == ConsumerState::Retrying
            && s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("cannot connect to NATS"))
    })
    .await;
    let message = refused.last_error.expect("error");
    assert!(
        message.contains(&format!("NATS at nats://127.0.0.1:{}", proxy.port)),
        "the error names the broker: {message}"
    );
    assert_eq!(refused.checkpoint, 0);

    // The broker comes up: the relay catches up.
    proxy.open().await;
    handle
        .wait_for(store.head_position().await.expect("head"), WAIT)
        .await
        .expect("caught up once the broker is reachable");

    // Connections dropped mid-run, and the broker unreachable for a while, all while
    // writers append.
    let writers = tokio::spawn({
        let store = store.clone();
        async move { write(&store, 8, 250, Duration::from_millis(1)).await }
    });
    // After each fault, events the relay must publish over the broken connection; the last
    // outage lasts longer than the request timeout (2 s), so publishes time out.
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if round % 2 == 0 {
            proxy.drop_connections();
        } else {
            proxy.close();
            proxy.drop_connections();
            write(&store, 1, 20, Duration::ZERO).await;
            let outage = if round == 5 { 3_000 } else { 400 };
            tokio::time::sleep(Duration::from_millis(outage)).await;
            proxy.open().await;
        }
        write(&store, 1, 20, Duration::ZERO).await;
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
        errors.iter().any(|e| e.contains("cannot connect to NATS")),
        "refusals reported: {errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("NATS at") && !e.contains("cannot connect")),
        "a dropped connection mid-run was reported: {errors:?}"
    );
    assert_stream_holds(&settings, &log_of(&store).await).await;
    cleanup(&settings).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_side_consumer_crashes_and_resumes_from_its_checkpoint() {
    let _ = admin().await;
    let settings = unique_stream("consumer");
    let store = MemoryStore::new();
    write(&store, 4, 750, Duration::ZERO).await;
    let head = store.head_position().await.expect("head");
    JetStreamRelay::new(nats_url(), relay_config(&settings))
        .consumer("relay", store.clone())
        .catch_up()
        .await
        .expect("relayed");

    let broken = Arc::new(AtomicBool::new(true));
    let first_run = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder {
        seen: first_run.clone(),
        poison: 2_500,
        broken: broken.clone(),
    };
    let start = |recorder: Recorder, settings: StreamSettings| {
        move || async move {
            let source = JetStreamSource::new(nats_url(), settings);
            let (log, delivery) = source.durable_with(
                "balances",
                DurableSettings {
                    ack_wait: Duration::from_secs(2),
                    ..DurableSettings::default()
                },
            );
            es_core::Consumer::new("balances", log, delivery, recorder)
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
    let running = Killable::start(start(recorder.clone(), settings.clone()));
    let mut status = running.status.clone();
    wait_for_status(&mut status, "progress", |s| s.checkpoint >= 1_000).await;
    running.kill();
    let seen_before = first_run.lock().expect("lock").clone();
    let handled_to = *seen_before.last().expect("handled some");
    assert!(seen_before.windows(2).all(|w| w[0] < w[1]), "in order");
    // The durable consumer's ack floor is the checkpoint.
    let js = admin().await;
    let floor = js
        .get_stream(&settings.name)
        .await
        .expect("stream")
        .consumer_info("balances")
        .await
        .expect("the durable consumer exists")
        .ack_floor
        .stream_sequence;
    assert!(
        floor >= 1_000 && floor <= handled_to,
        "ack floor {floor}, handled up to {handled_to}"
    );

    // Resume: from the ack floor, nothing skipped; the poison event is parked in the broker.
    let second_run = Arc::new(Mutex::new(Vec::new()));
    let handle = start(
        Recorder {
            seen: second_run.clone(),
            ..recorder
        },
        settings.clone(),
    )()
    .await;
    if let Err(error) = handle.wait_for(head, WAIT).await {
        panic!(
            "the consumer did not catch up ({error}): {:?}",
            handle.status()
        );
    }
    let seen_after = second_run.lock().expect("lock").clone();
    // Positions and sequences coincide here (one relay, from an empty stream).
    assert_eq!(
        seen_after.first(),
        Some(&(floor + 1)),
        "resumed right after the ack floor"
    );
    assert!(seen_after.windows(2).all(|w| w[0] < w[1]), "in order");
    let mut all: Vec<u64> = seen_before.iter().chain(&seen_after).copied().collect();
    all.sort_unstable();
    all.dedup();
    let expected: Vec<u64> = (1..=head).filter(|p| *p != 2_500).collect();
    assert_eq!(all, expected, "every event handled but the parked one");

    let parked = handle.parked().await.expect("parked");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].position, 2_500);
    assert!(parked[0].error.contains("cannot take this event"));
    broken.store(false, Ordering::SeqCst);
    assert!(handle.replay_parked(2_500).await.expect("replayed"));
    assert!(handle.parked().await.expect("parked").is_empty());
    assert!(second_run.lock().expect("lock").contains(&2_500));
    handle.shutdown().await.expect("clean stop");
    let (_, delivery) = JetStreamSource::new(nats_url(), settings.clone()).durable("balances");
    assert_eq!(
        delivery.begin("balances").await.expect("attach").1,
        head,
        "the ack floor is the final checkpoint"
    );
    cleanup(&settings).await;
}
