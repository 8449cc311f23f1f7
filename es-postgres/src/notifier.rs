//! Wakes subscriptions after appends commit, without putting `NOTIFY` in the append's
//! transaction.
//!
//! PostgreSQL serialises the commits of every transaction that sent a notification (a
//! cluster-wide lock held through the commit's WAL flush), so notifying inside appends keeps
//! concurrent writers from sharing group commits. Instead, a successful append pokes this
//! notifier, and one background task per store sends `NOTIFY` on its own pooled connection.
//! Pokes coalesce: while a `NOTIFY` is being sent, and for a short interval after it, any
//! number of pokes leave exactly one more pending. So every append is followed by at least one
//! `NOTIFY` that starts after it committed, at most `interval` later than it would otherwise,
//! and a steady stream of appends costs at most one notification per interval.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{AssertSqlSafe, PgPool};
use tokio::sync::mpsc;

/// The sending side of one store's notification task. The task ends when this is dropped.
#[derive(Debug)]
pub(crate) struct Notifier {
    pool: PgPool,
    sql: Arc<str>,
    channel: String,
    interval: Duration,
    wake: Mutex<Option<mpsc::Sender<()>>>,
}

impl Notifier {
    pub(crate) fn new(pool: PgPool, sql: Arc<str>, channel: String, interval: Duration) -> Self {
        Self {
            pool,
            sql,
            channel,
            interval,
            wake: Mutex::new(None),
        }
    }

    /// Asks for a `NOTIFY` after everything committed so far. Never blocks and never fails
    /// the caller: a notification is only a hint, subscriptions also poll.
    pub(crate) fn poke(&self) {
        let mut wake = self
            .wake
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(sender) = wake.as_ref() {
            match sender.try_send(()) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(())) => return,
                // The task's runtime shut down (a test's runtime, say): start a new one.
                Err(mpsc::error::TrySendError::Closed(())) => {}
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no tokio runtime to send NOTIFY from; subscribers will poll");
            return;
        };
        let (sender, receiver) = mpsc::channel(1);
        // A fresh channel of capacity 1 has room.
        let _ = sender.try_send(());
        runtime.spawn(send_notifications(
            self.pool.clone(),
            self.sql.clone(),
            self.channel.clone(),
            self.interval,
            receiver,
        ));
        *wake = Some(sender);
    }
}

async fn send_notifications(
    pool: PgPool,
    sql: Arc<str>,
    channel: String,
    interval: Duration,
    mut receiver: mpsc::Receiver<()>,
) {
    while receiver.recv().await.is_some() {
        if let Err(e) = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(&channel)
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "NOTIFY failed; subscribers will poll");
        }
        if !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
    }
}
