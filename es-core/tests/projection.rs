//! Projections: catch-up from checkpoints, event filters, rebuild with progress, failures.

mod common;

use std::collections::HashMap;

use common::*;
use es_core::{
    BoxError, Error, EventStore, MemoryStore, Metadata, Projection, ProjectionRunner,
    RecordedEvent, Repository,
};

/// Balance per account, built from the global log.
#[derive(Default)]
struct Balances {
    balances: HashMap<String, i64>,
    handled: u64,
    fail_on_amount: Option<i64>,
}

impl Projection for Balances {
    fn name(&self) -> &str {
        "balances"
    }

    fn event_names(&self) -> Option<&[&str]> {
        Some(&["Deposited", "Withdrawn"])
    }

    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.handled += 1;
        let delta = match event.decode::<AccountEvent>()? {
            AccountEvent::Deposited(e) => e.amount,
            AccountEvent::Withdrawn(e) => -e.amount,
            AccountEvent::Opened(_) => {
                return Err("Opened is filtered out and never handled".into());
            }
        };
        if self.fail_on_amount == Some(delta) {
            return Err(format!("refusing amount {delta}").into());
        }
        *self
            .balances
            .entry(event.stream.aggregate_id.clone())
            .or_default() += delta;
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), BoxError> {
        self.balances.clear();
        self.handled = 0;
        Ok(())
    }
}

async fn seed(store: &MemoryStore, id: &str, deposits: &[i64]) {
    let accounts = Repository::<Account, _>::new(store.clone());
    accounts
        .execute(id, Metadata::by_user("seed"), |a| a.open("x"))
        .await
        .expect("open");
    for amount in deposits {
        accounts
            .execute(id, Metadata::by_user("seed"), |a| a.deposit(*amount))
            .await
            .expect("deposit");
    }
}

#[tokio::test]
async fn catch_up_resumes_from_the_checkpoint() {
    let store = MemoryStore::new();
    seed(&store, "a", &[10, 20]).await;
    seed(&store, "b", &[5]).await;
    let mut runner = ProjectionRunner::new(store.clone(), Balances::default()).with_batch_size(2);
    let progress = runner.catch_up().await.expect("catch up");
    assert_eq!(progress.done, 5);
    assert_eq!(
        runner.projection().balances,
        HashMap::from([("a".into(), 30), ("b".into(), 5)])
    );
    assert_eq!(
        runner.projection().handled,
        3,
        "Opened events were filtered out"
    );
    assert_eq!(
        store.load_checkpoint("balances").await.expect("checkpoint"),
        Some(5)
    );

    seed(&store, "c", &[1]).await;
    let progress = runner.catch_up().await.expect("catch up again");
    assert_eq!(progress.done, 2, "only the new events are read");
    assert_eq!(runner.projection().balances.get("c"), Some(&1));
}

#[tokio::test]
async fn a_new_runner_continues_where_the_last_stopped() {
    let store = MemoryStore::new();
    seed(&store, "a", &[10]).await;
    ProjectionRunner::new(store.clone(), Balances::default())
        .catch_up()
        .await
        .expect("first run");
    seed(&store, "a2", &[7]).await;
    let mut second = ProjectionRunner::new(store.clone(), Balances::default());
    second.catch_up().await.expect("second run");
    assert_eq!(
        second.projection().balances,
        HashMap::from([("a2".into(), 7)]),
        "events before the checkpoint are not replayed"
    );
}

#[tokio::test]
async fn rebuild_replays_everything_and_reports_progress() {
    let store = MemoryStore::new();
    for i in 0..10 {
        seed(&store, &format!("acc-{i}"), &[i, 100]).await;
    }
    let mut runner = ProjectionRunner::new(store.clone(), Balances::default()).with_batch_size(7);
    runner.catch_up().await.expect("catch up");
    runner
        .projection_mut()
        .balances
        .insert("corrupted".into(), 1);
    let mut reports = Vec::new();
    let progress = runner.rebuild(|p| reports.push(p)).await.expect("rebuild");
    assert_eq!((progress.done, progress.total), (30, 30));
    assert_eq!(reports.len(), 5, "one report per batch of 7");
    assert!(reports.windows(2).all(|w| w[0].done < w[1].done));
    assert_eq!(reports.last().map(|p| p.position), Some(30));
    assert!(
        !runner.projection().balances.contains_key("corrupted"),
        "reset before replay"
    );
    assert_eq!(
        runner.projection().balances.values().sum::<i64>(),
        45 + 1000
    );
}

#[tokio::test]
async fn handler_failure_names_the_position_and_keeps_the_checkpoint_before_it() {
    let store = MemoryStore::new();
    seed(&store, "a", &[1, 2]).await; // positions 1..=3
    ProjectionRunner::new(store.clone(), Balances::default())
        .catch_up()
        .await
        .expect("first");
    seed(&store, "b", &[66]).await; // positions 4..=5
    let failing = Balances {
        fail_on_amount: Some(66),
        ..Balances::default()
    };
    let mut runner = ProjectionRunner::new(store.clone(), failing).with_batch_size(1);
    match runner.catch_up().await {
        Err(Error::Projection {
            projection,
            position,
            ..
        }) => assert_eq!((projection.as_str(), position), ("balances", 5)),
        other => panic!("expected a projection error, got {other:?}"),
    }
    assert_eq!(
        store.load_checkpoint("balances").await.expect("checkpoint"),
        Some(4)
    );
    runner.projection_mut().fail_on_amount = None;
    runner.catch_up().await.expect("resume after the fix");
    assert_eq!(runner.projection().balances.get("b"), Some(&66));
}

#[tokio::test]
async fn a_failure_mid_batch_checkpoints_the_events_handled_before_it() {
    let store = MemoryStore::new();
    seed(&store, "a", &[1, 2, 66, 3]).await; // positions 1..=5, the failing deposit at 4
    let failing = Balances {
        fail_on_amount: Some(66),
        ..Balances::default()
    };
    let mut runner = ProjectionRunner::new(store.clone(), failing)
        .with_batch_size(100)
        .with_checkpoint_interval(std::time::Duration::from_secs(3600));
    let failed = runner.catch_up().await;
    assert!(
        matches!(failed, Err(Error::Projection { position: 4, .. })),
        "{failed:?}"
    );
    assert_eq!(
        store.load_checkpoint("balances").await.expect("checkpoint"),
        Some(3),
        "everything before the failing event is checkpointed, even mid-batch"
    );
    runner.projection_mut().fail_on_amount = None;
    let resumed = runner.catch_up().await.expect("resume after the fix");
    assert_eq!(resumed.done, 2, "resumes at the failing event");
    assert_eq!(
        runner.projection().balances.get("a"),
        Some(&(1 + 2 + 66 + 3))
    );
    assert_eq!(
        store.load_checkpoint("balances").await.expect("checkpoint"),
        Some(5),
        "a run saves its checkpoint at its end whatever the interval"
    );
}
