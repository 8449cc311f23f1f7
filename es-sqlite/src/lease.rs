//! Single-active leases across processes: a row per lease with its holder and an expiry that
//! a heartbeat keeps in the future.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use es_core::{Error, Lease, Leases, check_name};
use futures::future::BoxFuture;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::SqliteStore;
use crate::sql;

/// Milliseconds since the Unix epoch: lease expiries compare wall clocks of processes on
/// one machine (SQLite's WAL mode needs every process on the same host).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Gives the lease back when the [`Lease`] is dropped: ends the heartbeat, which deletes
/// the row.
struct Release {
    _stop: oneshot::Sender<()>,
}

impl Leases for SqliteStore {
    /// Takes lease `name` if no holder's expiry is in the future. A heartbeat task renews it
    /// every quarter of [`StoreOptions::lease_ttl`](crate::StoreOptions::lease_ttl); if a
    /// renewal finds the row taken over, or cannot be written before three quarters of the
    /// TTL have passed since the last one, [`Lease::is_held`] turns false. Dropping the lease
    /// deletes the row (in the background; [`Lease::release`] waits for it), so another
    /// process can take it at once; a process that dies leaves it to expire.
    fn try_acquire<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Lease>, Error>> {
        Box::pin(async move {
            check_name(name, "lease name")?;
            let ttl = self.inner.options.lease_ttl;
            let holder = Uuid::now_v7();
            let sent = Instant::now();
            let now = now_ms();
            let taken = self
                .write_one(|| {
                    sqlx::query(sql::TAKE_LEASE)
                        .bind(name)
                        .bind(holder)
                        .bind(now.saturating_add(ms(ttl)))
                        .bind(now)
                })
                .await?;
            if taken == 0 {
                return Ok(None);
            }
            let (held_tx, held) = watch::channel(true);
            let (stop, stopped) = oneshot::channel();
            let (released_tx, released) = oneshot::channel::<()>();
            let beat = heartbeat(
                self.clone(),
                name.to_owned(),
                holder,
                sent + ttl,
                held_tx,
                stopped,
            );
            tokio::spawn(async move {
                beat.await;
                let _ = released_tx.send(());
            });
            let lease = Lease::new(held, Release { _stop: stop }).with_release_done(async move {
                let _ = released.await;
            });
            Ok(Some(lease))
        })
    }
}

/// Renews the lease until it is dropped (then deletes its row) or lost (then says so).
async fn heartbeat(
    store: SqliteStore,
    name: String,
    holder: Uuid,
    mut expires: Instant,
    held: watch::Sender<bool>,
    mut stopped: oneshot::Receiver<()>,
) {
    let ttl = store.inner.options.lease_ttl;
    let margin = ttl / 4;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            () = tokio::time::sleep(ttl / 4) => {}
        }
        let sent = Instant::now();
        let deadline = expires.checked_sub(margin).unwrap_or(sent);
        let now = now_ms();
        let renewal = store.write_one(|| {
            sqlx::query(sql::RENEW_LEASE)
                .bind(&name)
                .bind(holder)
                .bind(now.saturating_add(ms(ttl)))
        });
        let outcome = tokio::select! {
            _ = &mut stopped => break,
            outcome = tokio::time::timeout_at(deadline.into(), renewal) => outcome,
        };
        match outcome {
            Ok(Ok(1)) => expires = sent + ttl,
            Ok(Ok(_)) => {
                tracing::warn!(lease = %name, "lease taken over by another holder");
                held.send_replace(false);
                return;
            }
            Ok(Err(error)) if Instant::now() < deadline => {
                tracing::warn!(lease = %name, %error, "cannot renew the lease; trying again");
            }
            Ok(Err(error)) => {
                tracing::warn!(lease = %name, %error, "cannot renew the lease in time; giving it up");
                held.send_replace(false);
                return;
            }
            Err(_elapsed) => {
                tracing::warn!(lease = %name, "lease renewal did not finish in time; giving it up");
                held.send_replace(false);
                return;
            }
        }
    }
    // Dropped by its holder: give it back now rather than at expiry (best effort).
    let released = store
        .write_one(|| sqlx::query(sql::RELEASE_LEASE).bind(&name).bind(holder))
        .await;
    if let Err(error) = released {
        tracing::debug!(lease = %name, %error, "lease not deleted; it expires instead");
    }
}
