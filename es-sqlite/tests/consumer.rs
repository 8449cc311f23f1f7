//! The consumer runtime over SQLite with the transactional delivery: the read model lives in
//! tables of the store's file and moves with the checkpoint in one transaction. The cases of
//! es-core's `tests/consumer.rs`, plus exactly-once under dropped futures and leases across
//! stores.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use es_core::{
    AnyEvent, BoxError, CheckpointStore, Consumer, ConsumerState, Delivery, Envelope, Error,
    EventHandler, ExpectedVersion, GlobalLog, LogEvent, NewEvent, ParkedEvent, Partition,
    PoisonPolicy, RetryPolicy, StreamId, StreamStore,
};
use es_core::{Leases, Metadata};
use es_sqlite::{SqliteStore, StoreOptions, Transactional, Tx};

const PATIENCE: Duration = Duration::from_secs(30);

fn consumer<D: Delivery<Tx = Tx>>(
    store: &SqliteStore,
    delivery: D,
    view: Balances,
) -> Consumer<Balances, SqliteStore, D> {
    Consumer::new("balances", store.clone(), delivery, view).retry(RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    })
}

fn balances(store: &SqliteStore, view: Balances) -> Consumer<Balances, SqliteStore, Transactional> {
    consumer(store, store.transactional(), view)
}

/// Every Account event's position up to `checkpoint`, as the log holds them.
async fn account_positions(store: &SqliteStore, up_to: u64) -> Vec<u64> {
    let page = store
        .read_log(0, usize::MAX, &AccountEvent::filter().before(up_to + 1))
        .await
        .expect("read_log");
    page.events.iter().map(|e| e.position).collect()
}

/// The read model holds each event up to the checkpoint exactly once, and nothing beyond.
async fn assert_exactly_once(store: &SqliteStore, view: &Balances, consumer: &str) {
    let checkpoint = store
        .load_checkpoint(consumer)
        .await
        .expect("checkpoint")
        .unwrap_or(0);
    assert_eq!(
        view.handled(store).await,
        account_positions(store, checkpoint).await,
        "each event up to checkpoint {checkpoint} handled exactly once"
    );
}

#[tokio::test]
async fn catch_up_resumes_from_the_checkpoint_and_reads_only_its_aggregate() {
    let store = temporary().await;
    let view = Balances::create(&store, "v").await;
    seed(&store, "a", &[10, 20]).await;
    noise(&store).await;
    seed(&store, "b", &[5]).await;
    let mut consumer = balances(&store, view.clone()).batch_size(2);
    let progress = consumer.catch_up().await.expect("catch up");
    assert_eq!(
        progress.done, 5,
        "the Other event is filtered out in the store"
    );
    assert_eq!(
        view.balances(&store).await,
        HashMap::from([("a".into(), 30), ("b".into(), 5)])
    );
    assert_eq!(store.load_checkpoint("balances").await.unwrap(), Some(6));

    seed(&store, "c", &[1]).await;
    let progress = consumer.catch_up().await.expect("catch up again");
    assert_eq!(progress.done, 2, "only the new events are read");
    let mut second = balances(&store, view.clone());
    assert_eq!(
        second.catch_up().await.expect("third").done,
        0,
        "a new runner starts at the checkpoint"
    );
    assert_exactly_once(&store, &view, "balances").await;
}

#[tokio::test]
async fn rebuild_replays_everything_and_reports_progress() {
    let store = temporary().await;
    let view = Balances::create(&store, "v").await;
    for i in 0..10 {
        seed(&store, &format!("acc-{i}"), &[i, 100]).await;
    }
    let mut consumer = balances(&store, view.clone()).batch_size(7);
    consumer.catch_up().await.expect("catch up");
    let mut tx = store.begin().await.expect("begin");
    sqlx::query("INSERT INTO v_balances VALUES ('corrupted', 1)")
        .execute(&mut *tx)
        .await
        .expect("a stray row");
    tx.commit().await.expect("commit");
    let mut reports = Vec::new();
    let progress = consumer
        .rebuild(|p| reports.push(p))
        .await
        .expect("rebuild");
    assert_eq!(
        (progress.done, progress.total, progress.position),
        (30, 30, 30)
    );
    assert_eq!(reports.len(), 5, "one report per batch of 7");
    let balances = view.balances(&store).await;
    assert!(!balances.contains_key("corrupted"), "reset before replay");
    assert_eq!(balances.values().sum::<i64>(), 45 + 1000);
    assert_exactly_once(&store, &view, "balances").await;
}

#[tokio::test]
async fn a_failing_event_is_retried_then_parked_and_the_consumer_goes_on() {
    let store = temporary().await;
    let view = Balances::create(&store, "v").await;
    seed(&store, "a", &[1, 66, 3]).await; // positions 1..=4, the failing deposit at 3
    view.fail_on(Some(66));
    let mut consumer = balances(&store, view.clone()).batch_size(100);
    let progress = consumer.catch_up().await.expect("parks, does not fail");
    assert_eq!(progress.position, 4);
    assert_eq!(
        view.balances(&store).await,
        HashMap::from([("a".into(), 4)]),
        "everything but the parked event"
    );
    assert_eq!(
        view.handled(&store).await,
        [1, 2, 4],
        "the failed batch left nothing twice"
    );
    let parked = consumer.parked().await.expect("parked");
    assert_eq!(parked.len(), 1);
    let p = &parked[0];
    assert_eq!((p.position, p.version, p.attempts), (3, 3, 3));
    assert_eq!(p.stream, StreamId::new("Account", "a"));
    assert!(p.error.contains("refusing amount 66"), "{}", p.error);
    assert_eq!(consumer.status().parked, 1);

    view.fail_on(None);
    assert!(consumer.replay_parked(3).await.expect("replay"));
    assert_eq!(
        view.balances(&store).await,
        HashMap::from([("a".into(), 70)])
    );
    assert!(consumer.parked().await.expect("parked").is_empty());
    assert!(!consumer.replay_parked(3).await.expect("nothing left"));
    assert_eq!(view.handled(&store).await, [1, 2, 3, 4]);
}

#[tokio::test]
async fn under_the_stop_policy_a_failure_names_the_position_and_keeps_what_came_before() {
    let store = temporary().await;
    let view = Balances::create(&store, "v").await;
    seed(&store, "a", &[1, 2, 66, 3]).await; // positions 1..=5, the failing deposit at 4
    view.fail_on(Some(66));
    let mut consumer = balances(&store, view.clone())
        .batch_size(100)
        .on_poison(PoisonPolicy::Stop);
    match consumer.catch_up().await {
        Err(Error::Handler {
            consumer, position, ..
        }) => assert_eq!((consumer.as_str(), position), ("balances", 4)),
        other => panic!("expected a handler error, got {other:?}"),
    }
    assert_eq!(
        store.load_checkpoint("balances").await.unwrap(),
        Some(3),
        "checkpointed up to the failing event, mid-batch"
    );
    assert_eq!(
        view.balances(&store).await,
        HashMap::from([("a".into(), 3)])
    );
    view.fail_on(None);
    let resumed = consumer.catch_up().await.expect("resume after the fix");
    assert_eq!(resumed.done, 2, "resumes at the failing event");
    assert_eq!(
        view.balances(&store).await,
        HashMap::from([("a".into(), 72)])
    );
    assert_exactly_once(&store, &view, "balances").await;
}

#[tokio::test]
async fn a_spawned_consumer_follows_live_and_wait_for_returns_once_applied() {
    let store = temporary().await;
    let view = Balances::create(&store, "v").await;
    let handle = balances(&store, view.clone()).spawn();
    let position = seed(&store, "a", &[5, 6]).await;
    handle.wait_for(position, PATIENCE).await.expect("applied");
    assert_eq!(
        view.balances(&store).await,
        HashMap::from([("a".into(), 11)]),
        "read-your-writes"
    );
    let status = handle.status();
    assert!(status.checkpoint >= position);
    assert_eq!(status.handled, 3);
    handle.shutdown().await.expect("clean shutdown");
    assert_eq!(
        store.load_checkpoint("balances").await.unwrap(),
        Some(position)
    );
}

#[tokio::test]
async fn a_follower_in_another_store_on_the_file_is_woken_by_the_change_watch() {
    let store = temporary().await;
    // A second store on the same file: its own connections and change watch, as another
    // process has. Its fallback poll is long, so only the data_version watch can wake it
    // in time.
    let other = SqliteStore::open_with(
        store.path(),
        StoreOptions::new()
            .wakeup_poll(Duration::from_secs(3600))
            .change_poll(Duration::from_millis(10)),
    )
    .await
    .expect("second store");
    let view = Balances::create(&store, "v").await;
    let handle = balances(&other, view.clone()).spawn();
    // Idle and waiting for a wake-up before anything is appended.
    let live = handle
        .watch()
        .wait_for(|s| s.state == ConsumerState::Live)
        .await
        .map(|s| s.state.clone());
    assert_eq!(live.ok(), Some(ConsumerState::Live));
    let position = seed(&store, "a", &[5]).await;
    handle
        .wait_for(position, PATIENCE)
        .await
        .expect("woken by the other store's commit");
    assert_eq!(
        view.balances(&store).await,
        HashMap::from([("a".into(), 5)])
    );
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_stopped_consumer_fails_waiters_instead_of_hanging() {
    let store = temporary().await;
    let view = Balances::create(&store, "v").await;
    let position = seed(&store, "a", &[66]).await;
    view.fail_on(Some(66));
    let handle = balances(&store, view).on_poison(PoisonPolicy::Stop).spawn();
    let waited = handle.wait_for(position, PATIENCE).await;
    assert!(
        matches!(waited, Err(Error::Invalid(ref m)) if m.contains("Stopped")),
        "{waited:?}"
    );
    assert_eq!(handle.status().state, ConsumerState::Stopped);
    assert!(matches!(
        handle.shutdown().await,
        Err(Error::Handler { position: 2, .. })
    ));
}

#[tokio::test]
async fn one_lease_one_active_runner_and_the_other_takes_over() {
    let store = temporary().await;
    let other = SqliteStore::open(store.path()).await.expect("second store");
    let (first_view, second_view) = (
        Balances::create(&store, "first").await,
        Balances::create(&store, "second").await,
    );
    let lease_poll = Duration::from_millis(10);
    let first = balances(&store, first_view.clone())
        .lease(store.clone(), lease_poll)
        .spawn();
    let position = seed(&store, "a", &[1]).await;
    first
        .wait_for(position, PATIENCE)
        .await
        .expect("first applies");
    let second = balances(&other, second_view.clone())
        .lease(other.clone(), lease_poll)
        .spawn();
    let waiting = second
        .watch()
        .wait_for(|s| s.state == ConsumerState::WaitingForLease)
        .await
        .map(|s| s.state.clone());
    assert_eq!(waiting.ok(), Some(ConsumerState::WaitingForLease));
    first
        .shutdown()
        .await
        .expect("first stops and releases its lease");
    let position = seed(&store, "b", &[2]).await;
    second
        .wait_for(position, PATIENCE)
        .await
        .expect("second took over");
    assert_eq!(
        second_view.balances(&store).await,
        HashMap::from([("b".into(), 2)]),
        "the second resumed from the shared checkpoint"
    );
    second.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn four_partitions_build_exactly_what_one_consumer_builds() {
    let store = temporary().await;
    for i in 0..40 {
        seed(&store, &format!("acc-{i}"), &[i, 2 * i]).await;
    }
    let whole = Balances::create(&store, "whole").await;
    let mut single = Consumer::new("whole", store.clone(), store.transactional(), whole.clone());
    single.catch_up().await.expect("single");
    let parts = Balances::create(&store, "parts").await;
    let mut handles = Vec::new();
    for partition in Partition::all(4) {
        let consumer = Consumer::new("split", store.clone(), store.transactional(), parts.clone())
            .partition(partition);
        assert_eq!(consumer.name(), format!("split[{}/4]", partition.index()));
        handles.push(consumer.spawn());
    }
    let head = seed(&store, "late", &[7]).await;
    for handle in &handles {
        handle
            .wait_for(head, PATIENCE)
            .await
            .expect("partition caught up");
    }
    single.catch_up().await.expect("single again");
    assert_eq!(parts.balances(&store).await, whole.balances(&store).await);
    assert_eq!(parts.handled(&store).await, whole.handled(&store).await);
    for handle in handles {
        handle.shutdown().await.expect("shutdown");
    }
}

/// A delivery whose first commit never finishes: the point "handled, not yet committed".
struct StallFirstCommit {
    inner: Transactional,
    stalled: std::sync::Arc<tokio::sync::Notify>,
    armed: std::sync::atomic::AtomicBool,
}

impl Delivery for StallFirstCommit {
    type Tx = Tx;
    const ATOMIC: bool = true;

    async fn begin(&self, consumer: &str) -> Result<(Tx, u64), Error> {
        self.inner.begin(consumer).await
    }
    async fn commit(
        &self,
        tx: Tx,
        consumer: &str,
        position: u64,
        flush: bool,
    ) -> Result<(), Error> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.stalled.notify_one();
            std::future::pending::<()>().await;
        }
        self.inner.commit(tx, consumer, position, flush).await
    }
    async fn rollback(&self, tx: Tx) -> Result<(), Error> {
        self.inner.rollback(tx).await
    }
    async fn park(&self, tx: &mut Tx, consumer: &str, parked: &ParkedEvent) -> Result<(), Error> {
        self.inner.park(tx, consumer, parked).await
    }
    async fn unpark(&self, tx: &mut Tx, consumer: &str, position: u64) -> Result<bool, Error> {
        self.inner.unpark(tx, consumer, position).await
    }
    async fn parked(&self, consumer: &str) -> Result<Vec<ParkedEvent>, Error> {
        self.inner.parked(consumer).await
    }
}

#[tokio::test]
async fn exactly_once_when_the_consumer_is_dropped_between_handling_and_commit() {
    let store = temporary().await;
    let view = Balances::create(&store, "v").await;
    seed(&store, "a", &[1, 2, 3]).await;
    let stalled = std::sync::Arc::new(tokio::sync::Notify::new());
    let stall = StallFirstCommit {
        inner: store.transactional(),
        stalled: stalled.clone(),
        armed: true.into(),
    };
    let mut first = consumer(&store, stall, view.clone());
    tokio::select! {
        result = first.catch_up() => panic!("the first commit stalls, yet the run ended: {result:?}"),
        () = tokio::time::sleep(PATIENCE) => panic!("the handler never reached the commit"),
        // The run is dropped here, its batch handled in its transaction, uncommitted.
        () = stalled.notified() => {}
    }
    drop(first);
    assert!(view.handled(&store).await.is_empty(), "nothing committed");
    assert_eq!(store.load_checkpoint("balances").await.unwrap(), None);
    let mut second = balances(&store, view.clone());
    assert_eq!(second.catch_up().await.expect("second run").done, 4);
    assert_exactly_once(&store, &view, "balances").await;
    assert_eq!(
        view.balances(&store).await,
        HashMap::from([("a".into(), 6)])
    );
}

/// Polls the inner future at most `polls` times, then drops it.
struct PollLimit<F> {
    inner: Option<Pin<Box<F>>>,
    polls: usize,
}

impl<F: Future> Future for PollLimit<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.polls == 0 {
            self.inner = None;
            return Poll::Ready(None);
        }
        self.polls -= 1;
        match self.inner.as_mut() {
            Some(inner) => inner.as_mut().poll(cx).map(Some),
            None => Poll::Ready(None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_whichever_await_point_a_run_is_dropped_at() {
    let store = temporary().await;
    let view = Balances::create(&store, "v").await;
    for i in 0..6 {
        seed(&store, &format!("acc-{i}"), &[i + 1, 10]).await;
    }
    let head = store.head_position().await.expect("head");
    let mut completed = false;
    let mut polls = 1;
    while !completed {
        let mut consumer = balances(&store, view.clone()).batch_size(4);
        let outcome = PollLimit {
            inner: Some(Box::pin(async move { consumer.catch_up().await })),
            polls,
        }
        .await;
        if let Some(result) = outcome {
            result.expect("a run that was not dropped succeeds");
            let checkpoint = store.load_checkpoint("balances").await.unwrap();
            completed = checkpoint == Some(head);
        }
        assert_exactly_once(&store, &view, "balances").await;
        polls += 1;
        assert!(polls < 10_000, "the runs never completed");
    }
    assert_eq!(view.handled(&store).await.len(), 18);
    assert!(polls > 3, "dropped at several await points");
}

#[tokio::test]
async fn a_handler_appends_in_its_transaction_exactly_once() {
    /// Books a receipt for every deposit, in the delivery's transaction.
    struct Receipts {
        store: SqliteStore,
    }
    impl EventHandler<Tx> for Receipts {
        type Event = AccountEvent;
        async fn handle(
            &mut self,
            tx: &mut Tx,
            e: &Envelope<AccountEvent>,
        ) -> Result<(), BoxError> {
            if let AccountEvent::Deposited(d) = &e.event {
                let receipt = NewEvent::from_event(
                    &Deposited { amount: d.amount },
                    Metadata::caused_by(&e.record),
                )?
                .with_id(uuid::Uuid::new_v5(
                    &uuid::Uuid::NAMESPACE_OID,
                    e.record.event_id.as_bytes(),
                ));
                self.store
                    .append_in(
                        tx,
                        &StreamId::new("Receipts", "all"),
                        ExpectedVersion::Any,
                        vec![receipt],
                    )
                    .await?;
            }
            Ok(())
        }
    }
    let store = temporary().await;
    seed(&store, "a", &[1, 2]).await;
    let mut wakeup = store.wakeup();
    let mut receipts = Consumer::new(
        "receipts",
        store.clone(),
        store.transactional(),
        Receipts {
            store: store.clone(),
        },
    );
    receipts.catch_up().await.expect("catch up");
    tokio::time::timeout(Duration::from_millis(500), wakeup.wait())
        .await
        .expect("the commit woke followers");
    let all = store
        .read_stream(
            &StreamId::new("Receipts", "all"),
            &es_core::StreamQuery::all(),
        )
        .await
        .expect("read");
    assert_eq!(all.len(), 2);
    // A rebuild hands the deposits over again: the receipts' ids derive from the deposits,
    // so the appends are idempotent retries and nothing is doubled.
    receipts.rebuild(|_| {}).await.expect("rebuild");
    let again = store
        .read_stream(
            &StreamId::new("Receipts", "all"),
            &es_core::StreamQuery::all(),
        )
        .await
        .expect("read");
    assert_eq!(again.len(), 2);
}

#[tokio::test]
async fn a_dropped_append_in_a_transaction_refuses_to_commit() {
    let store = temporary().await;
    let mut tx = store.begin().await.expect("begin");
    let batch = (0..2_000)
        .map(|n| NewEvent::from_event(&Deposited { amount: n }, Metadata::new()).expect("encode"))
        .collect();
    let stream = StreamId::new("Account", "big");
    let append = store.append_in(&mut tx, &stream, ExpectedVersion::Any, batch);
    // Poll it once or twice, then drop it midway.
    let _ = PollLimit {
        inner: Some(Box::pin(append)),
        polls: 2,
    }
    .await;
    match tx.commit().await {
        Err(Error::Invalid(message)) => assert!(message.contains("dropped"), "{message}"),
        Ok(()) => {
            // The append had completed within two polls: then it is whole.
            let stored = store.stream_version(&stream).await.expect("version");
            assert_eq!(stored, 2_000);
            return;
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        store.stream_version(&stream).await.expect("version"),
        0,
        "nothing of it committed"
    );
}

#[tokio::test]
async fn a_lease_is_exclusive_across_stores_and_lost_when_taken_over() {
    // A renewal that cannot be written within half the TTL gives the lease up; with a short
    // TTL, a busy CI disk's fsyncs alone can do that. Three seconds leave renewals 1.5 s.
    let ttl = Duration::from_secs(3);
    let store = SqliteStore::temporary_with(StoreOptions::new().lease_ttl(ttl))
        .await
        .expect("store");
    let other = SqliteStore::open_with(store.path(), StoreOptions::new().lease_ttl(ttl))
        .await
        .expect("second store");
    let mut lease = store
        .try_acquire("job")
        .await
        .expect("acquire")
        .expect("free");
    assert!(lease.is_held());
    assert!(
        other.try_acquire("job").await.expect("try").is_none(),
        "held elsewhere"
    );
    // Renewed past its TTL by the heartbeat.
    tokio::time::sleep(ttl * 5 / 2).await;
    assert!(lease.is_held());
    assert!(
        other.try_acquire("job").await.expect("try").is_none(),
        "still held"
    );
    // Someone takes the row over (as after an expiry the holder slept through): the next
    // heartbeat notices.
    let mut tx = other.begin().await.expect("begin");
    sqlx::query("UPDATE leases SET holder = zeroblob(16) WHERE name = 'job'")
        .execute(&mut *tx)
        .await
        .expect("take over");
    tx.commit().await.expect("commit");
    tokio::time::timeout(PATIENCE, lease.lost())
        .await
        .expect("lost");
    assert!(!lease.is_held());
}

#[tokio::test]
async fn a_released_lease_is_free_for_another_process_at_once() {
    // A TTL far longer than the test: only the release can free the lease in time.
    let ttl = Duration::from_secs(600);
    let store = SqliteStore::temporary_with(StoreOptions::new().lease_ttl(ttl))
        .await
        .expect("store");
    let other = SqliteStore::open_with(store.path(), StoreOptions::new().lease_ttl(ttl))
        .await
        .expect("second store");
    let lease = store
        .try_acquire("job")
        .await
        .expect("acquire")
        .expect("free");
    lease.release().await;
    assert!(
        other.try_acquire("job").await.expect("try").is_some(),
        "released before `release` returned"
    );
}

#[test]
fn a_dead_holders_lease_can_be_taken_after_it_expires() {
    let ttl = Duration::from_secs(1);
    let main = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = main
        .block_on(SqliteStore::temporary_with(
            StoreOptions::new().lease_ttl(ttl),
        ))
        .expect("store");
    // The "dead process": a runtime that takes the lease, then stops with its heartbeat.
    let dying = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let path = store.path().to_owned();
    let lease = dying.block_on(async {
        let holder = SqliteStore::open_with(&path, StoreOptions::new().lease_ttl(ttl))
            .await
            .expect("holder");
        holder
            .try_acquire("job")
            .await
            .expect("acquire")
            .expect("free")
    });
    dying.shutdown_background();
    main.block_on(async {
        assert!(
            store.try_acquire("job").await.expect("try").is_none(),
            "not expired yet"
        );
        let started = std::time::Instant::now();
        let taken = loop {
            if let Some(lease) = store.try_acquire("job").await.expect("try") {
                break lease;
            }
            assert!(started.elapsed() < PATIENCE, "never expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(taken.is_held());
    });
    drop(lease);
}

#[tokio::test]
async fn any_event_consumers_see_every_event_once_through_the_transactional_delivery() {
    struct Positions;
    impl EventHandler<Tx> for Positions {
        type Event = AnyEvent;
        async fn handle(&mut self, tx: &mut Tx, e: &Envelope<AnyEvent>) -> Result<(), BoxError> {
            sqlx::query("INSERT INTO seen (position) VALUES (?1)")
                .bind(e.position() as i64)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }
    }
    let store = temporary().await;
    let mut tx = store.begin().await.expect("begin");
    sqlx::query("CREATE TABLE seen (position INTEGER PRIMARY KEY)")
        .execute(&mut *tx)
        .await
        .expect("create");
    tx.commit().await.expect("commit");
    let handle = Consumer::new("all", store.clone(), store.transactional(), Positions).spawn();
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..25 {
                seed(&store, &format!("w{w}-{i}"), &[1]).await;
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let head = store.head_position().await.expect("head");
    assert_eq!(head, 200);
    handle.wait_for(head, PATIENCE).await.expect("caught up");
    let seen: Vec<i64> = sqlx::query_scalar("SELECT position FROM seen ORDER BY position")
        .fetch_all(store.reader())
        .await
        .expect("seen");
    assert_eq!(seen, (1..=200).collect::<Vec<_>>());
    handle.shutdown().await.expect("shutdown");
}
