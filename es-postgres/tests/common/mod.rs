//! Shared test setup: every test gets its own freshly created and migrated database on the
//! server named by `DATABASE_URL` (default: the local server). An unreachable server fails the
//! test: nothing here ever skips.

#![allow(dead_code, unreachable_pub)]

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use es_postgres::{PostgresStore, StoreOptions};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::Mutex;

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if base[..i].contains("//") && i > base.find("//").unwrap_or(0) + 1 => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

async fn admin() -> PgConnection {
    let url = database_url();
    PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be reachable at {url} for these tests: {e}"))
}

/// Drops test databases left by runs more than 15 minutes old, once per process.
async fn clean_stale(conn: &mut PgConnection) {
    static CLEANED: OnceLock<()> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::const_new(());
    let _guard = LOCK.lock().await;
    if CLEANED.get().is_some() {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'es_pg_t_%'")
            .fetch_all(&mut *conn)
            .await
            .expect("list test databases");
    for name in names {
        let stamp = name
            .strip_prefix("es_pg_t_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if now.saturating_sub(stamp) > 15 * 60 {
            let _ = sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
    let _ = CLEANED.set(());
}

/// A new, empty database; returns its URL.
pub async fn fresh_database() -> String {
    let mut conn = admin().await;
    clean_stale(&mut conn).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = format!("es_pg_t_{now}_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    with_database(&database_url(), &name)
}

/// A migrated store on its own fresh database.
pub async fn fresh_store() -> PostgresStore {
    fresh_store_with(StoreOptions::new(), 8).await
}

/// A migrated store with `options` and a pool of `connections` on its own fresh database.
pub async fn fresh_store_with(options: StoreOptions, connections: u32) -> PostgresStore {
    let url = fresh_database().await;
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect(&url)
        .await
        .expect("connect to the test database");
    let store = PostgresStore::from_pool_with(pool, options).expect("valid options");
    store.migrate().await.expect("migrate");
    store
}
