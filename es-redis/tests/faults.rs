//! Faults against the local Redis: the relay killed at random points (aborted tasks and
//! kill -9 of a child process) while 16 writers append, the broker refusing and dropping
//! connections, and a broker-side consumer crashing and resuming from its checkpoint.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::{
    AnyEvent, BoxError, CheckpointStore, ConsumerHandle, ConsumerState, Envelope, EventHandler,
    GlobalLog, MemoryStore, RetryPolicy, Status,
};
use es_redis::{
    Keys, Layout, RedisCheckpoints, RedisLog, RedisOptions, RedisRelay, RedisRelayConfig,
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

fn relay_config(keys: &Keys) -> RedisRelayConfig {
    RedisRelayConfig {
        chunk_size: 25,
        batch_size: 200,
        ..RedisRelayConfig::new(keys.clone()).layout(Layout::Both)
    }
}

/// Not a test on its own: the child process of
/// `relay_killed_at_random_points_publishes_each_committed_event_once`, which relays the
/// mirrored log until it is killed with SIGKILL.
#[test]
fn child_relay_process() {
    let Ok(prefix) = std::env::var("ES_REDIS_CHILD_PREFIX") else {
        return;
    };
    let source = std::env::var("ES_REDIS_CHILD_SOURCE").expect("the child's source");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let relay = RedisRelay::new(redis_url(), relay_config(&Keys::new(prefix))).expect("relay");
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
/// alternating); then a last relay catches up and the broker must hold exactly the log.
async fn killed_relay<S: Source>(store: S::Store, source: S, prefix: &str, pause: Duration) {
    let mut rng = Rng::new();
    let keys = Keys::new(prefix);
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
                .env("ES_REDIS_CHILD_SOURCE", source.for_child())
                .env("ES_REDIS_CHILD_PREFIX", prefix)
                .env("SEED", rng.next().to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("start the child relay");
            tokio::time::sleep(run_for).await;
            child.kill().expect("kill -9 the child relay");
            let status = child.wait().expect("reap the child");
            assert!(!status.success(), "the child was killed, not finished");
        } else {
            let relay = RedisRelay::new(redis_url(), relay_config(&keys)).expect("relay");
            let source = source.clone();
            let running = Killable::start(move || async move {
                relay.consumer("in-process", source.open().await).spawn()
            });
            tokio::time::sleep(run_for).await;
            running.kill();
        }
        let published = RedisRelay::new(redis_url(), relay_config(&keys))
            .expect("relay")
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
    let relay = RedisRelay::new(redis_url(), relay_config(&keys)).expect("relay");
    let handle = relay.consumer("final", store.clone()).spawn();
    handle
        .wait_for(head, WAIT)
        .await
        .expect("the last relay catches up");
    handle.shutdown().await.expect("clean stop");
    assert_stream_holds(&keys.all(), &log).await;
    for aggregate_type in ["Account", "Transfer", "Odd type.with*chars>"] {
        let of_type: Vec<_> = log
            .iter()
            .filter(|e| e.stream.aggregate_type == aggregate_type)
            .cloned()
            .collect();
        assert_stream_holds(&keys.per_type(aggregate_type), &of_type).await;
    }
    cleanup(prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_at_random_points_publishes_each_committed_event_once() {
    let _ = admin().await;
    let store = MemoryStore::new();
    // A child process cannot read this process's memory: it relays a mirror of the log.
    let mirror = std::env::temp_dir().join(format!(
        "es-redis-mirror-{}-{}.jsonl",
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
        &unique_prefix("killed"),
        Duration::from_millis(2),
    )
    .await;
    mirroring.abort();
    let _ = std::fs::remove_file(&mirror);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_of_postgresql_killed_at_random_points_publishes_each_committed_event_once() {
    let _ = admin().await;
    let schema = format!("es_redis_test_{}", uuid::Uuid::now_v7().simple());
    let store = postgres_store(&schema).await;
    let source = Postgres {
        schema: schema.clone(),
    };
    killed_relay(
        store.clone(),
        source,
        &unique_prefix("killed-pg"),
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
    let prefix = unique_prefix("refused");
    let keys = Keys::new(&prefix);
    let client_name = format!("es-redis-test-{}-{}", std::process::id(), Rng::new().next());
    let proxy = Proxy::closed("127.0.0.1:6379".parse().expect("addr")).await;
    let store = MemoryStore::new();
    write(&store, 4, 100, Duration::ZERO).await;

    let options =
        RedisOptions::new(format!("redis://127.0.0.1:{}", proxy.port)).client_name(&client_name);
    let relay = RedisRelay::new(options, relay_config(&keys)).expect("relay");
    let handle = relay.consumer("relay", store.clone()).spawn();
    let mut status = handle.watch();
    let errors = collect_errors(handle.watch());

    // Refused at start: a clear error in the status, and retries.
    let refused = wait_for_status(&mut status, "the refused connection", |s| {
        s.state == ConsumerState::Retrying
            && s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("connection refused"))
    })
    .await;
    let message = refused.last_error.expect("error");
    assert!(
        message.contains(&format!("Redis at redis://127.0.0.1:{}", proxy.port)),
        "the error names the broker: {message}"
    );
    assert_eq!(refused.checkpoint, 0);

    // The broker comes up: the relay catches up.
    proxy.open().await;
    handle
        .wait_for(store.head_position().await.expect("head"), WAIT)
        .await
        .expect("caught up once the broker is reachable");

    // Connections dropped mid-run, by the server (CLIENT KILL) and by the network (the
    // proxy), and the broker unreachable for a while, all while writers append.
    let writers = tokio::spawn({
        let store = store.clone();
        async move { write(&store, 8, 250, Duration::from_millis(1)).await }
    });
    // After each fault, events the relay must publish over the broken connection.
    let mut killed = 0;
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        match round % 3 {
            0 => killed += kill_clients(&client_name).await,
            1 => proxy.drop_connections(),
            _ => {
                proxy.close();
                proxy.drop_connections();
                write(&store, 1, 20, Duration::ZERO).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                proxy.open().await;
            }
        }
        write(&store, 1, 20, Duration::ZERO).await;
    }
    assert!(killed > 0, "CLIENT KILL found the relay's named connection");
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
        errors.iter().any(|e| e.contains("connection refused")),
        "refusals reported: {errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Redis at") && !e.contains("connection refused")),
        "a dropped connection mid-run was reported: {errors:?}"
    );
    assert_stream_holds(&keys.all(), &log_of(&store).await).await;
    cleanup(&prefix).await;
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
    let prefix = unique_prefix("consumer");
    let keys = Keys::new(&prefix);
    let store = MemoryStore::new();
    write(&store, 4, 750, Duration::ZERO).await;
    let head = store.head_position().await.expect("head");
    let relay = RedisRelay::new(redis_url(), relay_config(&keys)).expect("relay");
    relay
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
    let start = |recorder: Recorder, keys: Keys| {
        move || async move {
            let log = RedisLog::new(redis_url(), &keys).expect("source");
            let delivery = RedisCheckpoints::new(redis_url(), &keys)
                .expect("checkpoints")
                .delivery()
                .with_interval(Duration::from_millis(20));
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
    let running = Killable::start(start(recorder.clone(), keys.clone()));
    let mut status = running.status.clone();
    wait_for_status(&mut status, "progress", |s| s.checkpoint >= 1_000).await;
    running.kill();
    let seen_before = first_run.lock().expect("lock").clone();
    let checkpoints = RedisCheckpoints::new(redis_url(), &keys).expect("checkpoints");
    let checkpoint = checkpoints
        .load_checkpoint("balances")
        .await
        .expect("read the group")
        .expect("the consumer group holds a checkpoint");
    let handled_to = *seen_before.last().expect("handled some");
    assert!(
        checkpoint >= 1_000 && checkpoint <= handled_to,
        "checkpoint {checkpoint}, handled up to {handled_to}"
    );
    assert!(seen_before.windows(2).all(|w| w[0] < w[1]), "in order");

    // Resume: from the checkpoint, nothing skipped; the poison event is parked in Redis.
    let second_run = Arc::new(Mutex::new(Vec::new()));
    let handle = start(
        Recorder {
            seen: second_run.clone(),
            ..recorder
        },
        keys.clone(),
    )()
    .await;
    handle
        .wait_for(head, WAIT)
        .await
        .expect("the consumer catches up");
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
    let expected: Vec<u64> = (1..=head).filter(|p| *p != 2_500).collect();
    assert_eq!(all, expected, "every event handled but the parked one");

    let parked = handle.parked().await.expect("parked");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].position, 2_500);
    assert!(parked[0].error.contains("cannot take this event"));
    assert_eq!(
        checkpoints
            .parked("balances")
            .await
            .expect("in Redis")
            .len(),
        1
    );
    broken.store(false, Ordering::SeqCst);
    assert!(handle.replay_parked(2_500).await.expect("replayed"));
    assert!(
        checkpoints
            .parked("balances")
            .await
            .expect("in Redis")
            .is_empty()
    );
    assert!(second_run.lock().expect("lock").contains(&2_500));
    handle.shutdown().await.expect("clean stop");
    assert_eq!(
        checkpoints.load_checkpoint("balances").await.expect("read"),
        Some(head),
        "the group's last-delivered id is the final checkpoint"
    );
    let source = RedisLog::new(redis_url(), &keys).expect("source");
    assert_eq!(source.head_position().await.expect("head"), head);
    cleanup(&prefix).await;
}
