//! Decoding of bad rows, snapshots, checkpoints, subscriptions, projections, schemas and the
//! repository, against the real server.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use es_core::prelude::*;
use es_core::testing::conformance::{event, events};
use es_core::{BoxError, DecodeError, Error, Snapshot};
use es_postgres::{
    InlineProjection, PostgresStore, StoreOptions, SubscriptionOptions, TransactionalProjection,
    TransactionalRunner,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use sqlx::PgConnection;

/// Money in.
#[event]
pub struct Deposited {
    /// How much.
    pub amount: i64,
}

/// A bank account that snapshots every 10 events.
#[derive(Aggregate, Default, Serialize, Deserialize)]
#[aggregate(name = "Account", events(Deposited), snapshot_every = 10)]
pub struct Account {
    balance: i64,
    deposits: u64,
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, e: &Deposited) {
        self.balance += e.amount;
        self.deposits += 1;
    }
}

/// Writes a row behind the store's back, as old or foreign code might have.
async fn insert_raw(store: &PostgresStore, id: &str, name: &str, schema: i32, payload: &str) {
    sqlx::query(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_name, \
         schema_version, payload, metadata, recorded_at) \
         VALUES ($1, 'Account', $2, 1, $3, $4, $5::jsonb, '{}', now())",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(id)
    .bind(name)
    .bind(schema)
    .bind(payload)
    .execute(store.pool())
    .await
    .expect("insert raw row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_give_typed_errors_naming_stream_and_version() {
    let store = common::fresh_store().await;
    insert_raw(
        &store,
        "bad-payload",
        "Deposited",
        1,
        r#"{"amount":"lots"}"#,
    )
    .await;
    insert_raw(&store, "not-an-object", "Deposited", 1, r#""garbage""#).await;
    insert_raw(&store, "unknown", "Withdrawn", 1, r#"{"amount":1}"#).await;
    insert_raw(&store, "too-new", "Deposited", 7, r#"{"amount":1}"#).await;
    let accounts = Repository::<Account, _>::new(store.clone());
    for (id, check) in [
        (
            "bad-payload",
            (|e: &DecodeError| matches!(e, DecodeError::Payload { .. }))
                as fn(&DecodeError) -> bool,
        ),
        ("not-an-object", |e| {
            matches!(e, DecodeError::Payload { .. })
        }),
        ("unknown", |e| matches!(e, DecodeError::UnknownEvent { .. })),
        ("too-new", |e| {
            matches!(
                e,
                DecodeError::VersionTooNew {
                    stored: 7,
                    supported: 1,
                    ..
                }
            )
        }),
    ] {
        match accounts.load(id).await {
            Err(Error::Decode {
                stream,
                version,
                source,
                ..
            }) => {
                assert_eq!(stream, StreamId::new("Account", id));
                assert_eq!(version, 1);
                assert!(check(&source), "{id}: unexpected {source}");
            }
            other => panic!(
                "{id}: expected a decode error, got {other:?}",
                other = other.map(|l| l.version)
            ),
        }
    }
    // The raw history is still readable: nothing is dropped.
    let raw = store
        .read_stream(&StreamId::new("Account", "unknown"), &StreamQuery::all())
        .await
        .expect("raw read");
    assert_eq!(raw[0].event_name, "Withdrawn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_metadata_is_a_backend_error_naming_the_row() {
    let store = common::fresh_store().await;
    sqlx::query(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_name, \
         schema_version, payload, metadata, recorded_at) \
         VALUES ($1, 'Account', 'meta', 1, 'Deposited', 1, '{\"amount\":1}', '{\"user_id\": 5}', now())",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(store.pool())
    .await
    .expect("insert");
    let err = store
        .read_stream(&StreamId::new("Account", "meta"), &StreamQuery::all())
        .await
        .expect_err("metadata of the wrong shape");
    let text = err.to_string();
    let source = std::error::Error::source(&err)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(matches!(err, Error::Backend(_)), "{text}");
    assert!(source.contains("Account/meta version 1"), "{source}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_are_never_replaced_by_older_ones_even_concurrently() {
    let store = common::fresh_store().await;
    let s = StreamId::new("Snap", "s");
    let mut handles = Vec::new();
    for v in 1..=40u64 {
        let (store, s) = (store.clone(), s.clone());
        handles.push(tokio::spawn(async move {
            store
                .save_snapshot(Snapshot {
                    stream: s,
                    version: v,
                    state_version: 1,
                    state: serde_json::value::to_raw_value(&v).expect("json"),
                    taken_at: chrono::Utc::now(),
                })
                .await
        }));
    }
    for h in handles {
        h.await.expect("task").expect("save");
    }
    let snap = store.load_snapshot(&s).await.expect("load").expect("some");
    assert_eq!((snap.version, snap.state.get()), (40, "40"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_loads_from_snapshot_exactly_as_full_replay() {
    let store = common::fresh_store().await;
    let accounts = Repository::<Account, _>::new(store.clone());
    for i in 1..=25 {
        accounts
            .execute("a-1", Metadata::by_user("u"), |_| {
                Ok::<_, std::convert::Infallible>(Deposited { amount: i })
            })
            .await
            .expect("execute");
    }
    let snap = store
        .load_snapshot(&StreamId::new("Account", "a-1"))
        .await
        .expect("load")
        .expect("a snapshot was taken");
    assert_eq!(snap.version, 20);
    let (from_snapshot, rest) = store
        .load_stream(&StreamId::new("Account", "a-1"), Some(1))
        .await
        .expect("load_stream");
    assert_eq!(from_snapshot.map(|s| s.version), Some(20));
    assert_eq!(
        rest.iter().map(|e| e.version).collect::<Vec<_>>(),
        [21, 22, 23, 24, 25]
    );
    let loaded = accounts.load("a-1").await.expect("load");
    let replayed = accounts
        .load_as_of("a-1", AsOf::Time(chrono::Utc::now()))
        .await
        .expect("replay");
    assert_eq!(
        (loaded.balance, loaded.deposits, loaded.version),
        (325, 25, 25)
    );
    assert_eq!((replayed.balance, replayed.deposits), (325, 25));
    let then = accounts
        .load_as_of("a-1", AsOf::Version(3))
        .await
        .expect("as of");
    assert_eq!(then.balance, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_shared_by_stores_on_the_same_database() {
    let store = common::fresh_store().await;
    store.save_checkpoint("p", 17).await.expect("save");
    let other = PostgresStore::from_pool(store.pool().clone());
    assert_eq!(other.load_checkpoint("p").await.expect("load"), Some(17));
    other.save_checkpoint("p", 18).await.expect("save");
    assert_eq!(store.load_checkpoint("p").await.expect("load"), Some(18));
}

async fn follow(store: &PostgresStore, options: SubscriptionOptions, notify: bool) -> Duration {
    let s = StreamId::new("Sub", "s");
    store
        .append(&s, ExpectedVersion::NoStream, events("E", 0, 5))
        .await
        .expect("before");
    let mut sub = store.subscribe_with(0, options);
    for v in 1..=5 {
        let e = sub.next().await.expect("item").expect("event");
        assert_eq!(e.version, v, "catch-up in order");
    }
    // Live: the subscription is waiting now.
    let began = tokio::time::Instant::now();
    let writer = {
        let (store, s) = (store.clone(), s.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            store
                .append(&s, ExpectedVersion::Exact(5), events("E", 5, 3))
                .await
                .expect("live append");
        })
    };
    for v in 6..=8 {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("live event in time")
            .expect("item")
            .expect("event");
        assert_eq!(e.version, v, "live in order (notify {notify})");
    }
    writer.await.expect("writer");
    began.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_catches_up_then_is_woken_by_notify() {
    let store = common::fresh_store().await;
    let took = follow(
        &store,
        SubscriptionOptions {
            batch_size: 2,
            poll_interval: Duration::from_secs(30),
        },
        true,
    )
    .await;
    assert!(
        took < Duration::from_secs(5),
        "woken by NOTIFY, not by polling: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_without_notifications_still_delivers_by_polling() {
    let store = common::fresh_store_with(StoreOptions::new().notify(false), 8).await;
    follow(
        &store,
        SubscriptionOptions {
            batch_size: 2,
            poll_interval: Duration::from_millis(100),
        },
        false,
    )
    .await;
}

/// Counts events into a table; fails once, on purpose, at the event numbered `fail_at`.
struct Counter {
    fail_at: Option<u64>,
}

impl TransactionalProjection for Counter {
    fn name(&self) -> &str {
        "counter"
    }

    fn event_names(&self) -> Option<&[&str]> {
        Some(&["Counted"])
    }

    async fn handle(
        &mut self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO counted (event_id) VALUES ($1)")
            .bind(event.event_id)
            .execute(&mut *tx)
            .await?;
        let n: u64 = serde_json::from_str::<serde_json::Value>(event.payload.get())?["n"]
            .as_u64()
            .unwrap_or(0);
        if self.fail_at == Some(n) {
            self.fail_at = None;
            return Err("injected failure".into());
        }
        Ok(())
    }

    async fn reset(&mut self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM counted").execute(&mut *tx).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactional_projection_applies_every_event_exactly_once() {
    let store = common::fresh_store().await;
    sqlx::query("CREATE TABLE counted (event_id uuid PRIMARY KEY)")
        .execute(store.pool())
        .await
        .expect("read model table");
    for i in 0..10 {
        store
            .append(
                &StreamId::new("C", format!("c{}", i % 3)),
                ExpectedVersion::Any,
                events("Counted", i * 10, 10),
            )
            .await
            .expect("append");
        store
            .append(
                &StreamId::new("C", "other"),
                ExpectedVersion::Any,
                vec![event("Ignored", i)],
            )
            .await
            .expect("append");
    }
    // A failure in the middle of a batch rolls the whole batch back, checkpoint included.
    let mut failing =
        TransactionalRunner::new(store.clone(), Counter { fail_at: Some(37) }).with_batch_size(25);
    let err = failing.catch_up().await.expect_err("injected failure");
    assert!(matches!(err, Error::Projection { .. }), "{err}");
    let checkpoint = store
        .load_checkpoint("counter")
        .await
        .expect("load")
        .unwrap_or(0);
    let counted: i64 = sqlx::query_scalar("SELECT count(*) FROM counted")
        .fetch_one(store.pool())
        .await
        .expect("count");
    let expected_before: i64 = store
        .read_all(0, 1_000)
        .await
        .expect("read")
        .iter()
        .filter(|e| e.position <= checkpoint && e.event_name == "Counted")
        .count() as i64;
    assert_eq!(
        counted, expected_before,
        "effects match the checkpoint exactly"
    );

    // Two runners resume concurrently: the checkpoint lock makes them take turns.
    let mut a =
        TransactionalRunner::new(store.clone(), Counter { fail_at: None }).with_batch_size(7);
    let mut b =
        TransactionalRunner::new(store.clone(), Counter { fail_at: None }).with_batch_size(7);
    let (ra, rb) = tokio::join!(a.catch_up(), b.catch_up());
    ra.expect("runner a");
    rb.expect("runner b");
    let counted: i64 = sqlx::query_scalar("SELECT count(*) FROM counted")
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(
        counted, 100,
        "every wanted event applied once (the primary key would refuse twice)"
    );
    assert_eq!(
        store.load_checkpoint("counter").await.expect("load"),
        Some(store.head_position().await.expect("head"))
    );
    // Rebuild from zero gives the same read model.
    let mut reports = Vec::new();
    let progress = a
        .rebuild_with(|p| reports.push((p.done, p.position, p.total)))
        .await
        .expect("rebuild");
    assert_eq!(progress.done, 110);
    assert_eq!(reports.len(), 110usize.div_ceil(7), "one report per batch");
    assert!(
        reports
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
        "progress only moves forward: {reports:?}"
    );
    assert_eq!(
        reports.last().map(|r| (r.0, r.1)),
        Some((110, store.head_position().await.expect("head")))
    );
    assert!(reports.iter().all(|r| r.2 >= r.0), "total bounds done");
    let counted: i64 = sqlx::query_scalar("SELECT count(*) FROM counted")
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(counted, 100);
}

struct Balances {
    fail: Arc<AtomicU64>,
}

impl InlineProjection for Balances {
    fn name(&self) -> &str {
        "balances"
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            if self.fail.load(Ordering::SeqCst) > 0 {
                return Err("inline projection refused".into());
            }
            for e in events {
                sqlx::query(
                    "INSERT INTO balances (id, events) VALUES ($1, 1) \
                     ON CONFLICT (id) DO UPDATE SET events = balances.events + 1",
                )
                .bind(&e.stream.aggregate_id)
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_projection_reads_its_writes_and_fails_the_append_with_it() {
    let plain = common::fresh_store().await;
    sqlx::query("CREATE TABLE balances (id text PRIMARY KEY, events bigint NOT NULL)")
        .execute(plain.pool())
        .await
        .expect("table");
    let fail = Arc::new(AtomicU64::new(0));
    let store = plain.with_inline_projection(Balances { fail: fail.clone() });
    let s = StreamId::new("Acc", "x");
    store
        .append(&s, ExpectedVersion::NoStream, events("E", 0, 3))
        .await
        .expect("append");
    let n: i64 = sqlx::query_scalar("SELECT events FROM balances WHERE id = 'x'")
        .fetch_one(store.pool())
        .await
        .expect("read model is up to date when append returns");
    assert_eq!(n, 3);
    fail.store(1, Ordering::SeqCst);
    let err = store
        .append(&s, ExpectedVersion::Exact(3), events("E", 3, 2))
        .await
        .expect_err("projection failure fails the append");
    assert!(matches!(err, Error::Projection { .. }), "{err}");
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        3,
        "append rolled back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_in_a_rolled_back_transaction_leaves_nothing() {
    let store = common::fresh_store().await;
    let s = StreamId::new("Tx", "t");
    let mut tx = store.pool().begin().await.expect("begin");
    store
        .append_in(&mut tx, &s, ExpectedVersion::NoStream, events("E", 0, 4))
        .await
        .expect("append in tx");
    tx.rollback().await.expect("rollback");
    assert_eq!(store.stream_version(&s).await.expect("version"), 0);
    assert_eq!(store.head_position().await.expect("head"), 0);
    let recorded = store
        .append(&s, ExpectedVersion::NoStream, events("E", 0, 1))
        .await
        .expect("append");
    assert_eq!(
        store.read_all(0, 10).await.expect("read")[0].event_id,
        recorded[0].event_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_log_in_repeatable_read_is_refused() {
    let store = common::fresh_store().await;
    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .expect("set isolation");
    let err = store
        .read_all_in(&mut tx, 0, 10)
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("READ COMMITTED") || format!("{err:?}").contains("READ COMMITTED"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_isolate_stores_and_names_are_validated() {
    let url = common::fresh_database().await;
    let a = PostgresStore::connect_with(&url, StoreOptions::new().schema("tenant_a"))
        .await
        .expect("store a");
    let b = PostgresStore::connect_with(&url, StoreOptions::new().schema("tenant_b"))
        .await
        .expect("store b");
    a.migrate().await.expect("migrating twice is a no-op");
    let s = StreamId::new("T", "same-id");
    a.append(&s, ExpectedVersion::NoStream, events("E", 0, 2))
        .await
        .expect("a");
    b.append(&s, ExpectedVersion::NoStream, events("E", 0, 1))
        .await
        .expect("b");
    assert_eq!(a.stream_version(&s).await.expect("a"), 2);
    assert_eq!(b.stream_version(&s).await.expect("b"), 1);
    assert_eq!(b.read_all(0, 10).await.expect("b log").len(), 1);
    for bad in ["Tenant", "a;drop", "pg_x", "1x", ""] {
        let err = PostgresStore::from_pool_with(a.pool().clone(), StoreOptions::new().schema(bad))
            .expect_err("invalid schema");
        assert!(matches!(err, Error::Invalid(_)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_an_error_not_a_skip() {
    let err = PostgresStore::connect_with(
        "postgres://postgres@127.0.0.1:1/postgres",
        StoreOptions::new().acquire_timeout(Duration::from_secs(1)),
    )
    .await
    .expect_err("nothing listens on port 1");
    assert!(matches!(err, Error::Backend(_)));
}
