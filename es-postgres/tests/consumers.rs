//! es-core's consumer runtime on PostgreSQL with `ExactlyOnce` delivery (the read model and
//! the checkpoint in one transaction) and leases: a consumer that dies between handling and
//! checkpoint, two runners without a lease, a parked event, a lease taken over after
//! `pg_terminate_backend` on its holder, `wait_for`, and 4 partitions across 2 processes.
//!
//! Run with `--nocapture` to see the takeover time.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use es_core::testing::conformance::{event, events};
use es_core::{
    AnyEvent, BoxError, CheckpointStore, Consumer, ConsumerHandle, ConsumerState, Envelope,
    EventHandler, ExpectedVersion, GlobalLog, Partition, PoisonPolicy, RetryPolicy, StreamId,
    StreamStore,
};
use es_postgres::{ExactlyOnce, PgTx, PostgresStore, StoreOptions};
use sqlx::AssertSqlSafe;
use tokio::sync::Notify;

const PATIENCE: Duration = Duration::from_secs(60);

/// A read model in the store's database: per stream, how many events and the last version
/// (refusing anything but the next version: an event applied twice or out of order fails),
/// and every applied event id (a primary key: applied twice fails).
struct Projector {
    schema: String,
    table: &'static str,
    /// Hangs forever at this position (once), after telling the test.
    hang_at: Option<(u64, Arc<Notify>)>,
    /// Refuses events named "Poison" while set.
    refuse_poison: Arc<AtomicBool>,
}

impl Projector {
    fn new(store: &PostgresStore, table: &'static str) -> Self {
        Self {
            schema: store.schema().to_owned(),
            table,
            hang_at: None,
            refuse_poison: Arc::default(),
        }
    }

    /// Creates the read model's tables.
    async fn install(store: &PostgresStore, table: &str) {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE \"{s}\".{table} (aggregate_id text PRIMARY KEY, events bigint NOT NULL, \
               last_version bigint NOT NULL); \
             CREATE TABLE \"{s}\".{table}_applied (event_id uuid PRIMARY KEY);",
            s = store.schema()
        )))
        .execute(store.pool())
        .await
        .expect("read model tables");
    }
}

impl EventHandler<PgTx> for Projector {
    type Event = AnyEvent;

    async fn handle(&mut self, tx: &mut PgTx, e: &Envelope<AnyEvent>) -> Result<(), BoxError> {
        if let Some((position, reached)) = &self.hang_at
            && e.position() == *position
        {
            reached.notify_one();
            std::future::pending::<()>().await;
        }
        if e.record.event_name == "Poison" && self.refuse_poison.load(Ordering::SeqCst) {
            return Err(format!("cannot handle the poison at {}", e.position()).into());
        }
        let version = i64::try_from(e.record.version)?;
        let moved = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO \"{s}\".{t} AS r VALUES ($1, 1, $2) \
             ON CONFLICT (aggregate_id) DO UPDATE \
               SET events = r.events + 1, last_version = excluded.last_version \
               WHERE r.last_version = excluded.last_version - 1",
            s = self.schema,
            t = self.table
        )))
        .bind(&e.record.stream.aggregate_id)
        .bind(version)
        .execute(tx.conn())
        .await?;
        if moved.rows_affected() != 1 {
            return Err(format!("{} version {} out of order", e.record.stream, version).into());
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO \"{s}\".{t}_applied VALUES ($1)",
            s = self.schema,
            t = self.table
        )))
        .bind(e.record.event_id)
        .execute(tx.conn())
        .await?;
        Ok(())
    }
}

/// The read model's rows, sorted.
async fn rows(store: &PostgresStore, table: &str) -> Vec<(String, i64, i64)> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT aggregate_id, events, last_version FROM \"{}\".{table} ORDER BY aggregate_id",
        store.schema()
    )))
    .fetch_all(store.pool())
    .await
    .expect("read model")
}

async fn applied(store: &PostgresStore, table: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{}\".{table}_applied",
        store.schema()
    )))
    .fetch_one(store.pool())
    .await
    .expect("applied events")
}

/// Appends `per_stream` events to each of `streams` streams, round robin (so streams
/// interleave in the log); returns the last position.
async fn interleaved(store: &PostgresStore, streams: u64, per_stream: u64) -> u64 {
    let mut last = 0;
    for v in 0..per_stream {
        for s in 0..streams {
            let recorded = store
                .append(
                    &StreamId::new("Acc", format!("s{s}")),
                    ExpectedVersion::Exact(v),
                    vec![event("E", v)],
                )
                .await
                .expect("append");
            last = recorded[0].position;
        }
    }
    last
}

/// The consumer's task is aborted in the middle of a batch (its handler has written part of
/// the batch in the transaction): nothing of that batch is kept, and a new runner applies
/// every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_when_the_process_dies_between_handling_and_checkpoint() {
    let store = common::fresh_store().await;
    Projector::install(&store, "rm").await;
    let head = interleaved(&store, 5, 10).await;
    let reached = Arc::new(Notify::new());
    let mut dying = Projector::new(&store, "rm");
    dying.hang_at = Some((25, reached.clone()));
    let mut consumer =
        Consumer::new("rm", store.clone(), ExactlyOnce::new(store.clone()), dying).batch_size(10);
    let task = tokio::spawn(async move { consumer.catch_up().await.map(|p| p.done) });
    tokio::time::timeout(PATIENCE, reached.notified())
        .await
        .expect("the handler reaches position 25");
    // The process dies: its transaction, holding events 21 to 24 of the batch, never commits.
    task.abort();
    assert!(task.await.expect_err("aborted").is_cancelled());
    let checkpoint = store
        .load_checkpoint("rm")
        .await
        .expect("load")
        .unwrap_or(0);
    assert_eq!(checkpoint, 20, "the checkpoint of the last committed batch");
    // The aborted transaction's connection may still be closing: the next runner's begin
    // waits for its lock on the checkpoint row, so nothing needs a pause here.
    let mut restarted = Consumer::new(
        "rm",
        store.clone(),
        ExactlyOnce::new(store.clone()),
        Projector::new(&store, "rm"),
    )
    .batch_size(10)
    .retry(RetryPolicy::none())
    .on_poison(PoisonPolicy::Stop);
    let progress = restarted.catch_up().await.expect("the restarted consumer");
    assert_eq!(
        progress.done, 30,
        "it handles the rest, from the checkpoint"
    );
    assert_eq!(
        applied(&store, "rm").await,
        50,
        "every event applied exactly once"
    );
    assert_eq!(store.load_checkpoint("rm").await.expect("load"), Some(head));
    assert!(
        rows(&store, "rm")
            .await
            .iter()
            .all(|(_, events, last)| (*events, *last) == (10, 10))
    );
}

/// Two runners of one consumer without a lease: the checkpoint row's lock makes them take
/// turns, so no batch is applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_without_a_lease_never_apply_a_batch_twice() {
    let store = common::fresh_store_with(StoreOptions::new(), 12).await;
    Projector::install(&store, "rm").await;
    let head = interleaved(&store, 10, 20).await;
    let runner = |store: &PostgresStore| {
        Consumer::new(
            "twice",
            store.clone(),
            ExactlyOnce::new(store.clone()),
            Projector::new(store, "rm"),
        )
        .batch_size(7)
        .retry(RetryPolicy::none())
        .on_poison(PoisonPolicy::Stop)
    };
    let other = common::reopen(&store, StoreOptions::new(), 4);
    let (mut a, mut b) = (runner(&store), runner(&other));
    let (ra, rb) = tokio::join!(a.catch_up(), b.catch_up());
    let (ra, rb) = (ra.expect("runner a"), rb.expect("runner b"));
    assert_eq!(
        ra.done + rb.done,
        200,
        "each event handled by exactly one runner"
    );
    assert_eq!(applied(&store, "rm").await, 200);
    assert_eq!(
        store.load_checkpoint("twice").await.expect("load"),
        Some(head)
    );
}

/// A poison event is parked (in the batch's transaction) with its error, stream, version and
/// position; the consumer goes on; once the cause is fixed, replaying it applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parked_event_is_kept_and_the_consumer_goes_on() {
    let store = common::fresh_store().await;
    Projector::install(&store, "rm").await;
    let s = StreamId::new("Acc", "p");
    store
        .append(&s, ExpectedVersion::NoStream, events("E", 0, 3))
        .await
        .expect("before");
    let poison = store
        .append(
            &StreamId::new("Bad", "x"),
            ExpectedVersion::NoStream,
            vec![event("Poison", 0)],
        )
        .await
        .expect("poison");
    let after = store
        .append(&s, ExpectedVersion::Exact(3), events("E", 3, 3))
        .await
        .expect("after");
    let projector = Projector::new(&store, "rm");
    let refuse = projector.refuse_poison.clone();
    refuse.store(true, Ordering::SeqCst);
    let handle = Consumer::new(
        "parking",
        store.clone(),
        ExactlyOnce::new(store.clone()),
        projector,
    )
    .retry(RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(10),
    })
    .on_poison(PoisonPolicy::Park)
    .spawn();
    handle
        .wait_for(after[2].position, PATIENCE)
        .await
        .expect("the consumer goes past the poison");
    assert_eq!(applied(&store, "rm").await, 6, "every other event applied");
    let parked = handle.parked().await.expect("parked");
    assert_eq!(parked.len(), 1);
    let p = &parked[0];
    assert_eq!(
        (p.position, p.event_id, &p.stream, p.version, p.attempts),
        (
            poison[0].position,
            Some(poison[0].event_id),
            &poison[0].stream,
            1,
            3
        )
    );
    assert!(p.error.contains("cannot handle the poison"), "{}", p.error);
    assert_eq!(handle.status().parked, 1);
    assert_eq!(store.parked("parking").await.expect("stored"), parked);

    refuse.store(false, Ordering::SeqCst);
    assert!(
        handle
            .replay_parked(poison[0].position)
            .await
            .expect("replay")
    );
    assert!(handle.parked().await.expect("parked").is_empty());
    assert_eq!(applied(&store, "rm").await, 7);
    handle.shutdown().await.expect("shutdown");
}

/// `wait_for` returns once the position is applied and committed: the read model holds the
/// event when it returns. The consumer runs in another process (its own pool) polling every
/// 30 s, so it is the notification that wakes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_for_returns_once_the_position_is_applied() {
    let writer = common::fresh_store().await;
    Projector::install(&writer, "rm").await;
    let reader = common::reopen(
        &writer,
        StoreOptions::new().poll_interval(Duration::from_secs(30)),
        4,
    );
    let handle = Consumer::new(
        "waiter",
        reader.clone(),
        ExactlyOnce::new(reader.clone()),
        Projector::new(&reader, "rm"),
    )
    .spawn();
    let mut watch = handle.watch();
    tokio::time::timeout(PATIENCE, watch.wait_for(|s| s.state == ConsumerState::Live))
        .await
        .expect("live in time")
        .expect("status");
    for v in 0..5u64 {
        let recorded = writer
            .append(
                &StreamId::new("Acc", "w"),
                ExpectedVersion::Exact(v),
                vec![event("E", v)],
            )
            .await
            .expect("append");
        let began = Instant::now();
        handle
            .wait_for(recorded[0].position, Duration::from_secs(20))
            .await
            .expect("woken by the notification, well before the 30 s poll");
        let took = began.elapsed();
        assert_eq!(
            rows(&writer, "rm").await,
            [(
                "w".to_owned(),
                i64::try_from(v + 1).expect("small"),
                i64::try_from(v + 1).expect("small")
            )],
            "the read model holds the event when wait_for returns"
        );
        println!("wait_for after append {v}: {took:?}");
    }
    handle.shutdown().await.expect("shutdown");
}

/// Waits until `handle` is in a state `wanted` accepts.
async fn until(handle: &ConsumerHandle, what: &str, wanted: impl Fn(&ConsumerState) -> bool) {
    let mut watch = handle.watch();
    tokio::time::timeout(PATIENCE, watch.wait_for(|s| wanted(&s.state)))
        .await
        .unwrap_or_else(|_| panic!("{what}: still {:?}", handle.status()))
        .expect("status");
}

fn active(state: &ConsumerState) -> bool {
    matches!(state, ConsumerState::Running | ConsumerState::Live)
}

/// Two runners, in two processes, of one consumer with a lease: one is active, the other
/// waits; after `pg_terminate_backend` on the holder's lease connection, the other takes over
/// within a bounded time (printed) and the read model stays exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_one_lease_and_a_takeover_after_the_holder_is_killed() {
    const LEASE_CHECK: Duration = Duration::from_millis(200);
    const LEASE_POLL: Duration = Duration::from_millis(100);
    let options = || StoreOptions::new().lease_check_interval(LEASE_CHECK);
    let first = common::fresh_store_with(options(), 6).await;
    let second = common::reopen(&first, options(), 6);
    Projector::install(&first, "rm").await;
    let spawn = |store: &PostgresStore| {
        Consumer::new(
            "leased",
            store.clone(),
            ExactlyOnce::new(store.clone()),
            Projector::new(store, "rm"),
        )
        .lease(store.clone(), LEASE_POLL)
        .retry(RetryPolicy::none())
        .on_poison(PoisonPolicy::Stop)
        .spawn()
    };
    let a = spawn(&first);
    until(&a, "a takes the lease", active).await;
    let b = spawn(&second);
    until(&b, "b waits", |s| *s == ConsumerState::WaitingForLease).await;
    let head = interleaved(&first, 4, 5).await;
    a.wait_for(head, PATIENCE).await.expect("a applies");
    assert_eq!(
        b.status().state,
        ConsumerState::WaitingForLease,
        "b stays standby"
    );

    let holder = first
        .lease_holder("leased")
        .await
        .expect("lease holder")
        .expect("a holds the lease");
    let killed_at = Instant::now();
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(holder)
        .fetch_one(first.pool())
        .await
        .expect("terminate the holder");
    assert!(killed);
    until(&b, "b takes over", active).await;
    let takeover = killed_at.elapsed();
    until(&a, "a lets go", |s| *s == ConsumerState::WaitingForLease).await;
    let noticed = killed_at.elapsed();
    let more = first
        .append(
            &StreamId::new("Acc", "s0"),
            ExpectedVersion::Exact(5),
            vec![event("E", 5)],
        )
        .await
        .expect("append after the takeover");
    b.wait_for(more[0].position, PATIENCE)
        .await
        .expect("b applies after taking over");
    let applied_after = killed_at.elapsed();
    println!(
        "lease takeover after pg_terminate_backend: standby active after {takeover:?}, old holder \
         stood down after {noticed:?}, next event applied by the new holder {applied_after:?} after \
         the kill (lease poll {LEASE_POLL:?}, lease check {LEASE_CHECK:?})"
    );
    assert!(
        takeover < LEASE_POLL * 10 + Duration::from_secs(5),
        "takeover within a bounded time: {takeover:?}"
    );
    assert_eq!(applied(&first, "rm").await, 21, "every event once");
    assert!(
        second
            .lease_holder("leased")
            .await
            .expect("holder")
            .is_some(),
        "the new holder holds the lease"
    );
    b.shutdown().await.expect("b");
    a.shutdown().await.expect("a");
}

/// A consumer split in 4 partitions, each runnable in 2 processes (two pools) under a lease,
/// builds exactly the read model that 1 partition builds, with every stream's order kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_partitions_across_two_processes_build_the_read_model_of_one() {
    let options = || StoreOptions::new().lease_check_interval(Duration::from_millis(200));
    let first = common::fresh_store_with(options(), 12).await;
    let second = common::reopen(&first, options(), 12);
    Projector::install(&first, "single").await;
    Projector::install(&first, "split").await;
    let head = interleaved(&first, 24, 8).await;

    let mut single = Consumer::new(
        "single",
        first.clone(),
        ExactlyOnce::new(first.clone()),
        Projector::new(&first, "single"),
    )
    .batch_size(50)
    .retry(RetryPolicy::none())
    .on_poison(PoisonPolicy::Stop);
    assert_eq!(single.catch_up().await.expect("one partition").done, 192);

    let runner = |store: &PostgresStore, partition: Partition| {
        Consumer::new(
            "split",
            store.clone(),
            ExactlyOnce::new(store.clone()),
            Projector::new(store, "split"),
        )
        .partition(partition)
        .lease(store.clone(), Duration::from_millis(100))
        .batch_size(20)
        .retry(RetryPolicy::none())
        .on_poison(PoisonPolicy::Stop)
        .spawn()
    };
    // Partitions 0 and 2 start in the first process, 1 and 3 in the second; then each gets a
    // standby in the other process.
    let mut handles = Vec::new();
    for partition in Partition::all(4) {
        let (primary, standby) = if partition.index() % 2 == 0 {
            (&first, &second)
        } else {
            (&second, &first)
        };
        let main = runner(primary, partition);
        until(&main, "the primary takes its partition's lease", active).await;
        handles.push((partition, main, runner(standby, partition)));
    }
    for (partition, main, standby) in &handles {
        until(standby, "the standby waits", |s| {
            *s == ConsumerState::WaitingForLease
        })
        .await;
        main.wait_for(head, PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("partition {}: {e}", partition.index()));
    }
    assert_eq!(rows(&first, "split").await, rows(&first, "single").await);
    assert_eq!(applied(&first, "split").await, 192);
    for partition in 0..4 {
        assert_eq!(
            first
                .load_checkpoint(&format!("split[{partition}/4]"))
                .await
                .expect("load"),
            Some(head),
            "partition {partition} has its own checkpoint"
        );
    }
    assert!(first.head_position().await.expect("head") >= head);
    for (_, main, standby) in handles {
        standby.shutdown().await.expect("standby");
        main.shutdown().await.expect("main");
    }
}
