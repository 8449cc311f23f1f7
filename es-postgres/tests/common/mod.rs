//! Shared test setup: every test gets a fresh schema in the test database `es_postgres_tests`
//! on the server named by `DATABASE_URL` (default: the local server), created and migrated,
//! with a pool whose connections carry the schema's name as `application_name` (so a test can
//! find exactly its own backends in `pg_stat_activity`). An unreachable server fails the
//! test: nothing here ever skips.

#![allow(dead_code, unreachable_pub)]

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use es_core::{BoxError, RecordedEvent};
use es_postgres::{InlineProjection, PostgresStore, StoreOptions};
use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use tokio::sync::Mutex;

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const TEST_DATABASE: &str = "es_postgres_tests";

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn server_options() -> PgConnectOptions {
    PgConnectOptions::from_str(&database_url())
        .unwrap_or_else(|e| panic!("DATABASE_URL is not a PostgreSQL URL: {e}"))
}

/// Connection options for the test database, tagged with `application_name`.
pub fn test_options(application_name: &str) -> PgConnectOptions {
    server_options()
        .database(TEST_DATABASE)
        .application_name(application_name)
}

/// A URL of the test database (for `PostgresStore::connect_with`).
pub fn test_url() -> String {
    let url = database_url();
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b.to_owned(), Some(q.to_owned())),
        None => (url.clone(), None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => base[..scheme_end + i].to_owned(),
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{TEST_DATABASE}?{q}"),
        None => format!("{base}/{TEST_DATABASE}"),
    }
}

/// Creates the test database once per process (tolerating a concurrent creator) and drops
/// schemas that earlier runs left behind more than 15 minutes ago.
async fn prepare() {
    static READY: OnceLock<()> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::const_new(());
    let _guard = LOCK.lock().await;
    if READY.get().is_some() {
        return;
    }
    let mut admin = PgConnection::connect_with(&server_options())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL must be reachable at {} for these tests: {e}",
                es_postgres::redact_url(&database_url())
            )
        });
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(TEST_DATABASE)
            .fetch_one(&mut admin)
            .await
            .expect("look up the test database");
    if !exists {
        match sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {TEST_DATABASE}")))
            .execute(&mut admin)
            .await
        {
            Ok(_) => {}
            // Another test process created it first.
            Err(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => panic!("create the test database: {e}"),
        }
    }
    let mut conn = PgConnection::connect_with(&test_options("es_pg_test_setup"))
        .await
        .expect("connect to the test database");
    let now = unix_now();
    let schemas: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 't\\_%'")
            .fetch_all(&mut conn)
            .await
            .expect("list test schemas");
    for schema in schemas {
        let stamp = schema
            .strip_prefix("t_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if now.saturating_sub(stamp) > 15 * 60 {
            let _ = sqlx::query(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&mut conn)
            .await;
        }
    }
    let _ = READY.set(());
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh, unused schema name (not created yet).
pub async fn fresh_schema() -> String {
    prepare().await;
    format!("t_{}_{}", unix_now(), uuid::Uuid::now_v7().simple())
}

/// A pool of `connections` to the test database whose connections carry `application_name`.
pub fn pool(application_name: &str, connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(60))
        .connect_lazy_with(test_options(application_name))
}

/// A migrated store on a fresh schema whose connections do not wait for the WAL flush at
/// commit (`synchronous_commit = off`): for the cancellation storms, whose operations must
/// finish within a few milliseconds often enough to be acknowledged as well as dropped.
pub async fn fresh_fast_store(options: StoreOptions, connections: u32) -> PostgresStore {
    let schema = fresh_schema().await;
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(60))
        .connect_lazy_with(test_options(&schema).options([("synchronous_commit", "off")]));
    let store =
        PostgresStore::from_pool_with(pool, options.schema(&schema)).expect("valid options");
    store.migrate().await.expect("migrate");
    store
}

/// A migrated store on a fresh schema.
pub async fn fresh_store() -> PostgresStore {
    fresh_store_with(StoreOptions::new(), 8).await
}

/// A migrated store on a fresh schema with `options` (its schema replaced) and a pool of
/// `connections`.
pub async fn fresh_store_with(options: StoreOptions, connections: u32) -> PostgresStore {
    let schema = fresh_schema().await;
    let store = PostgresStore::from_pool_with(pool(&schema, connections), options.schema(&schema))
        .expect("valid options");
    store.migrate().await.expect("migrate");
    store
}

/// A second handle onto `store`'s schema with a pool of its own (same connection options):
/// another "process".
pub fn reopen(store: &PostgresStore, options: StoreOptions, connections: u32) -> PostgresStore {
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(60))
        .connect_lazy_with((*store.pool().connect_options()).clone());
    PostgresStore::from_pool_with(pool, options.schema(store.schema())).expect("valid options")
}

/// The inline projection the conformance suite runs with: counts each stream's events and
/// keeps its last version in `<schema>.inline_streams`, refusing a version that does not
/// follow the last one (so a double application or a gap fails the append).
pub struct StreamCounts {
    pub schema: String,
}

impl StreamCounts {
    /// Creates the table in `store`'s schema and returns the projection.
    pub async fn install(store: &PostgresStore) -> Self {
        let schema = store.schema().to_owned();
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE \"{schema}\".inline_streams ( \
               aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
               events bigint NOT NULL, last_version bigint NOT NULL, \
               PRIMARY KEY (aggregate_type, aggregate_id))"
        )))
        .execute(store.pool())
        .await
        .expect("create the inline read model");
        Self { schema }
    }
}

impl InlineProjection for StreamCounts {
    fn name(&self) -> &str {
        "stream-counts"
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            for e in events {
                let version = i64::try_from(e.version)?;
                let done = sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO \"{}\".inline_streams AS t VALUES ($1, $2, 1, $3) \
                     ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
                       SET events = t.events + 1, last_version = excluded.last_version \
                       WHERE t.last_version = excluded.last_version - 1",
                    self.schema
                )))
                .bind(&e.stream.aggregate_type)
                .bind(&e.stream.aggregate_id)
                .bind(version)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(
                        format!("{} version {} does not follow", e.stream, e.version).into(),
                    );
                }
            }
            Ok(())
        })
    }
}

/// A migrated store on a fresh schema with the [`StreamCounts`] inline projection.
pub async fn fresh_inline_store() -> PostgresStore {
    let store = fresh_store().await;
    let counts = StreamCounts::install(&store).await;
    store.with_inline_projection(counts)
}

/// [`reopen`] with the [`StreamCounts`] inline projection (its table already exists).
pub fn reopen_inline(store: &PostgresStore) -> PostgresStore {
    reopen(store, StoreOptions::new(), 8).with_inline_projection(StreamCounts {
        schema: store.schema().to_owned(),
    })
}

/// Backends of this test (by `application_name`) that sit inside a transaction.
pub async fn idle_in_transaction(application_name: &str) -> Vec<(i32, String)> {
    let mut conn = PgConnection::connect_with(&test_options("es_pg_test_observer"))
        .await
        .expect("connect the observer");
    sqlx::query_as(
        "SELECT pid, coalesce(query, '') FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1 \
           AND state IN ('idle in transaction', 'idle in transaction (aborted)')",
    )
    .bind(application_name)
    .fetch_all(&mut conn)
    .await
    .expect("read pg_stat_activity")
}

/// How many backends of this test (by `application_name`) exist.
pub async fn backends(application_name: &str) -> i64 {
    let mut conn = PgConnection::connect_with(&test_options("es_pg_test_observer"))
        .await
        .expect("connect the observer");
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(application_name)
    .fetch_one(&mut conn)
    .await
    .expect("read pg_stat_activity")
}

/// A small xorshift generator for tests (no dependency).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn from_clock() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64);
        Self::new(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
