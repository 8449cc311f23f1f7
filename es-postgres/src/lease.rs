//! Single-active leases on PostgreSQL: a session-level advisory lock held on a dedicated
//! connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use es_core::{Error, Lease, Leases, check_name};
use futures::future::BoxFuture;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::{oneshot, watch};

use crate::error;
use crate::sql;
use crate::store::PostgresStore;

/// The advisory-lock key of lease `name` in `schema`: 64-bit FNV-1a over both, so two schemas
/// of one database have separate leases. (A collision of two names would only make their
/// consumers take turns.)
pub(crate) fn lease_key(schema: &str, name: &str) -> i64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let bytes = b"es-postgres lease"
        .iter()
        .chain([0u8].iter())
        .chain(schema.as_bytes())
        .chain([0u8].iter())
        .chain(name.as_bytes());
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_be_bytes(hash.to_be_bytes())
}

/// Dropped with the [`Lease`]: tells the keeper task to give the lock back.
struct Release {
    _stop: oneshot::Sender<()>,
}

impl PostgresStore {
    /// The server process (`pg_backend_pid`) holding lease `name` of this store's schema, if
    /// anyone does: for operators, and for tests that kill it.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<i32>, Error> {
        sqlx::query_scalar(sql::LEASE_HOLDER)
            .bind(lease_key(&self.inner.schema, name))
            .fetch_optional(&self.pool)
            .await
            .map_err(error::uncommitted)
    }
}

/// Leases by name, per schema: [`Leases::try_acquire`] takes the session-level advisory lock
/// of the name on a connection of its own (outside the pool), and a task keeps it: it checks
/// the connection every [`StoreOptions::lease_check_interval`](crate::StoreOptions::lease_check_interval)
/// and, if the connection died (the server restarted, a network failure,
/// `pg_terminate_backend`), flips [`Lease::is_held`] to false. The server releases the lock
/// as soon as the session ends, so another runner takes over at its next attempt, while the
/// old holder learns it lost the lease within one check interval and then stands back for two
/// check intervals (its `try_acquire` returns `None`), so that a healthy standby elsewhere,
/// polling more often than that, takes over rather than the runner whose connection failed. In that short overlap both
/// may run; [`ExactlyOnce`](crate::ExactlyOnce)'s checkpoint lock keeps them from applying a
/// batch twice. Dropping the lease closes the connection, which releases the lock. A standby
/// keeps one connection between its attempts, so waiting costs no new session per poll.
impl Leases for PostgresStore {
    fn try_acquire<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Lease>, Error>> {
        Box::pin(async move {
            check_name(name, "lease name")?;
            let key = lease_key(&self.inner.schema, name);
            // After losing this lease to a dead connection, stand back for a while: a standby
            // elsewhere takes over first (see the docs above).
            {
                let mut lost = self
                    .inner
                    .lease_lost
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match lost.get(name) {
                    Some(at) if at.elapsed() < self.inner.lease_check.saturating_mul(2) => {
                        return Ok(None);
                    }
                    Some(_) => {
                        lost.remove(name);
                    }
                    None => {}
                }
            }
            // A standby tries again every poll interval: it keeps its connection between tries
            // instead of opening one each time. A kept connection that died meanwhile is
            // replaced by a new one at once.
            let mut kept = self
                .inner
                .lease_standby
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(name);
            let (conn, taken) = loop {
                let reused = kept.is_some();
                let mut conn = match kept.take() {
                    Some(conn) => conn,
                    None => PgConnection::connect_with(&self.pool.connect_options())
                        .await
                        .map_err(error::acquire)?,
                };
                // A future dropped from here on drops `conn`: the session ends, and with it
                // the lock.
                match sqlx::query_scalar::<_, bool>(AssertSqlSafe(sql::TRY_LEASE))
                    .bind(key)
                    .fetch_one(&mut conn)
                    .await
                {
                    Ok(taken) => break (conn, taken),
                    Err(e) if reused => {
                        tracing::debug!(error = %e, lease = name, "a kept lease connection died; reconnecting");
                    }
                    Err(e) => return Err(error::uncommitted(e)),
                }
            };
            if !taken {
                self.inner
                    .lease_standby
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(name.to_owned(), conn);
                return Ok(None);
            }
            let (held, watching) = watch::channel(true);
            let (stop, stopped) = oneshot::channel();
            tokio::spawn(keep(
                conn,
                name.to_owned(),
                self.inner.lease_check,
                held,
                stopped,
                self.inner.lease_lost.clone(),
            ));
            Ok(Some(Lease::new(watching, Release { _stop: stop })))
        })
    }
}

/// Keeps a lease's connection until the lease is dropped, checking it every `every`; records
/// in `lost` when the connection died.
async fn keep(
    mut conn: PgConnection,
    name: String,
    every: Duration,
    held: watch::Sender<bool>,
    mut stopped: oneshot::Receiver<()>,
    lost: Arc<Mutex<HashMap<String, Instant>>>,
) {
    loop {
        tokio::select! {
            _ = &mut stopped => {
                // Released: ending the session gives the lock back.
                if let Err(e) = conn.close().await {
                    tracing::debug!(error = %e, lease = name, "closing a lease connection");
                }
                return;
            }
            () = tokio::time::sleep(every) => {
                let check = tokio::time::timeout(every, sqlx::query("SELECT 1").execute(&mut conn)).await;
                if !matches!(check, Ok(Ok(_))) {
                    tracing::warn!(lease = name, "lease connection lost; the lease is released");
                    lost.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(name, Instant::now());
                    held.send_replace(false);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lease_key;

    #[test]
    fn lease_keys_differ_by_schema_and_name_and_are_stable() {
        assert_ne!(lease_key("a", "x"), lease_key("b", "x"));
        assert_ne!(lease_key("a", "x"), lease_key("a", "y"));
        assert_ne!(lease_key("ab", "c"), lease_key("a", "bc"));
        assert_eq!(
            lease_key("public", "projector"),
            lease_key("public", "projector")
        );
    }
}
