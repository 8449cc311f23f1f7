//! Notices commits made by other connections (other processes, or other stores on the same
//! file) and wakes this store's followers.

use std::time::Duration;

use es_core::WakeupSender;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

use crate::sql;

/// A task polling `PRAGMA data_version` on its own connection; stopped when dropped.
#[derive(Debug)]
pub(crate) struct Watcher(tokio::task::JoinHandle<()>);

impl Watcher {
    /// Checks every `interval`; each change of the file's data version wakes `wakeup`.
    ///
    /// `PRAGMA data_version` changes, as seen by one connection, whenever any other
    /// connection commits: one cheap statement per interval tells every follower of this
    /// store that another process appended, instead of each follower reading the log.
    pub(crate) fn spawn(
        options: SqliteConnectOptions,
        interval: Duration,
        wakeup: WakeupSender,
    ) -> Self {
        Self(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut conn: Option<SqliteConnection> = None;
            let mut last: Option<i64> = None;
            loop {
                ticker.tick().await;
                if conn.is_none() {
                    conn = SqliteConnection::connect_with(&options).await.ok();
                    last = None;
                }
                let Some(open) = conn.as_mut() else { continue };
                match sqlx::query_scalar::<_, i64>(sql::DATA_VERSION)
                    .fetch_one(open)
                    .await
                {
                    Ok(version) => {
                        // The first read on a connection is the baseline: it wakes once,
                        // after the read, for whatever committed before it (a follower
                        // woken now reads all of that); later commits change the version.
                        if last != Some(version) {
                            wakeup.notify();
                        }
                        last = Some(version);
                    }
                    Err(_) => conn = None,
                }
            }
        }))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}
