//! Waking followers: at once in this process, by `NOTIFY` in others, and by polling when a
//! notification is lost.
//!
//! - [`Signals`]: what an append does after it committed. It wakes this process's followers
//!   directly (an es-core [`WakeupSender`]) and asks the store's [`Notifier`] for a `NOTIFY`,
//!   which wakes other processes.
//! - [`Listener`]: one task per store that `LISTEN`s on the store's channel on a connection of
//!   its own and feeds the same [`WakeupSender`], so followers in this process also wake on
//!   appends made elsewhere. It reconnects with backoff after any failure and wakes everyone
//!   after each (re)connection, since notifications sent meanwhile are lost. Followers never
//!   depend on it: every [`Wakeup`] also polls.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use es_core::{Wakeup, WakeupSender};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::task::JoinHandle;

use crate::notifier::Notifier;

/// What an append does once it committed.
#[derive(Debug)]
pub(crate) struct Signals {
    pub(crate) local: WakeupSender,
    pub(crate) notifier: Option<Notifier>,
}

impl Signals {
    /// Wakes this process's followers now and other processes' by a coalesced `NOTIFY`.
    pub(crate) fn committed(&self) {
        self.local.notify();
        if let Some(notifier) = &self.notifier {
            notifier.poke();
        }
    }
}

/// The store's `LISTEN` task, started by the first [`Listener::wakeup`] and stopped when the
/// last clone of the store is dropped.
#[derive(Debug)]
pub(crate) struct Listener {
    options: Arc<PgConnectOptions>,
    channel: String,
    sender: WakeupSender,
    poll: Duration,
    listen: bool,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Listener {
    pub(crate) fn new(
        options: Arc<PgConnectOptions>,
        channel: String,
        sender: WakeupSender,
        poll: Duration,
        listen: bool,
    ) -> Self {
        Self {
            options,
            channel,
            sender,
            poll,
            listen,
            task: Mutex::new(None),
        }
    }

    /// A follower's wake-up: the shared signal, polling every `poll`. Starts the `LISTEN`
    /// task if it is not running (it ends with the runtime that ran it, as in tests).
    pub(crate) fn wakeup(&self) -> Wakeup {
        if self.listen
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
            if task.as_ref().is_none_or(JoinHandle::is_finished) {
                *task = Some(runtime.spawn(listen(
                    self.options.clone(),
                    self.channel.clone(),
                    self.sender.clone(),
                )));
            }
        }
        self.sender.subscribe(self.poll)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

async fn listen(options: Arc<PgConnectOptions>, channel: String, sender: WakeupSender) {
    // One connection of its own, so the store's pool keeps its full size; PgListener uses the
    // pool only to reconnect.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with((*options).clone());
    let mut failures = 0u32;
    loop {
        let opened = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match opened {
            Ok(mut listener) => {
                failures = 0;
                // Whatever committed while nobody listened.
                sender.notify();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => {
                            while listener.next_buffered().is_some() {}
                            sender.notify();
                        }
                        // The connection was lost and re-established: notifications in between
                        // are gone.
                        Ok(None) => sender.notify(),
                        Err(error) => {
                            tracing::warn!(%error, channel, "LISTEN failed; followers poll until it reconnects");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, channel, "cannot LISTEN; followers poll until it connects");
            }
        }
        failures = failures.saturating_add(1);
        let pause = Duration::from_millis(100)
            .saturating_mul(1u32 << failures.min(7))
            .min(Duration::from_secs(10));
        tokio::time::sleep(pause).await;
    }
}
