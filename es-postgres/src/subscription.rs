//! Subscriptions: catch up from a position, then follow the log as it grows.

use std::collections::VecDeque;
use std::time::Duration;

use es_core::{Error, EventStore, RecordedEvent};
use futures::stream::{self, BoxStream, StreamExt};
use sqlx::postgres::PgListener;

use crate::store::PostgresStore;

/// How a subscription reads and waits.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionOptions {
    /// Events per read (default 500).
    pub batch_size: usize,
    /// How long to wait for a notification before reading anyway (default 500 ms). A lost
    /// notification, or notifications switched off, delays delivery by at most this.
    pub poll_interval: Duration,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
        }
    }
}

struct Follow {
    store: PostgresStore,
    options: SubscriptionOptions,
    after: u64,
    buffer: VecDeque<RecordedEvent>,
    listener: Option<PgListener>,
    listen_failed: bool,
    backoff: bool,
}

impl Follow {
    /// Opens the listener (before reading, so a commit between the read and the wait still
    /// wakes it). Failures fall back to polling.
    async fn ensure_listener(&mut self) {
        if self.listener.is_some() || self.listen_failed {
            return;
        }
        let opened = async {
            let mut listener = PgListener::connect_with(self.store.pool()).await?;
            listener.listen(self.store.channel()).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match opened {
            Ok(listener) => self.listener = Some(listener),
            Err(e) => {
                tracing::warn!(error = %e, "subscription cannot LISTEN; polling only");
                self.listen_failed = true;
            }
        }
    }

    async fn wait(&mut self) {
        let poll = self.options.poll_interval;
        match self.listener.as_mut() {
            Some(listener) => match tokio::time::timeout(poll, listener.recv()).await {
                Ok(Ok(_)) => while listener.next_buffered().is_some() {},
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "subscription listener failed; reconnecting");
                    self.listener = None;
                    tokio::time::sleep(poll).await;
                }
                Err(_elapsed) => {}
            },
            None => tokio::time::sleep(poll).await,
        }
    }

    async fn next(mut self) -> Option<(Result<RecordedEvent, Error>, Self)> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.after = event.position;
                return Some((Ok(event), self));
            }
            if self.backoff {
                self.backoff = false;
                tokio::time::sleep(self.options.poll_interval).await;
            }
            self.ensure_listener().await;
            match self
                .store
                .read_all(self.after, self.options.batch_size)
                .await
            {
                Ok(page) if page.is_empty() => self.wait().await,
                Ok(page) => self.buffer.extend(page),
                Err(e) => {
                    self.backoff = true;
                    return Some((Err(e), self));
                }
            }
        }
    }
}

impl PostgresStore {
    /// Every event after position `after`, in position order, without end: first what is
    /// stored, then each event as it commits. Woken by the appends' `NOTIFY`, reading anyway
    /// every [`SubscriptionOptions::poll_interval`], so a lost notification only delays.
    /// A read error is yielded as an item and the subscription goes on after a pause.
    pub fn subscribe(&self, after: u64) -> BoxStream<'static, Result<RecordedEvent, Error>> {
        self.subscribe_with(after, SubscriptionOptions::default())
    }

    /// [`PostgresStore::subscribe`] with explicit options.
    pub fn subscribe_with(
        &self,
        after: u64,
        options: SubscriptionOptions,
    ) -> BoxStream<'static, Result<RecordedEvent, Error>> {
        let state = Follow {
            store: self.clone(),
            options: SubscriptionOptions {
                batch_size: options.batch_size.max(1),
                ..options
            },
            after,
            buffer: VecDeque::new(),
            listener: None,
            listen_failed: false,
            backoff: false,
        };
        stream::unfold(state, Follow::next).boxed()
    }

    /// [`PostgresStore::subscribe`] from the checkpoint of projection `name` (from the start
    /// if it has none).
    pub async fn subscribe_from_checkpoint(
        &self,
        name: &str,
    ) -> Result<BoxStream<'static, Result<RecordedEvent, Error>>, Error> {
        let after = self.load_checkpoint(name).await?.unwrap_or(0);
        Ok(self.subscribe(after))
    }
}
