//! PostgreSQL test databases for the cross-crate tests: each test creates its own database
//! `es_it_<time>_<uuid>` on the server named by `DATABASE_URL` (default: the local server)
//! and drops it at the end; stale ones from crashed runs older than 15 minutes are dropped
//! when the next one is created. An unreachable server fails the tests: nothing here skips.
#![allow(dead_code, unreachable_pub)]

use std::time::{SystemTime, UNIX_EPOCH};

use es_core::Error;
use es_postgres::{PostgresStore, StoreOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use uuid::Uuid;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PREFIX: &str = "es_it_";

pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn url_for(db: &str) -> String {
    let url = admin_url();
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b.to_owned(), Some(q.to_owned())),
        None => (url, None),
    };
    let scheme_end = base.find("//").map_or(0, |i| i + 2);
    let base = match base[scheme_end..].find('/') {
        Some(i) => base[..scheme_end + i].to_owned(),
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

pub async fn admin() -> PgConnection {
    let url = admin_url();
    PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL must be reachable at {} for these tests: {e}",
            es_postgres::redact_url(&url)
        )
    })
}

/// A database of one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let mut conn = admin().await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'es\\_it\\_%'",
        )
        .fetch_all(&mut conn)
        .await
        .expect("list test databases");
        for name in stale {
            let stamp = name
                .trim_start_matches(PREFIX)
                .split('_')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            if now.saturating_sub(stamp) > 15 * 60 {
                // Best effort: another run may be dropping it too.
                let _ = sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        }
        let name = format!("{PREFIX}{now}_{}", Uuid::now_v7().simple());
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let url = url_for(&name);
        Self { name, url }
    }

    /// A migrated store on this database.
    pub async fn store(&self, options: StoreOptions) -> PostgresStore {
        PostgresStore::connect_with(&self.url, options)
            .await
            .expect("connect and migrate")
    }

    /// Terminates every backend connected to this database; returns how many.
    pub async fn kill_connections(&self) -> i64 {
        let mut conn = admin().await;
        sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()) t",
        )
        .bind(&self.name)
        .fetch_one(&mut conn)
        .await
        .expect("terminate backends")
    }

    /// Backends of this database that sit inside a transaction.
    pub async fn idle_in_transaction(&self) -> Vec<(i32, String)> {
        let mut conn = admin().await;
        sqlx::query_as(
            "SELECT pid, coalesce(query, '') FROM pg_stat_activity \
             WHERE datname = $1 AND state IN ('idle in transaction', 'idle in transaction (aborted)')",
        )
        .bind(&self.name)
        .fetch_all(&mut conn)
        .await
        .expect("read pg_stat_activity")
    }

    pub async fn drop_now(self) {
        let mut conn = admin().await;
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await
        .expect("drop the test database");
    }
}

/// Whether `error` is what a store reports when its connection is terminated under it: a lost
/// connection (I/O, protocol, SQLSTATE classes 08 and 57) reported as `Backend` or
/// `OutcomeUnknown`. Anything else is a bug the fault tests must not hide.
pub fn from_a_killed_connection(error: &Error) -> bool {
    let source = match error {
        Error::Backend(source) | Error::OutcomeUnknown(source) => source.as_ref(),
        _ => return false,
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
    while let Some(e) = cause {
        if let Some(sqlx_error) = e.downcast_ref::<sqlx::Error>() {
            return match sqlx_error {
                sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(db) => {
                    matches!(
                        db.code().as_deref().and_then(|c| c.get(..2)),
                        Some("08" | "57")
                    )
                }
                _ => false,
            };
        }
        cause = e.source();
    }
    false
}
