//! Repository: load, execute with retries, snapshots, temporal loads, state cache.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use common::*;
use es_core::{
    AsOf, Error, ExecuteError, ExpectedVersion, MemoryStore, Metadata, NewEvent, RecordedEvent,
    Repository, Snapshot, SnapshotStore, StreamId, StreamQuery, StreamStore,
};
use serde_json::json;
use serde_json::value::to_raw_value;
use uuid::Uuid;

fn repo(store: &MemoryStore) -> Repository<Account, MemoryStore> {
    Repository::new(store.clone())
}

async fn opened_with(store: &MemoryStore, id: &str, deposits: &[i64]) {
    let accounts = repo(store);
    accounts
        .execute(id, Metadata::by_user("setup"), |a| a.open("Ada"))
        .await
        .expect("open");
    for amount in deposits {
        accounts
            .execute(id, Metadata::by_user("setup"), |a| a.deposit(*amount))
            .await
            .expect("deposit");
    }
}

/// Appends a raw payload to an account stream, as older code or another process would have.
async fn append_raw(
    store: &MemoryStore,
    id: &str,
    name: &str,
    version: u32,
    payload: serde_json::Value,
) {
    let event = NewEvent {
        event_id: Uuid::now_v7(),
        event_name: name.into(),
        schema_version: version,
        payload: to_raw_value(&payload).expect("json"),
        metadata: Metadata::new(),
    };
    store
        .append(
            &StreamId::new("Account", id),
            ExpectedVersion::Any,
            vec![event],
        )
        .await
        .expect("raw append");
}

#[tokio::test]
async fn execute_then_load_returns_folded_state_and_version() {
    let store = MemoryStore::new();
    opened_with(&store, "a1", &[100, 50]).await;
    let loaded = repo(&store).load("a1").await.expect("load");
    assert_eq!(
        (loaded.balance, loaded.version, loaded.open),
        (150, 3, true)
    );
    assert!(loaded.exists());
    let missing = repo(&store).load("nobody").await.expect("load");
    assert!(!missing.exists());
    assert_eq!(missing.state, Account::default());
}

#[tokio::test]
async fn rejected_command_writes_nothing() {
    let store = MemoryStore::new();
    opened_with(&store, "a1", &[10]).await;
    let err = repo(&store)
        .execute("a1", Metadata::by_user("u"), |a| a.withdraw(11))
        .await
        .expect_err("refused");
    assert_eq!(
        err.rejection(),
        Some(&AccountError::InsufficientFunds {
            balance: 10,
            asked: 11
        })
    );
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn a_command_can_decide_several_events_or_none() {
    let store = MemoryStore::new();
    let accounts = repo(&store);
    let committed = accounts
        .execute("a1", Metadata::by_user("u"), |a| {
            let opened = a.open("Ada")?.into_iter().map(AccountEvent::from);
            Ok::<_, AccountError>(
                opened
                    .chain([Deposited {
                        amount: 5,
                        note: "gift".into(),
                    }
                    .into()])
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .expect("execute");
    assert_eq!((committed.version, committed.events.len()), (2, 2));
    let nothing = accounts
        .execute("a1", Metadata::by_user("u"), |a| a.open("Ada"))
        .await
        .expect("no-op");
    assert!(
        nothing.events.is_empty(),
        "opening an open account decides nothing"
    );
    assert_eq!(nothing.version, 2);
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn metadata_propagates_to_every_event() {
    let store = MemoryStore::new();
    let correlation = Uuid::now_v7();
    let causation = Uuid::now_v7();
    let meta = Metadata::by_user("u-42")
        .with_correlation_id(correlation)
        .with_causation_id(causation);
    let committed = repo(&store)
        .execute("a1", meta, |_| {
            Ok::<_, AccountError>(vec![
                AccountEvent::from(Opened { owner: "A".into() }),
                Deposited {
                    amount: 1,
                    note: String::new(),
                }
                .into(),
            ])
        })
        .await
        .expect("execute");
    for event in &committed.events {
        assert_eq!(event.metadata.user_id.as_deref(), Some("u-42"));
        assert_eq!(event.metadata.correlation_id, Some(correlation));
        assert_eq!(event.metadata.causation_id, Some(causation));
    }
    let follow_up = Metadata::caused_by(&committed.events[1]);
    assert_eq!(follow_up.correlation_id, Some(correlation));
    assert_eq!(follow_up.causation_id, Some(committed.events[1].event_id));

    let uncorrelated = repo(&store)
        .execute("a2", Metadata::new(), |a| a.open("B"))
        .await
        .expect("execute");
    assert!(
        uncorrelated.events[0].metadata.correlation_id.is_some(),
        "a command without correlation starts one"
    );
}

#[tokio::test]
async fn conflict_reloads_and_decides_again() {
    let store = MemoryStore::new();
    opened_with(&store, "a1", &[100]).await;
    let calls = AtomicUsize::new(0);
    let interferer = store.clone();
    let committed = repo(&store)
        .execute("a1", Metadata::by_user("u"), |a| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                // Another writer deposits between our load and our append.
                let stream = StreamId::new("Account", "a1");
                let event = NewEvent::from_event(
                    &Deposited {
                        amount: 900,
                        note: "race".into(),
                    },
                    Metadata::new(),
                )
                .expect("encode");
                futures::executor::block_on(interferer.append(
                    &stream,
                    ExpectedVersion::Exact(2),
                    vec![event],
                ))
                .expect("interfering append");
            }
            a.withdraw(a.balance)
        })
        .await
        .expect("execute after retry");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "decided twice");
    assert_eq!(committed.version, 4);
    let loaded = repo(&store).load("a1").await.expect("load");
    assert_eq!(
        loaded.balance, 0,
        "the retry saw the interfering deposit and withdrew all 1000"
    );
}

#[tokio::test]
async fn retries_are_bounded() {
    let store = MemoryStore::new();
    opened_with(&store, "a1", &[]).await;
    let interferer = store.clone();
    let calls = AtomicUsize::new(0);
    let result = repo(&store)
        .with_max_retries(2)
        .execute("a1", Metadata::by_user("u"), |a| {
            calls.fetch_add(1, Ordering::SeqCst);
            let stream = StreamId::new("Account", "a1");
            let event = NewEvent::from_event(
                &Deposited {
                    amount: 1,
                    note: String::new(),
                },
                Metadata::new(),
            )
            .expect("encode");
            futures::executor::block_on(interferer.append(
                &stream,
                ExpectedVersion::Any,
                vec![event],
            ))
            .expect("interfering append");
            a.deposit(5)
        })
        .await;
    match result {
        Err(ExecuteError::Store(Error::Conflict { .. })) => {}
        other => panic!("expected a conflict after retries, got {other:?}"),
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "one attempt plus two retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_aggregate_all_commit() {
    let store = MemoryStore::new();
    opened_with(&store, "a1", &[]).await;
    let accounts = repo(&store).with_max_retries(100);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let accounts = accounts.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                accounts
                    .execute("a1", Metadata::by_user("u"), |a| a.deposit(1))
                    .await
                    .expect("deposit");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let loaded = accounts.load("a1").await.expect("load");
    assert_eq!((loaded.balance, loaded.version), (160, 161));
}

#[tokio::test]
async fn snapshots_are_taken_every_n_events_and_load_equals_replay() {
    let store = MemoryStore::new();
    opened_with(&store, "a1", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]).await;
    let snapshot = store
        .load_snapshot(&StreamId::new("Account", "a1"))
        .await
        .expect("load")
        .expect("snapshot taken");
    assert_eq!(snapshot.version, 10);
    let from_snapshot = repo(&store).load("a1").await.expect("load");
    let events = store
        .read_stream(&StreamId::new("Account", "a1"), &StreamQuery::all())
        .await
        .expect("read");
    let mut replayed = Account::default();
    for e in &events {
        es_core::Aggregate::apply_event(
            &mut replayed,
            &e.decode::<AccountEvent>().expect("decode"),
        );
    }
    assert_eq!(from_snapshot.state, replayed);
    assert_eq!(from_snapshot.version, 12);
    assert_eq!(
        from_snapshot.applied, 12,
        "applied counts survive the snapshot"
    );
}

#[tokio::test]
async fn snapshot_of_another_state_version_or_garbage_falls_back_to_replay() {
    let store = MemoryStore::new();
    opened_with(&store, "a1", &[10, 20]).await;
    let stream = StreamId::new("Account", "a1");
    for (state_version, state) in [
        (99, json!({ "unrelated": true })),
        (1, json!({ "balance": "not a number" })),
    ] {
        store
            .save_snapshot(Snapshot {
                stream: stream.clone(),
                version: 3,
                state_version,
                state: to_raw_value(&state).expect("json"),
                taken_at: Utc::now(),
            })
            .await
            .expect("save");
        let loaded = repo(&store)
            .load("a1")
            .await
            .expect("load falls back to replay");
        assert_eq!((loaded.balance, loaded.version), (30, 3));
    }
}

#[tokio::test]
async fn load_as_of_version_with_and_without_snapshot() {
    let store = MemoryStore::new();
    opened_with(&store, "a1", &[1, 2, 3, 4, 5, 6, 7]).await; // snapshot at 5
    let accounts = repo(&store);
    let at3 = accounts
        .load_as_of("a1", AsOf::Version(3))
        .await
        .expect("as of 3");
    assert_eq!((at3.balance, at3.version), (3, 3));
    let at7 = accounts
        .load_as_of("a1", AsOf::Version(7))
        .await
        .expect("as of 7");
    assert_eq!((at7.balance, at7.version), (1 + 2 + 3 + 4 + 5 + 6, 7));
    let beyond = accounts
        .load_as_of("a1", AsOf::Version(100))
        .await
        .expect("beyond");
    assert_eq!((beyond.balance, beyond.version), (28, 8));
    let at0 = accounts
        .load_as_of("a1", AsOf::Version(0))
        .await
        .expect("as of 0");
    assert!(!at0.exists());
}

#[tokio::test]
async fn load_as_of_time() {
    let store = MemoryStore::new();
    opened_with(&store, "a1", &[100]).await;
    tokio::time::sleep(Duration::from_millis(15)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(15)).await;
    repo(&store)
        .execute("a1", Metadata::by_user("u"), |a| a.withdraw(40))
        .await
        .expect("withdraw");
    let then = repo(&store)
        .load_as_of("a1", AsOf::Time(between))
        .await
        .expect("as of time");
    assert_eq!((then.balance, then.version), (100, 2));
    let now = repo(&store)
        .load_as_of("a1", AsOf::Time(Utc::now()))
        .await
        .expect("as of now");
    assert_eq!(now.balance, 60);
}

#[tokio::test]
async fn stored_v1_payloads_are_upcast_on_load() {
    let store = MemoryStore::new();
    opened_with(&store, "a1", &[]).await;
    append_raw(&store, "a1", "Deposited", 1, json!({ "amount": 70 })).await;
    let loaded = repo(&store).load("a1").await.expect("load");
    assert_eq!(loaded.balance, 70);
    assert_eq!(
        loaded.notes,
        ["(v1)"],
        "the v1 payload went through From<DepositedV1>"
    );
}

#[tokio::test]
async fn undecodable_history_is_a_typed_error_naming_stream_and_version() {
    let cases = [
        ("Renamed", 1, json!({}), "unknown event name"),
        (
            "Deposited",
            3,
            json!({ "amount": 1, "note": "" }),
            "newer than",
        ),
        (
            "Withdrawn",
            1,
            json!({ "amount": "ten" }),
            "does not decode",
        ),
    ];
    for (name, version, payload, message) in cases {
        let store = MemoryStore::new();
        opened_with(&store, "a1", &[]).await;
        append_raw(&store, "a1", name, version, payload).await;
        match repo(&store).load("a1").await {
            Err(error @ Error::Decode { .. }) => {
                let Error::Decode {
                    ref stream,
                    version: at,
                    ref event_name,
                    ..
                } = error
                else {
                    unreachable!()
                };
                assert_eq!(
                    (stream.to_string(), at, event_name.as_str()),
                    ("Account/a1".to_owned(), 2, name)
                );
                assert!(error.to_string().contains(message), "{error}");
            }
            other => panic!("expected a decode error for {name} v{version}, got {other:?}"),
        }
        assert_eq!(store.len(), 2, "nothing is dropped or rewritten");
    }
}

#[tokio::test]
async fn history_is_the_audit_trail() {
    let store = MemoryStore::new();
    opened_with(&store, "a1", &[5]).await;
    let history = repo(&store).history("a1").await.expect("history");
    let summary: Vec<(u64, &str, Option<&str>)> = history
        .iter()
        .map(|e| {
            (
                e.version,
                e.event_name.as_str(),
                e.metadata.user_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "Opened", Some("setup")),
            (2, "Deposited", Some("setup"))
        ]
    );
}

/// A store that counts reads, to check what the state cache saves, and can make appends
/// ambiguous: the next `ambiguous` appends fail with `OutcomeUnknown`, after storing their
/// events if `ambiguous_lands`.
#[derive(Clone, Default)]
struct CountingStore {
    inner: MemoryStore,
    reads: Arc<AtomicUsize>,
    ambiguous: Arc<AtomicUsize>,
    ambiguous_lands: Arc<std::sync::atomic::AtomicBool>,
}

impl CountingStore {
    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

impl StreamStore for CountingStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        // An await point, as a real store has: concurrent commands interleave here.
        tokio::task::yield_now().await;
        let ambiguous = self
            .ambiguous
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !ambiguous {
            return self.inner.append(stream, expected, events).await;
        }
        if self.ambiguous_lands.load(Ordering::SeqCst) {
            self.inner.append(stream, expected, events).await?;
        }
        Err(Error::OutcomeUnknown(
            "the connection died around the commit".into(),
        ))
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        query: &StreamQuery,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_stream(stream, query).await
    }
    async fn stream_version(&self, stream: &StreamId) -> Result<u64, Error> {
        self.inner.stream_version(stream).await
    }
    async fn read_event(&self, event_id: uuid::Uuid) -> Result<Option<RecordedEvent>, Error> {
        self.inner.read_event(event_id).await
    }
}

impl SnapshotStore for CountingStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, Error> {
        self.inner.load_snapshot(stream).await
    }
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), Error> {
        self.inner.save_snapshot(snapshot).await
    }
}

#[tokio::test]
async fn state_cache_skips_reads_and_stays_correct_under_outside_writes() {
    let store = CountingStore::default();
    let cached = Repository::<Account, _>::new(store.clone()).with_state_cache(100);
    cached
        .execute("a1", Metadata::by_user("u"), |a| a.open("Ada"))
        .await
        .expect("open");
    let reads_after_first = store.reads();
    for _ in 0..10 {
        cached
            .execute("a1", Metadata::by_user("u"), |a| a.deposit(1))
            .await
            .expect("deposit");
    }
    assert_eq!(
        store.reads(),
        reads_after_first,
        "cached commands read nothing"
    );

    // Another process (an uncached repository) withdraws everything behind the cache's back.
    let other = Repository::<Account, _>::new(store.clone()).without_state_cache();
    other
        .execute("a1", Metadata::by_user("v"), |a| a.withdraw(10))
        .await
        .expect("outside withdraw");
    // The cache believes the balance is 10; the append conflicts and the command is re-decided.
    let err = cached
        .execute("a1", Metadata::by_user("u"), |a| a.withdraw(10))
        .await
        .expect_err("no funds left");
    assert_eq!(
        err.rejection(),
        Some(&AccountError::InsufficientFunds {
            balance: 0,
            asked: 10
        })
    );

    // A stale cache must not refuse what the real state allows.
    other
        .execute("a1", Metadata::by_user("v"), |a| a.deposit(50))
        .await
        .expect("outside deposit");
    cached
        .execute("a1", Metadata::by_user("u"), |a| a.withdraw(30))
        .await
        .expect("allowed by the real balance");
    assert_eq!(other.load("a1").await.expect("load").balance, 20);
}

#[tokio::test]
async fn a_retried_command_key_returns_the_first_outcome_whatever_it_would_decide_now() {
    let store = MemoryStore::new();
    opened_with(&store, "a1", &[100]).await;
    let key = es_core::CommandKey::from_text("withdraw-once");
    let first = repo(&store)
        .execute_once("a1", key, Metadata::by_user("u"), |a| a.withdraw(60))
        .await
        .expect("first");
    // Same key, from another repository (another process): the state now refuses a second
    // withdrawal of 60, yet the retry must return the first outcome and write nothing.
    let other = Repository::<Account, _>::new(store.clone());
    let retry = other
        .execute_once("a1", key, Metadata::by_user("u"), |a| a.withdraw(60))
        .await
        .expect("the retry returns the first outcome instead of the refusal");
    assert_eq!(retry.events[0].event_id, first.events[0].event_id);
    assert_eq!(retry.version, first.version);
    // A retry whose decision differs (another amount) also returns the first outcome.
    let differing = other
        .execute_once("a1", key, Metadata::by_user("u"), |a| a.withdraw(1))
        .await
        .expect("first outcome");
    assert_eq!(differing.events[0].event_id, first.events[0].event_id);
    // And a retry that decides the same events again, after later appends, stores nothing.
    opened_with(&store, "a1", &[5]).await;
    let same = repo(&store)
        .execute_once("a1", key, Metadata::by_user("u"), |_| {
            Ok::<_, AccountError>(Withdrawn { amount: 60 })
        })
        .await
        .expect("identical retry");
    assert_eq!(same.events[0].version, first.events[0].version);
    assert_eq!(
        store.len(),
        4,
        "opened, deposit 100, withdraw 60, deposit 5: nothing doubled"
    );
    assert_eq!(repo(&store).load("a1").await.expect("load").balance, 45);
}

/// An append whose outcome is unknown is run again under the command's key: whether the
/// first attempt stored its events or not, the command lands exactly once and returns them.
#[tokio::test]
async fn a_keyed_command_converges_after_appends_whose_outcome_is_unknown() {
    for lands in [true, false] {
        let store = CountingStore::default();
        let accounts = Repository::<Account, _>::new(store.clone());
        accounts
            .execute("a1", Metadata::by_user("u"), |a| a.open("Ada"))
            .await
            .expect("open");
        accounts
            .execute("a1", Metadata::by_user("u"), |a| a.deposit(100))
            .await
            .expect("deposit");
        store.ambiguous_lands.store(lands, Ordering::SeqCst);
        store.ambiguous.store(2, Ordering::SeqCst);
        let key = es_core::CommandKey::from_text("withdraw-once");
        let done = accounts
            .execute_once("a1", key, Metadata::by_user("u"), |a| a.withdraw(60))
            .await
            .unwrap_or_else(|e| panic!("lands: {lands}: {e:?}"));
        assert_eq!(done.events.len(), 1, "lands: {lands}");
        assert_eq!(done.events[0].version, 3, "lands: {lands}");
        let fresh = Repository::<Account, _>::new(store.clone()).without_state_cache();
        let account = fresh.load("a1").await.expect("load");
        assert_eq!(
            (account.version, account.balance),
            (3, 40),
            "withdrawn once (lands: {lands})"
        );
        assert_eq!(store.inner.len(), 3, "lands: {lands}");
    }
}

/// Without a key the repository cannot tell a retry from a second command: the ambiguity is
/// the caller's to resolve.
#[tokio::test]
async fn an_unkeyed_command_reports_an_unknown_outcome() {
    let store = CountingStore::default();
    let accounts = Repository::<Account, _>::new(store.clone());
    accounts
        .execute("a1", Metadata::by_user("u"), |a| a.open("Ada"))
        .await
        .expect("open");
    store.ambiguous_lands.store(true, Ordering::SeqCst);
    store.ambiguous.store(1, Ordering::SeqCst);
    let error = accounts
        .execute("a1", Metadata::by_user("u"), |a| a.deposit(5))
        .await
        .expect_err("ambiguous");
    assert!(
        matches!(error, ExecuteError::Store(Error::OutcomeUnknown(_))),
        "{error:?}"
    );
    assert_eq!(store.inner.len(), 2, "stored once, not retried");
}

#[tokio::test]
async fn distinct_keys_execute_separately_and_empty_ids_are_refused() {
    let store = MemoryStore::new();
    opened_with(&store, "a1", &[100]).await;
    for text in ["k1", "k2"] {
        repo(&store)
            .execute_once(
                "a1",
                es_core::CommandKey::from_text(text),
                Metadata::new(),
                |a| a.withdraw(10),
            )
            .await
            .expect("withdraw");
    }
    assert_eq!(repo(&store).load("a1").await.expect("load").balance, 80);
    let empty = repo(&store)
        .execute("", Metadata::new(), |a| a.open("x"))
        .await
        .expect_err("empty id");
    assert!(
        matches!(empty, ExecuteError::Store(Error::Invalid(_))),
        "{empty:?}"
    );
    assert!(matches!(
        repo(&store).load("").await,
        Err(Error::Invalid(_))
    ));
}

mod floats {
    use es_core::prelude::*;

    #[event]
    pub(crate) struct Measured {
        pub(crate) value: f64,
    }

    #[derive(Aggregate, Default, Debug, PartialEq, Serialize, Deserialize)]
    #[aggregate(name = "Gauge", events(Measured), snapshot_every = 2)]
    pub(crate) struct Gauge {
        pub(crate) values: Vec<f64>,
        pub(crate) signs: Vec<bool>,
    }

    impl Apply<Measured> for Gauge {
        fn apply(&mut self, e: &Measured) {
            self.values.push(e.value);
            self.signs.push(e.value.is_sign_negative());
        }
    }
}

#[tokio::test]
async fn state_from_cache_snapshot_and_replay_agree_for_every_float() {
    use floats::{Gauge, Measured};
    let store = MemoryStore::new();
    let gauges = Repository::<Gauge, _>::new(store.clone());
    let values = [
        0.908_881_258_613_561_1,
        -0.0,
        f64::MIN_POSITIVE / 2.0,
        f64::MAX,
        f64::MIN,
        1e-300,
        -1.5,
    ];
    for value in values {
        gauges
            .execute("g", Metadata::new(), |_| {
                Ok::<_, String>(Measured { value })
            })
            .await
            .expect("measure");
    }
    let cached = gauges
        .execute("g", Metadata::new(), |_| {
            Ok::<_, String>(Vec::<Measured>::new())
        })
        .await
        .expect("no-op");
    assert_eq!(cached.version, values.len() as u64);
    let from_snapshot = Repository::<Gauge, _>::new(store.clone())
        .load("g")
        .await
        .expect("load");
    let replayed = Repository::<Gauge, _>::new(store.clone())
        .load_as_of("g", AsOf::Version(u64::MAX))
        .await
        .expect("replay");
    assert_eq!(from_snapshot, replayed);
    let expected: Vec<f64> = values
        .iter()
        .map(|v| if *v == 0.0 { 0.0 } else { *v })
        .collect();
    assert_eq!(
        replayed.values, expected,
        "every float exact; negative zero stored as zero"
    );
    assert!(
        !replayed.signs[1],
        "-0.0 is normalised to 0.0, the same on every store"
    );
}

#[tokio::test]
async fn create_decides_on_the_empty_state_unread_and_reads_when_the_stream_exists() {
    let store = CountingStore::default();
    let accounts = Repository::<Account, _>::new(store.clone()).without_state_cache();
    let opened = accounts
        .create("a1", Metadata::by_user("u"), |a| a.open("Ada"))
        .await
        .expect("created");
    assert_eq!(opened.version, 1);
    assert_eq!(store.reads(), 0, "a create on a new stream reads nothing");

    // The stream exists: the append conflicts, and the command decides on the real state
    // (already open: nothing to do) instead of opening it twice.
    let again = accounts
        .create("a1", Metadata::by_user("u"), |a| a.open("Bob"))
        .await
        .expect("decided on the real state");
    assert!(again.events.is_empty(), "{again:?}");
    assert_eq!(again.version, 1);
    assert!(store.reads() > 0, "the conflict made it read the stream");

    // A command the empty state refuses runs on the real state when the stream exists.
    let deposited = accounts
        .create("a1", Metadata::by_user("u"), |a| a.deposit(5))
        .await
        .expect("allowed by the real state");
    assert_eq!(deposited.version, 2);
    let account = accounts.load("a1").await.expect("load");
    assert_eq!((account.applied, account.balance), (2, 5), "opened once");

    // And one the real state refuses too is refused.
    let refused = accounts
        .create("a2", Metadata::by_user("u"), |a| a.deposit(5))
        .await
        .expect_err("no such account");
    assert_eq!(refused.rejection(), Some(&AccountError::NotOpen));
}

#[tokio::test]
async fn create_once_returns_the_first_outcome_to_a_repeat() {
    let store = MemoryStore::new();
    let key = es_core::CommandKey::from_text("open-once");
    let first = repo(&store)
        .create_once("a1", key, Metadata::by_user("u"), |a| a.open("Ada"))
        .await
        .expect("first");
    // A repeat from another repository (another process), after the account moved on.
    opened_with(&store, "a1", &[7]).await;
    let repeat = repo(&store)
        .create_once("a1", key, Metadata::by_user("u"), |a| a.open("Ada"))
        .await
        .expect("the first outcome");
    assert_eq!(repeat.events.len(), 1);
    assert_eq!(repeat.events[0].event_id, first.events[0].event_id);
    let stream = StreamId::new("Account", "a1");
    assert_eq!(store.stream_version(&stream).await.expect("version"), 2);
}

#[tokio::test]
async fn commands_on_one_aggregate_take_turns_instead_of_conflicting() {
    let store = CountingStore::default();
    // No retry on conflict: a command that decided on a state another one moved would fail.
    let accounts = Repository::<Account, _>::new(store.clone()).with_max_retries(0);
    accounts
        .execute("a1", Metadata::by_user("u"), |a| a.open("Ada"))
        .await
        .expect("open");
    let reads = store.reads();
    let deposits = (0..20).map(|_| {
        let accounts = accounts.clone();
        async move {
            accounts
                .execute("a1", Metadata::by_user("u"), |a| a.deposit(1))
                .await
        }
    });
    for deposited in futures::future::join_all(deposits).await {
        deposited.expect("no conflict: the commands took turns");
    }
    assert_eq!(store.reads(), reads, "each decided on the cached state");
    assert_eq!(accounts.load("a1").await.expect("load").balance, 20);
}

#[tokio::test]
async fn a_dropped_command_gives_its_turn_back() {
    let store = CountingStore::default();
    let accounts = Repository::<Account, _>::new(store.clone());
    accounts
        .execute("a1", Metadata::by_user("u"), |a| a.open("Ada"))
        .await
        .expect("open");
    let mut first = Box::pin(accounts.execute("a1", Metadata::by_user("u"), |a| a.deposit(1)));
    assert!(
        futures::poll!(&mut first).is_pending(),
        "it waits in the store, holding its turn"
    );
    drop(first);
    let second = accounts.execute("a1", Metadata::by_user("u"), |a| a.deposit(2));
    tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the dropped command gave its turn back")
        .expect("deposit");
    assert_eq!(accounts.load("a1").await.expect("load").balance, 2);
}
