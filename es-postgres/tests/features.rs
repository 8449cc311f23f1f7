//! The store's own features against the real server, each test on a fresh schema: typed
//! errors for bad rows and database refusals, the append codes, connection failures, the
//! append-only trigger, snapshots, checkpoints and parked events, wake-ups across processes,
//! filtered reads on indexes, inline projections and `PgTx`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use es_core::prelude::*;
use es_core::testing::conformance::{event, events};
use es_core::{
    BoxError, DecodeError, Error, LogFilter, ParkedEvent, Snapshot, StreamId, StreamQuery,
};
use es_postgres::{InlineProjection, PostgresStore, StoreOptions};
use futures::StreamExt;
use futures::future::BoxFuture;
use sqlx::{AssertSqlSafe, PgConnection};

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

/// `sql` with `{s}` replaced by the store's quoted schema.
fn q(store: &PostgresStore, sql: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(sql.replace("{s}", &format!("\"{}\"", store.schema())))
}

/// Writes a row behind the store's back, as old or foreign code might have.
async fn insert_raw(
    store: &PostgresStore,
    id: &str,
    name: &str,
    schema: i32,
    payload: &str,
    metadata: &str,
) {
    sqlx::query(q(
        store,
        "INSERT INTO {s}.events (event_id, aggregate_type, aggregate_id, version, event_name, \
         schema_version, payload, metadata, recorded_at) \
         VALUES ($1, 'Account', $2, 1, $3, $4, $5::jsonb, $6::jsonb, now())",
    ))
    .bind(uuid::Uuid::now_v7())
    .bind(id)
    .bind(name)
    .bind(schema)
    .bind(payload)
    .bind(metadata)
    .execute(store.pool())
    .await
    .expect("insert raw row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_payloads_are_decode_errors_naming_stream_and_version() {
    let store = common::fresh_store().await;
    insert_raw(
        &store,
        "bad-payload",
        "Deposited",
        1,
        r#"{"amount":"lots"}"#,
        "{}",
    )
    .await;
    insert_raw(&store, "unknown", "Withdrawn", 1, r#"{"amount":1}"#, "{}").await;
    insert_raw(&store, "too-new", "Deposited", 7, r#"{"amount":1}"#, "{}").await;
    let accounts = Repository::<Account, _>::new(store.clone());
    type Check = fn(&DecodeError) -> bool;
    let cases: [(&str, Check); 3] = [
        ("bad-payload", |e| matches!(e, DecodeError::Payload { .. })),
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
    ];
    for (id, check) in cases {
        match accounts.load(id).await {
            Err(Error::Decode {
                stream,
                version,
                source,
                ..
            }) => {
                assert_eq!((stream, version), (StreamId::new("Account", id), 1));
                assert!(check(&source), "{id}: unexpected {source}");
            }
            other => panic!(
                "{id}: expected a decode error, got {:?}",
                other.map(|l| l.version)
            ),
        }
    }
    let raw = store
        .read_stream(&StreamId::new("Account", "unknown"), &StreamQuery::all())
        .await
        .expect("the raw history is still readable");
    assert_eq!(raw[0].event_name, "Withdrawn");
}

/// Metadata of the wrong shape is `BadRow` naming the stream, version and position, on every
/// read path; a subscription reports it once and goes on after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_metadata_is_a_bad_row_and_followers_pass_it() {
    let store = common::fresh_store().await;
    let before = store
        .append(
            &StreamId::new("Account", "ok"),
            ExpectedVersion::NoStream,
            vec![event("E", 1)],
        )
        .await
        .expect("append before");
    insert_raw(
        &store,
        "meta",
        "Deposited",
        1,
        r#"{"amount":1}"#,
        r#"{"user_id": 5}"#,
    )
    .await;
    let after = store
        .append(
            &StreamId::new("Account", "ok"),
            ExpectedVersion::Exact(1),
            vec![event("E", 2)],
        )
        .await
        .expect("append after");
    let bad_stream = StreamId::new("Account", "meta");
    let is_bad_row = |e: &Error| {
        matches!(e, Error::BadRow { stream, version: 1, position: Some(p), reason }
            if *stream == bad_stream && *p > before[0].position && *p < after[0].position && reason.contains("metadata"))
    };
    let err = store
        .read_stream(&bad_stream, &StreamQuery::all())
        .await
        .expect_err("metadata of the wrong shape");
    assert!(is_bad_row(&err), "{err:?}");
    let err = store
        .read_log(0, 10, &LogFilter::all())
        .await
        .expect_err("the log read meets the bad row");
    assert!(is_bad_row(&err), "{err:?}");
    let mut sub = store.subscribe(0, LogFilter::all());
    let first = sub.next().await.expect("item").expect("the event before");
    assert_eq!(first.event_id, before[0].event_id);
    let bad = sub
        .next()
        .await
        .expect("item")
        .expect_err("the bad row, once");
    assert!(is_bad_row(&bad), "{bad:?}");
    let next = sub.next().await.expect("item").expect("the event after");
    assert_eq!(next.event_id, after[0].event_id);
}

/// The append's expected-version codes and result kinds, as the Rust side sends and reads
/// them, are what `es_append` implements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_codes_match_the_database() {
    let store = common::fresh_store().await;
    #[derive(sqlx::FromRow)]
    struct Row {
        kind: i8,
        ver: Option<i64>,
    }
    let call = |expected: i64, id: uuid::Uuid| {
        sqlx::query_as::<_, Row>(q(
            &store,
            "SELECT kind, ver FROM {s}.es_append('T', 's', $1, ARRAY[$2]::uuid[], ARRAY['E'], \
             ARRAY[1], ARRAY['{}'::jsonb], ARRAY['{}'::jsonb])",
        ))
        .bind(expected)
        .bind(id)
        .fetch_all(store.pool())
    };
    let kind = |rows: &[Row]| rows.first().map(|r| r.kind.to_ne_bytes()[0]);
    // -3 (StreamExists) on no stream: a conflict ('c') at version 0.
    let rows = call(-3, uuid::Uuid::now_v7()).await.expect("exists");
    assert_eq!((kind(&rows), rows[0].ver), (Some(b'c'), Some(0)));
    // 0 (NoStream) appends ('a').
    let id = uuid::Uuid::now_v7();
    let rows = call(0, id).await.expect("no stream");
    assert_eq!((kind(&rows), rows[0].ver), (Some(b'a'), Some(1)));
    // The same id again: stored ('d'), whatever the expectation.
    assert_eq!(kind(&call(7, id).await.expect("retry")), Some(b'd'));
    // -1 (Any) appends at the end.
    let rows = call(-1, uuid::Uuid::now_v7()).await.expect("any");
    assert_eq!((kind(&rows), rows[0].ver), (Some(b'a'), Some(2)));
    // 2 (Exact) holds; 1 does not.
    assert_eq!(
        kind(&call(2, uuid::Uuid::now_v7()).await.expect("exact")),
        Some(b'a')
    );
    let rows = call(1, uuid::Uuid::now_v7()).await.expect("stale");
    assert_eq!((kind(&rows), rows[0].ver), (Some(b'c'), Some(3)));
}

/// A refused connection fails at once (not after the acquire timeout), says why, and never
/// shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_fail_at_once_without_the_password() {
    let began = Instant::now();
    let err = PostgresStore::connect_with(
        "postgres://postgres:s3cret-pw@127.0.0.1:1/postgres",
        StoreOptions::new().acquire_timeout(Duration::from_secs(30)),
    )
    .await
    .expect_err("nothing listens on port 1");
    let took = began.elapsed();
    let text = format!("{err} / {err:?}");
    assert!(matches!(err, Error::Backend(_)), "{text}");
    assert!(took < Duration::from_secs(10), "failed after {took:?}");
    assert!(text.contains("refused"), "the cause is named: {text}");
    assert!(
        text.contains("postgres://postgres:***@127.0.0.1:1/postgres"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "the password leaked: {text}");
    let err = PostgresStore::connect_with("postgres://u:s3cret@[::1", StoreOptions::new())
        .await
        .expect_err("not a URL");
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("s3cret"));
}

/// The database refuses to change or remove stored events; erasure tooling gets through only
/// with the documented setting, in its own transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_append_only_in_the_database() {
    let store = common::fresh_store().await;
    let s = StreamId::new("T", "x");
    let stored = store
        .append(&s, ExpectedVersion::NoStream, events("E", 0, 2))
        .await
        .expect("append");
    for statement in [
        "UPDATE {s}.events SET payload = '{\"n\": 99}' WHERE version = 1",
        "DELETE FROM {s}.events WHERE version = 2",
        "TRUNCATE {s}.events",
    ] {
        match sqlx::query(q(&store, statement))
            .execute(store.pool())
            .await
        {
            Err(sqlx::Error::Database(db)) => {
                assert_eq!(db.code().as_deref(), Some("23001"), "{statement}: {db}");
                assert!(db.message().contains("append-only"), "{db}");
            }
            other => panic!("{statement} must be refused, got {other:?}"),
        }
    }
    let after = store
        .read_stream(&s, &StreamQuery::all())
        .await
        .expect("read");
    assert_eq!(after.len(), 2);
    assert!(es_core::same_json(
        after[0].payload.get(),
        stored[0].payload.get()
    ));

    let mut tx = store.begin().await.expect("begin");
    sqlx::query("SET LOCAL es.allow_event_changes = 'on'")
        .execute(tx.conn())
        .await
        .expect("the erasure setting");
    let changed = sqlx::query(q(
        &store,
        "UPDATE {s}.events SET payload = '{\"n\": 99}' WHERE version = 1",
    ))
    .execute(tx.conn())
    .await
    .expect("erasure tooling may change an event");
    assert_eq!(changed.rows_affected(), 1);
    tx.rollback().await.expect("rollback");
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
    let stream = StreamId::new("Account", "a-1");
    let (from_snapshot, rest) = store
        .load_stream(&stream, Some(1))
        .await
        .expect("load_stream");
    assert_eq!(from_snapshot.map(|s| s.version), Some(20));
    assert_eq!(
        rest.iter().map(|e| e.version).collect::<Vec<_>>(),
        [21, 22, 23, 24, 25]
    );
    let loaded = Repository::<Account, _>::new(store.clone())
        .load("a-1")
        .await
        .expect("load");
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

/// Two stores on one schema (two pools, as two processes) share checkpoints and parked
/// events; a handler's error text with a NUL is stored, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_and_parked_events_are_shared_across_processes() {
    let store = common::fresh_store().await;
    let other = common::reopen(&store, StoreOptions::new(), 2);
    store.save_checkpoint("p", 17).await.expect("save");
    assert_eq!(other.load_checkpoint("p").await.expect("load"), Some(17));
    other.save_checkpoint("p", 18).await.expect("save");
    assert_eq!(store.load_checkpoint("p").await.expect("load"), Some(18));
    let parked = ParkedEvent {
        position: 12,
        event_id: Some(uuid::Uuid::now_v7()),
        stream: StreamId::new("T", "x"),
        version: 3,
        event_name: "E".into(),
        error: "handler said \0 no".into(),
        attempts: 5,
        parked_at: chrono::Utc::now(),
    };
    store.park("p", &parked).await.expect("park");
    let listed = other.parked("p").await.expect("parked");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].error, "handler said \u{fffd} no");
    assert_eq!(
        (listed[0].position, listed[0].version, listed[0].attempts),
        (12, 3, 5)
    );
    assert!(other.unpark("p", 12).await.expect("unpark"));
    assert!(store.parked("p").await.expect("parked").is_empty());
}

/// Follows `follower`'s subscription while `writer` (another process) appends; returns how
/// long the live events took.
async fn follow_across(writer: &PostgresStore, follower: &PostgresStore) -> Duration {
    let s = StreamId::new("Sub", "s");
    writer
        .append(&s, ExpectedVersion::NoStream, events("E", 0, 5))
        .await
        .expect("before");
    let mut sub = follower.subscribe(0, LogFilter::all());
    for v in 1..=5 {
        let e = sub.next().await.expect("item").expect("event");
        assert_eq!(e.version, v, "catch-up in order");
    }
    let began = tokio::time::Instant::now();
    let appending = {
        let (writer, s) = (writer.clone(), s.clone());
        tokio::spawn(async move {
            writer
                .append(&s, ExpectedVersion::Exact(5), events("E", 5, 3))
                .await
                .expect("live append");
        })
    };
    for v in 6..=8 {
        let e = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("live event in time")
            .expect("item")
            .expect("event");
        assert_eq!(e.version, v, "live in order");
    }
    appending.await.expect("writer");
    began.elapsed()
}

/// Another process's appends wake a follower through `NOTIFY`/`LISTEN`, not its polling
/// (30 s here), also after the listening connection was killed (it reconnects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_are_woken_by_other_processes_and_listen_reconnects() {
    let writer = common::fresh_store().await;
    let follower = common::reopen(
        &writer,
        StoreOptions::new().poll_interval(Duration::from_secs(30)),
        4,
    );
    let took = follow_across(&writer, &follower).await;
    assert!(took < Duration::from_secs(20), "{took:?}");

    // Kill the follower's LISTEN connection; the listener must come back by itself.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1 AND query LIKE 'LISTEN%'",
    )
    .bind(writer.schema())
    .fetch_all(writer.pool())
    .await
    .expect("terminate the listener");
    assert_eq!(
        killed,
        [true],
        "one LISTEN connection per store handle that follows"
    );
    let s = StreamId::new("Sub", "s");
    let mut sub = follower.subscribe(8, LogFilter::all());
    let appending = {
        let (writer, s) = (writer.clone(), s.clone());
        tokio::spawn(async move {
            // Appends until the follower has seen one; each wakes it if it listens again.
            for v in 8u64.. {
                writer
                    .append(&s, ExpectedVersion::Exact(v), vec![event("E", v)])
                    .await
                    .expect("append");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let e = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("woken again after the listener reconnected, not after 30 s of polling")
        .expect("item")
        .expect("event");
    assert_eq!(e.version, 9);
    appending.abort();
}

/// With notifications off on both sides, a follower in another process still sees every
/// event, at its polling interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notifications_followers_poll() {
    let writer = common::fresh_store_with(StoreOptions::new().notify(false), 4).await;
    let follower = common::reopen(
        &writer,
        StoreOptions::new()
            .notify(false)
            .listen(false)
            .poll_interval(Duration::from_millis(100)),
        4,
    );
    follow_across(&writer, &follower).await;
}

/// A filter on a rare event name reads through the `(event_name, position)` index: the plan
/// of the per-name read uses it, and the page holds exactly the matching events with
/// `scanned_to` at the frontier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_reads_use_the_indexes() {
    let store = common::fresh_store().await;
    for chunk in 0..20u64 {
        store
            .append(
                &StreamId::new("Bulk", format!("b{chunk}")),
                ExpectedVersion::NoStream,
                events("Common", 0, 500),
            )
            .await
            .expect("bulk");
        store
            .append(
                &StreamId::new("Rare", format!("r{chunk}")),
                ExpectedVersion::NoStream,
                vec![event("Rare", chunk)],
            )
            .await
            .expect("rare");
    }
    sqlx::query(q(&store, "ANALYZE {s}.events"))
        .execute(store.pool())
        .await
        .expect("analyze");
    for (column, value, index) in [
        ("event_name", "Rare", "events_name_position_idx"),
        ("aggregate_type", "Rare", "events_type_position_idx"),
    ] {
        let plan: Vec<String> = sqlx::query_scalar(q(
            &store,
            &format!(
                "EXPLAIN SELECT * FROM {{s}}.events ev WHERE ev.{column} = $1 \
                 AND ev.position > 0 AND ev.position < 1000000 ORDER BY ev.position LIMIT 100"
            ),
        ))
        .bind(value)
        .fetch_all(store.pool())
        .await
        .expect("explain");
        assert!(
            plan.iter().any(|line| line.contains(index)),
            "{column}: {plan:#?}"
        );
    }
    let head = store.head_position().await.expect("head");
    let page = store
        .read_log(0, 100, &LogFilter::all().event_names(["Rare"]))
        .await
        .expect("read");
    assert_eq!(page.events.len(), 20);
    assert!(page.events.iter().all(|e| e.event_name == "Rare"));
    assert_eq!(
        page.scanned_to, head,
        "everything up to the head was considered"
    );
    let since = page.events[10].recorded_at;
    let by_type_since = store
        .read_log(
            0,
            100,
            &LogFilter::all()
                .aggregate_types(["Rare"])
                .recorded_from(since),
        )
        .await
        .expect("read");
    assert_eq!(
        by_type_since.events.len(),
        10,
        "events of a type from a time on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_log_in_repeatable_read_is_refused() {
    let store = common::fresh_store().await;
    let mut tx = store.begin().await.expect("begin");
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(tx.conn())
        .await
        .expect("set isolation");
    let err = store
        .read_log_in(tx.conn(), 0, 10, &LogFilter::all())
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("READ COMMITTED")),
        "{err:?}"
    );
    tx.rollback().await.expect("rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_isolate_stores_and_names_are_validated() {
    let a_schema = common::fresh_schema().await;
    let b_schema = common::fresh_schema().await;
    let url = common::test_url();
    let a = PostgresStore::connect_with(&url, StoreOptions::new().schema(&a_schema))
        .await
        .expect("store a");
    let b = PostgresStore::connect_with(&url, StoreOptions::new().schema(&b_schema))
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

/// Counts each stream's events in `<schema>.balances`; refuses on demand, or blocks in
/// `pg_sleep` (to be killed) on demand.
struct Balances {
    schema: String,
    mode: Arc<AtomicU64>,
}

const NORMAL: u64 = 0;
const REFUSE: u64 = 1;
const BLOCK: u64 = 2;

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
            match self.mode.load(Ordering::SeqCst) {
                REFUSE => return Err("inline projection refused".into()),
                BLOCK => {
                    sqlx::query("SELECT pg_sleep(60) /* blocked projection */")
                        .execute(&mut *tx)
                        .await?;
                }
                _ => {}
            }
            for e in events {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO \"{}\".balances AS b (id, events) VALUES ($1, 1) \
                     ON CONFLICT (id) DO UPDATE SET events = b.events + 1",
                    self.schema
                )))
                .bind(&e.stream.aggregate_id)
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        })
    }
}

async fn balances_store() -> (PostgresStore, Arc<AtomicU64>) {
    let plain = common::fresh_store().await;
    sqlx::query(q(
        &plain,
        "CREATE TABLE {s}.balances (id text PRIMARY KEY, events bigint NOT NULL)",
    ))
    .execute(plain.pool())
    .await
    .expect("table");
    let mode = Arc::new(AtomicU64::new(NORMAL));
    let schema = plain.schema().to_owned();
    let store = plain.with_inline_projection(Balances {
        schema,
        mode: mode.clone(),
    });
    (store, mode)
}

async fn balance(store: &PostgresStore, id: &str) -> i64 {
    sqlx::query_scalar(q(
        store,
        "SELECT coalesce((SELECT events FROM {s}.balances WHERE id = $1), 0)",
    ))
    .bind(id)
    .fetch_one(store.pool())
    .await
    .expect("read model")
}

/// The read model is up to date when the append returns; a refusing projection fails the
/// append with a handler error naming it, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_projection_reads_its_writes_and_fails_the_append_with_it() {
    let (store, mode) = balances_store().await;
    let s = StreamId::new("Acc", "x");
    store
        .append(&s, ExpectedVersion::NoStream, events("E", 0, 3))
        .await
        .expect("append");
    assert_eq!(balance(&store, "x").await, 3);
    mode.store(REFUSE, Ordering::SeqCst);
    let err = store
        .append(&s, ExpectedVersion::Exact(3), events("E", 3, 2))
        .await
        .expect_err("projection failure fails the append");
    assert!(
        matches!(&err, Error::Handler { consumer, .. } if consumer.contains("balances")),
        "{err:?}"
    );
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        3,
        "rolled back"
    );
    assert_eq!(balance(&store, "x").await, 3);
}

/// A connection killed while the inline projection runs: the append did not commit and says
/// so (`Backend`, never a handler error), nothing is stored, and the same events go in once
/// on retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_inside_an_inline_projection_is_a_backend_error() {
    let (store, mode) = balances_store().await;
    let s = StreamId::new("Acc", "k");
    mode.store(BLOCK, Ordering::SeqCst);
    let batch = events("E", 0, 2);
    let appending = {
        let (store, s, batch) = (store.clone(), s.clone(), batch.clone());
        tokio::spawn(async move { store.append(&s, ExpectedVersion::NoStream, batch).await })
    };
    let looking = Instant::now();
    let pid = loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = $1 AND state = 'active' AND query LIKE 'SELECT pg_sleep(60)%'",
        )
        .bind(store.schema())
        .fetch_optional(store.pool())
        .await
        .expect("find the projection");
        if let Some(pid) = pid {
            break pid;
        }
        assert!(
            looking.elapsed() < Duration::from_secs(30),
            "the projection never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    mode.store(NORMAL, Ordering::SeqCst);
    let _: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(store.pool())
        .await
        .expect("terminate");
    let result = appending.await.expect("task");
    assert!(
        matches!(result, Err(Error::Backend(_))),
        "the append never committed: {result:?}"
    );
    assert_eq!(store.stream_version(&s).await.expect("version"), 0);
    let recorded = store
        .append(&s, ExpectedVersion::NoStream, batch)
        .await
        .expect("retry");
    assert_eq!(recorded.len(), 2);
    assert_eq!(balance(&store, "k").await, 2);
}

/// Appends with `Any` racing on one stream through an inline projection all succeed, as
/// without one: versions are gapless and the read model counted each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inline_appends_racing_with_any_all_succeed() {
    let (store, _) = balances_store().await;
    let s = StreamId::new("Acc", "race");
    let mut tasks = Vec::new();
    for t in 0..12u64 {
        let (store, s) = (store.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                store
                    .append(&s, ExpectedVersion::Any, vec![event("E", t * 10 + i)])
                    .await
                    .expect("Any never conflicts");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let stored = store
        .read_stream(&s, &StreamQuery::all())
        .await
        .expect("read");
    assert_eq!(
        stored.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=60).collect::<Vec<_>>()
    );
    assert_eq!(balance(&store, "race").await, 60);
}

/// `PgTx`: a transaction in which a statement failed does not report a commit; a dropped
/// transaction closes its connection (none stays idle in a transaction); a rolled-back
/// append leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_tx_never_fakes_a_commit_nor_leaks_a_transaction() {
    let store = common::fresh_store().await;
    let s = StreamId::new("Tx", "t");

    let mut tx = store.begin().await.expect("begin");
    store
        .append_in(&mut tx, &s, ExpectedVersion::NoStream, events("E", 0, 2))
        .await
        .expect("append in tx");
    let _ = sqlx::query("SELECT 1/0")
        .execute(tx.conn())
        .await
        .expect_err("a failing statement");
    let err = tx
        .commit()
        .await
        .expect_err("an aborted transaction does not commit");
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert_eq!(store.stream_version(&s).await.expect("version"), 0);

    let mut tx = store.begin().await.expect("begin");
    store
        .append_in(&mut tx, &s, ExpectedVersion::NoStream, events("E", 0, 4))
        .await
        .expect("append in tx");
    tx.rollback().await.expect("rollback");
    assert_eq!(store.stream_version(&s).await.expect("version"), 0);
    assert_eq!(store.head_position().await.expect("head"), 0);

    let mut tx = store.begin().await.expect("begin");
    store
        .append_in(&mut tx, &s, ExpectedVersion::NoStream, events("E", 0, 1))
        .await
        .expect("append in tx");
    drop(tx);
    let waiting = Instant::now();
    while store.pool().num_idle() != store.pool().size() as usize {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "the pool never settled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let waiting = Instant::now();
    loop {
        let open = common::idle_in_transaction(store.schema()).await;
        if open.is_empty() {
            break;
        }
        // The server may take a moment to end the closed session.
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "left open: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        0,
        "the dropped transaction rolled back"
    );
    let recorded = store
        .append(&s, ExpectedVersion::NoStream, events("E", 0, 1))
        .await
        .expect("append");
    assert_eq!(
        store.read_all(0, 10).await.expect("read")[0].event_id,
        recorded[0].event_id
    );
}

/// Terminates every session with `application_name` `app`; how many.
async fn kill_sessions(app: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = $1",
    )
    .bind(app)
    .fetch_one(&common::pool("killer", 1))
    .await
    .expect("kill")
}

/// Reads (by stream, by event id, of the global log and its head) survive a server that just
/// killed every pooled connection: `connect_with`'s pool checks only connections idle for a
/// second, so the next reads are handed dead connections, and each must run again on a live
/// one instead of failing (a follower would otherwise report one error per dead connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_run_again_when_the_server_killed_their_connections() {
    let schema = common::fresh_schema().await;
    let app = format!("reads_{}", uuid::Uuid::now_v7().simple());
    let url = format!("{}?application_name={app}", common::test_url());
    let store =
        PostgresStore::connect_with(&url, StoreOptions::new().schema(&schema).max_connections(4))
            .await
            .expect("connect");
    let s = StreamId::new("Acc", "killed");
    let stored = store
        .append(&s, ExpectedVersion::NoStream, events("E", 0, 3))
        .await
        .expect("append");
    let all = StreamQuery::all();
    for round in 0..3 {
        // Fill the pool with connections, all idle a moment later.
        let reads = (0..4).map(|_| store.read_stream(&s, &all));
        for read in futures::future::join_all(reads).await {
            assert_eq!(read.expect("read before the kill").len(), 3);
        }
        let killed = kill_sessions(&app).await;
        assert!(killed >= 1, "round {round}: nothing to kill");
        assert_eq!(
            store
                .read_stream(&s, &StreamQuery::all())
                .await
                .expect("read_stream after the kill")
                .len(),
            3
        );
        assert_eq!(store.stream_version(&s).await.expect("version"), 3);
        let found = store
            .read_event(stored[1].event_id)
            .await
            .expect("read_event after the kill");
        assert_eq!(found.map(|e| e.version), Some(2));
        let (_, loaded) = store.load_stream(&s, None).await.expect("load_stream");
        assert_eq!(loaded.len(), 3);
        assert!(store.load_snapshot(&s).await.expect("snapshot").is_none());
        // The global log, on a pool of dead connections again.
        let reads = (0..4).map(|_| store.read_stream(&s, &all));
        futures::future::join_all(reads).await;
        let killed = kill_sessions(&app).await;
        assert!(
            killed >= 1,
            "round {round}: nothing to kill before the log reads"
        );
        for _ in 0..4 {
            let page = store
                .read_log(0, 10, &LogFilter::all())
                .await
                .expect("read_log after the kill");
            assert_eq!(page.events.len(), 3);
            assert_eq!(
                store.head_position().await.expect("head after the kill"),
                stored[2].position
            );
        }
    }
}

/// Index scans of the stream-version key in the current transaction of `tx`: the look for an
/// expected version is one, the unique check of an insert is none.
async fn version_key_scans(tx: &mut es_postgres::PgTx, store: &PostgresStore) -> i64 {
    sqlx::query_scalar(
        "SELECT pg_stat_get_xact_numscans( \
           format('%I.events_stream_version_key', $1::text)::regclass)",
    )
    .bind(store.schema())
    .fetch_one(tx.conn())
    .await
    .expect("index statistics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expected_version_the_store_saw_committed_is_not_looked_for_again() {
    let store = common::fresh_store().await;
    let seen = StreamId::new("Account", "seen");
    let unseen = StreamId::new("Account", "unseen");
    store
        .append(&seen, ExpectedVersion::NoStream, events("Deposited", 0, 2))
        .await
        .expect("append");
    // Written by another process: this store has not seen it.
    let other = common::reopen(&store, StoreOptions::new().schema(store.schema()), 2);
    other
        .append(
            &unseen,
            ExpectedVersion::NoStream,
            events("Deposited", 10, 2),
        )
        .await
        .expect("append elsewhere");

    let mut tx = store.begin().await.expect("begin");
    store
        .append_in(
            &mut tx,
            &seen,
            ExpectedVersion::Exact(2),
            vec![event("Deposited", 2)],
        )
        .await
        .expect("append at the version it wrote");
    assert_eq!(
        version_key_scans(&mut tx, &store).await,
        0,
        "no look for version 2"
    );
    store
        .append_in(
            &mut tx,
            &unseen,
            ExpectedVersion::Exact(2),
            vec![event("Deposited", 12)],
        )
        .await
        .expect("append at a version it never saw");
    assert_eq!(
        version_key_scans(&mut tx, &store).await,
        1,
        "one look for version 2"
    );
    tx.commit().await.expect("commit");

    // A version beyond what it saw is looked for, and a gap refused.
    let refused = store
        .append(
            &seen,
            ExpectedVersion::Exact(5),
            vec![event("Deposited", 3)],
        )
        .await;
    assert!(
        matches!(refused, Err(Error::Conflict { actual: 3, .. })),
        "{refused:?}"
    );
    // Stale knowledge (another process appended since) is caught by the unique key.
    other
        .append(
            &seen,
            ExpectedVersion::Exact(3),
            vec![event("Deposited", 4)],
        )
        .await
        .expect("append elsewhere");
    let stale = store
        .append(
            &seen,
            ExpectedVersion::Exact(3),
            vec![event("Deposited", 5)],
        )
        .await;
    assert!(
        matches!(stale, Err(Error::Conflict { actual: 4, .. })),
        "{stale:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_appended_in_a_rolled_back_transaction_are_not_taken_as_known() {
    let store = common::fresh_store().await;
    let stream = StreamId::new("Account", "rolled-back");
    let mut tx = store.begin().await.expect("begin");
    store
        .append_in(
            &mut tx,
            &stream,
            ExpectedVersion::NoStream,
            events("Deposited", 0, 3),
        )
        .await
        .expect("append in the transaction");
    tx.rollback().await.expect("rollback");
    // Taken as known, version 3 would not be looked for and version 4 would land after a gap.
    let refused = store
        .append(
            &stream,
            ExpectedVersion::Exact(3),
            vec![event("Deposited", 3)],
        )
        .await;
    assert!(
        matches!(refused, Err(Error::Conflict { actual: 0, .. })),
        "{refused:?}"
    );
    assert_eq!(store.stream_version(&stream).await.expect("version"), 0);
}

/// How each statement prepared in the one session of `store` (a pool of one connection)
/// was planned: (statement, generic plans, custom plans).
async fn plans(store: &PostgresStore) -> Vec<(String, i64, i64)> {
    sqlx::query_as("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
        .fetch_all(store.pool())
        .await
        .expect("prepared statements")
}

/// Fails for a statement run more than five times that PostgreSQL still planned for its
/// parameters' values (a custom plan) after the fifth: it plans it on every execution.
fn assert_planned_once(what: &str, plans: Vec<(String, i64, i64)>) {
    for (statement, generic, custom) in plans {
        if generic + custom > 5 {
            assert!(
                custom <= 5,
                "{what}: planned for its values on {custom} of {} executions: {statement}",
                custom + generic
            );
        }
    }
}

/// Fills the events table of `store` with 50,000 rows: the planner weighs a generic plan's
/// look-ups by the table's size.
async fn fill(store: &PostgresStore) {
    sqlx::query(q(
        store,
        "INSERT INTO {s}.events (event_id, aggregate_type, aggregate_id, version, event_name, \
           schema_version, payload, metadata, recorded_at) \
         SELECT gen_random_uuid(), 'Filler', 'filler-' || g, 1, 'Filler', 1, '{}', '{}', now() \
         FROM generate_series(1, 50000) g",
    ))
    .execute(store.pool())
    .await
    .expect("filler");
}

/// A store on one connection, so that every statement runs in one session.
fn one_session(store: &PostgresStore) -> PostgresStore {
    common::reopen(store, StoreOptions::new().notify(false).group_commit(0), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_statements_are_planned_once_not_on_every_execution() {
    let store = common::fresh_store().await;
    fill(&store).await;
    for (kind, batch) in (0..4).flat_map(|kind| [(kind, 1), (kind, 2)]) {
        // A session of its own per kind of append, each kind as an application sends it
        // again and again.
        let one = one_session(&store);
        let stream = StreamId::new("Account", format!("kind-{kind}-{batch}"));
        for i in 0..12u64 {
            let expected = match kind {
                0 if i == 0 => ExpectedVersion::NoStream,
                0 => ExpectedVersion::Exact(i * batch),
                1 => ExpectedVersion::Any,
                2 if i == 0 => ExpectedVersion::Any,
                2 => ExpectedVersion::StreamExists,
                _ => {
                    // At a version written elsewhere: looked for.
                    let theirs = StreamId::new("Account", format!("theirs-{batch}-{i}"));
                    store
                        .append(
                            &theirs,
                            ExpectedVersion::NoStream,
                            events("Deposited", 0, 1),
                        )
                        .await
                        .expect("append elsewhere");
                    one.append(
                        &theirs,
                        ExpectedVersion::Exact(1),
                        events("Deposited", 1, batch),
                    )
                    .await
                    .expect("append at a version written elsewhere");
                    continue;
                }
            };
            one.append(&stream, expected, events("Deposited", i, batch))
                .await
                .expect("append");
        }
        let plans = plans(&one).await;
        assert!(
            plans
                .iter()
                .any(|(statement, ..)| statement.contains("INSERT INTO")),
            "kind {kind}: no append statement prepared"
        );
        assert_planned_once(&format!("kind {kind}, {batch} events"), plans);
    }
}

/// An account that never snapshots.
#[derive(Aggregate, Default, Serialize, Deserialize)]
#[aggregate(name = "Wallet", events(Deposited))]
pub struct Wallet {
    balance: i64,
}

impl Apply<Deposited> for Wallet {
    fn apply(&mut self, e: &Deposited) {
        self.balance += e.amount;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_of_a_command_is_planned_once() {
    let store = common::fresh_store().await;
    fill(&store).await;
    // A session of its own per aggregate, each as an application sends its commands.
    let snapshotting = one_session(&store);
    let accounts = Repository::<Account, _>::new(snapshotting.clone()).without_state_cache();
    let never = one_session(&store);
    let wallets = Repository::<Wallet, _>::new(never.clone()).without_state_cache();
    for amount in 1..=12 {
        accounts
            .execute("a", Metadata::by_user("u"), |_| {
                Ok::<_, std::convert::Infallible>(Deposited { amount })
            })
            .await
            .expect("snapshotting aggregate");
        wallets
            .execute("w", Metadata::by_user("u"), |_| {
                Ok::<_, std::convert::Infallible>(Deposited { amount })
            })
            .await
            .expect("aggregate without snapshots");
    }
    assert_planned_once("snapshotting aggregate", plans(&snapshotting).await);
    assert_planned_once("aggregate without snapshots", plans(&never).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_statements_are_planned_once() {
    let store = common::fresh_store().await;
    fill(&store).await;
    // One lane on one connection: concurrent appends queue and leave as groups.
    let one = common::reopen(&store, StoreOptions::new().notify(false).group_commit(1), 1);
    for round in 0..12u64 {
        let appends = (0..6).map(|writer| {
            let one = one.clone();
            async move {
                let stream = StreamId::new("Account", format!("group-{writer}"));
                let expected = match round {
                    0 => ExpectedVersion::NoStream,
                    n => ExpectedVersion::Exact(n),
                };
                one.append(&stream, expected, vec![event("Deposited", round)])
                    .await
                    .expect("append");
            }
        });
        futures::future::join_all(appends).await;
    }
    let plans = plans(&one).await;
    assert!(
        plans.iter().any(
            |(statement, generic, custom)| statement.starts_with("WITH req")
                && generic + custom > 5
        ),
        "the appends went out as groups: {plans:#?}"
    );
    assert_planned_once("group commit", plans);
}
