//! The consumer runtime on the in-memory store: catch-up, filters, rebuild, retries, parked
//! events, leases, partitions, live following and read-your-writes waits.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use es_core::{
    AtLeastOnce, BoxError, CheckpointStore, Consumer, ConsumerState, Envelope, Error, EventHandler,
    LocalCheckpoints, MemoryStore, Metadata, Partition, PoisonPolicy, Repository, RetryPolicy,
    StreamId,
};

/// Balance per account, shared with the test through an `Arc`.
#[derive(Clone, Default)]
struct Balances {
    balances: Arc<Mutex<HashMap<String, i64>>>,
    handled: Arc<Mutex<u64>>,
    fail_on_amount: Arc<Mutex<Option<i64>>>,
}

impl Balances {
    fn snapshot(&self) -> HashMap<String, i64> {
        self.balances.lock().unwrap().clone()
    }
    fn handled(&self) -> u64 {
        *self.handled.lock().unwrap()
    }
    fn fail_on(&self, amount: Option<i64>) {
        *self.fail_on_amount.lock().unwrap() = amount;
    }
}

impl EventHandler for Balances {
    type Event = AccountEvent;

    async fn handle(&mut self, _: &mut (), e: &Envelope<AccountEvent>) -> Result<(), BoxError> {
        let delta = match &e.event {
            AccountEvent::Deposited(d) => d.amount,
            AccountEvent::Withdrawn(w) => -w.amount,
            AccountEvent::Opened(_) => 0,
        };
        if *self.fail_on_amount.lock().unwrap() == Some(delta) {
            return Err(format!("refusing amount {delta}").into());
        }
        *self.handled.lock().unwrap() += 1;
        *self
            .balances
            .lock()
            .unwrap()
            .entry(e.record.stream.aggregate_id.clone())
            .or_default() += delta;
        Ok(())
    }

    async fn reset(&mut self, _: &mut ()) -> Result<(), BoxError> {
        self.balances.lock().unwrap().clear();
        *self.handled.lock().unwrap() = 0;
        Ok(())
    }
}

async fn seed(store: &MemoryStore, id: &str, deposits: &[i64]) -> u64 {
    let accounts = Repository::<Account, _>::new(store.clone());
    let mut last = accounts
        .execute(id, Metadata::by_user("seed"), |a| a.open("x"))
        .await
        .expect("open")
        .events
        .last()
        .map_or(0, |e| e.position);
    for amount in deposits {
        last = accounts
            .execute(id, Metadata::by_user("seed"), |a| a.deposit(*amount))
            .await
            .expect("deposit")
            .events[0]
            .position;
    }
    last
}

/// Appends an event of another aggregate type, which the balances never see.
async fn noise(store: &MemoryStore) {
    use es_core::{ExpectedVersion, NewEvent, StreamStore};
    let event = NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_name: "Noise".into(),
        schema_version: 1,
        payload: serde_json::value::to_raw_value(&serde_json::json!({})).unwrap(),
        metadata: Metadata::new(),
    };
    store
        .append(
            &StreamId::new("Other", "n"),
            ExpectedVersion::Any,
            vec![event],
        )
        .await
        .expect("noise");
}

fn balances(
    store: &MemoryStore,
    view: Balances,
) -> Consumer<Balances, MemoryStore, AtLeastOnce<MemoryStore>> {
    Consumer::new(
        "balances",
        store.clone(),
        AtLeastOnce::new(store.clone()).with_interval(Duration::ZERO),
        view,
    )
    .retry(RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    })
}

#[tokio::test]
async fn catch_up_resumes_from_the_checkpoint_and_reads_only_its_aggregate() {
    let store = MemoryStore::new();
    seed(&store, "a", &[10, 20]).await;
    noise(&store).await;
    seed(&store, "b", &[5]).await;
    let view = Balances::default();
    let mut consumer = balances(&store, view.clone()).batch_size(2);
    let progress = consumer.catch_up().await.expect("catch up");
    assert_eq!(
        progress.done, 5,
        "the Other event is filtered out in the store"
    );
    assert_eq!(
        view.snapshot(),
        HashMap::from([("a".into(), 30), ("b".into(), 5)])
    );
    assert_eq!(store.load_checkpoint("balances").await.unwrap(), Some(6));

    seed(&store, "c", &[1]).await;
    let progress = consumer.catch_up().await.expect("catch up again");
    assert_eq!(progress.done, 2, "only the new events are read");
    let mut second = balances(&store, Balances::default());
    assert_eq!(
        second.catch_up().await.expect("third").done,
        0,
        "a new runner starts at the checkpoint"
    );
}

#[tokio::test]
async fn rebuild_replays_everything_and_reports_progress() {
    let store = MemoryStore::new();
    for i in 0..10 {
        seed(&store, &format!("acc-{i}"), &[i, 100]).await;
    }
    let view = Balances::default();
    let mut consumer = balances(&store, view.clone()).batch_size(7);
    consumer.catch_up().await.expect("catch up");
    view.balances.lock().unwrap().insert("corrupted".into(), 1);
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
    assert!(
        !view.snapshot().contains_key("corrupted"),
        "reset before replay"
    );
    assert_eq!(view.snapshot().values().sum::<i64>(), 45 + 1000);
    assert_eq!(view.handled(), 30);
}

#[tokio::test]
async fn a_failing_event_is_retried_then_parked_and_the_consumer_goes_on() {
    let store = MemoryStore::new();
    seed(&store, "a", &[1, 66, 3]).await; // positions 1..=4, the failing deposit at 3
    let view = Balances::default();
    view.fail_on(Some(66));
    let mut consumer = balances(&store, view.clone()).batch_size(100);
    let progress = consumer.catch_up().await.expect("parks, does not fail");
    assert_eq!(progress.position, 4);
    assert_eq!(
        view.snapshot(),
        HashMap::from([("a".into(), 4)]),
        "everything but the parked event"
    );
    let parked = consumer.parked().await.expect("parked");
    assert_eq!(parked.len(), 1);
    let p = &parked[0];
    assert_eq!((p.position, p.version, p.attempts), (3, 3, 3));
    assert_eq!(p.stream, StreamId::new("Account", "a"));
    assert!(p.error.contains("refusing amount 66"), "{}", p.error);
    assert_eq!(consumer.status().parked, 1);

    // Once the cause is fixed, the parked event is handled and leaves the list.
    view.fail_on(None);
    assert!(consumer.replay_parked(3).await.expect("replay"));
    assert_eq!(view.snapshot(), HashMap::from([("a".into(), 70)]));
    assert!(consumer.parked().await.expect("parked").is_empty());
    assert!(!consumer.replay_parked(3).await.expect("nothing left"));
}

#[tokio::test]
async fn under_the_stop_policy_a_failure_names_the_position_and_keeps_what_came_before() {
    let store = MemoryStore::new();
    seed(&store, "a", &[1, 2, 66, 3]).await; // positions 1..=5, the failing deposit at 4
    let view = Balances::default();
    view.fail_on(Some(66));
    let mut consumer = balances(&store, view.clone())
        .batch_size(100)
        .on_poison(PoisonPolicy::Stop);
    match consumer.catch_up().await {
        Err(Error::Handler {
            consumer, position, ..
        }) => {
            assert_eq!((consumer.as_str(), position), ("balances", 4))
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    assert_eq!(
        store.load_checkpoint("balances").await.unwrap(),
        Some(3),
        "checkpointed up to the failing event, mid-batch"
    );
    assert_eq!(view.snapshot(), HashMap::from([("a".into(), 3)]));
    view.fail_on(None);
    let resumed = consumer.catch_up().await.expect("resume after the fix");
    assert_eq!(resumed.done, 2, "resumes at the failing event");
    assert_eq!(view.snapshot(), HashMap::from([("a".into(), 72)]));
}

#[tokio::test]
async fn a_spawned_consumer_follows_live_and_wait_for_returns_once_applied() {
    let store = MemoryStore::new();
    let view = Balances::default();
    let handle = balances(&store, view.clone()).spawn();
    let position = seed(&store, "a", &[5, 6]).await;
    handle
        .wait_for(position, Duration::from_secs(10))
        .await
        .expect("applied");
    assert_eq!(
        view.snapshot(),
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
async fn a_consumer_resuming_from_a_stored_checkpoint_releases_waiters_at_once() {
    let store = MemoryStore::new();
    let position = seed(&store, "a", &[5]).await;
    store.save_checkpoint("balances", position).await.unwrap();
    let handle = balances(&store, Balances::default()).spawn();
    handle
        .wait_for(position, Duration::from_secs(10))
        .await
        .expect("nothing to handle: the stored checkpoint is reached");
    assert_eq!(handle.status().checkpoint, position);
    handle.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_stopped_consumer_fails_waiters_instead_of_hanging() {
    let store = MemoryStore::new();
    let position = seed(&store, "a", &[66]).await;
    let view = Balances::default();
    view.fail_on(Some(66));
    let handle = balances(&store, view).on_poison(PoisonPolicy::Stop).spawn();
    let waited = handle.wait_for(position, Duration::from_secs(10)).await;
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
    let store = MemoryStore::new();
    let (first_view, second_view) = (Balances::default(), Balances::default());
    let lease_poll = Duration::from_millis(10);
    let first = balances(&store, first_view.clone())
        .lease(store.clone(), lease_poll)
        .spawn();
    let position = seed(&store, "a", &[1]).await;
    first
        .wait_for(position, Duration::from_secs(10))
        .await
        .expect("first applies");
    let second = balances(&store, second_view.clone())
        .lease(store.clone(), lease_poll)
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
        .wait_for(position, Duration::from_secs(10))
        .await
        .expect("second took over");
    assert_eq!(
        second_view.snapshot(),
        HashMap::from([("b".into(), 2)]),
        "the second resumed from the shared checkpoint"
    );
}

#[tokio::test]
async fn four_partitions_build_exactly_what_one_consumer_builds() {
    let store = MemoryStore::new();
    for i in 0..40 {
        seed(&store, &format!("acc-{i}"), &[i, 2 * i]).await;
    }
    let whole = Balances::default();
    let mut single = Consumer::new(
        "whole",
        store.clone(),
        AtLeastOnce::new(LocalCheckpoints::new()),
        whole.clone(),
    );
    single.catch_up().await.expect("single");
    let parts = Balances::default();
    let mut handles = Vec::new();
    for partition in Partition::all(4) {
        let consumer = Consumer::new(
            "split",
            store.clone(),
            AtLeastOnce::new(store.clone()),
            parts.clone(),
        )
        .partition(partition);
        assert_eq!(consumer.name(), format!("split[{}/4]", partition.index()));
        handles.push(consumer.spawn());
    }
    let head = seed(&store, "late", &[7]).await;
    for handle in &handles {
        handle
            .wait_for(head, Duration::from_secs(10))
            .await
            .expect("partition caught up");
    }
    single.catch_up().await.expect("single again");
    assert_eq!(parts.snapshot(), whole.snapshot());
    assert_eq!(parts.handled(), whole.handled());
}

/// Refuses deposits of 13 permanently: retrying cannot help.
#[derive(Clone, Default)]
struct Superstitious {
    tries: Arc<Mutex<u32>>,
}

impl EventHandler for Superstitious {
    type Event = AccountEvent;

    async fn handle(&mut self, _: &mut (), e: &Envelope<AccountEvent>) -> Result<(), BoxError> {
        if let AccountEvent::Deposited(d) = &e.event
            && d.amount == 13
        {
            *self.tries.lock().unwrap() += 1;
            return Err(es_core::permanent("13 is refused, whatever happens"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_permanent_failure_is_parked_without_retries() {
    let store = MemoryStore::new();
    seed(&store, "a", &[13, 1]).await;
    let handler = Superstitious::default();
    let mut consumer = Consumer::new(
        "superstitious",
        store.clone(),
        AtLeastOnce::new(store.clone()),
        handler.clone(),
    )
    .retry(RetryPolicy {
        attempts: 5,
        initial_backoff: Duration::from_secs(30),
        max_backoff: Duration::from_secs(30),
    });
    let progress = consumer.catch_up().await.expect("parks at once");
    assert_eq!(progress.position, 3);
    assert_eq!(
        *handler.tries.lock().unwrap(),
        1,
        "tried once, never retried"
    );
    let parked = consumer.parked().await.expect("parked");
    assert_eq!(
        (parked.len(), parked[0].position, parked[0].attempts),
        (1, 2, 1)
    );
}
