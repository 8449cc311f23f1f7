//! How a consumer's checkpoint commits.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::checkpoint::{CheckpointStore, ParkedEvent};
use crate::error::Error;

/// How a consumer's checkpoint commits, and what its handler writes into.
///
/// The runtime opens a unit of work ([`Delivery::begin`], which also reads the checkpoint),
/// hands it to the handler, and commits it with the new checkpoint ([`Delivery::commit`]).
/// A backend's transactional delivery makes the unit of work a database transaction, so the
/// handler's writes and the checkpoint commit together: exactly once, even across crashes and
/// with several runners (`begin` locks the checkpoint). [`AtLeastOnce`] keeps the checkpoint
/// apart from the handler's effects.
pub trait Delivery: Send + Sync {
    /// The unit of work handed to the handler.
    type Tx: Send;

    /// Whether abandoning a unit of work undoes the handler's writes in it (a transaction).
    const ATOMIC: bool;

    /// Opens a unit of work and returns the consumer's checkpoint as of it (0: never ran).
    fn begin(&self, consumer: &str) -> impl Future<Output = Result<(Self::Tx, u64), Error>> + Send;

    /// Commits the unit of work and moves the checkpoint to `position` with it. `flush` asks
    /// for the checkpoint to be durable now (at the end of a run, when caught up); otherwise
    /// a delivery may defer it.
    fn commit(
        &self,
        tx: Self::Tx,
        consumer: &str,
        position: u64,
        flush: bool,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Abandons the unit of work.
    fn rollback(&self, tx: Self::Tx) -> impl Future<Output = Result<(), Error>> + Send;

    /// Parks an event, in the unit of work.
    fn park(
        &self,
        tx: &mut Self::Tx,
        consumer: &str,
        parked: &ParkedEvent,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Removes a parked event, in the unit of work; whether there was one.
    fn unpark(
        &self,
        tx: &mut Self::Tx,
        consumer: &str,
        position: u64,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// The events the consumer parked.
    fn parked(
        &self,
        consumer: &str,
    ) -> impl Future<Output = Result<Vec<ParkedEvent>, Error>> + Send;

    /// Makes the consumer's checkpoint durable if this delivery deferred it. The runtime calls
    /// it when a consumer is caught up, at the end of a catch-up, and when it stops.
    fn flush(&self, consumer: &str) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = consumer;
        async { Ok(()) }
    }

    /// Forgets anything cached about `consumer`'s checkpoint, so that the next
    /// [`Delivery::begin`] reads the stored one. The runtime calls it whenever it takes the
    /// consumer's lease: another runner may have moved the checkpoint meanwhile.
    fn refresh(&self, consumer: &str) {
        let _ = consumer;
    }
}

/// At-least-once delivery over any [`CheckpointStore`]: the checkpoint is saved after the
/// handler ran, at most once per interval while a run goes on (default 1 s), and always when
/// the consumer is caught up or stops. A crash repeats at most one interval's events, so the
/// handler must treat a repeat as a no-op.
///
/// With [`LocalCheckpoints`](crate::LocalCheckpoints), it is the delivery of views rebuilt at
/// every start, which write nothing to the event store.
#[derive(Debug, Clone)]
pub struct AtLeastOnce<C> {
    checkpoints: C,
    interval: Duration,
    progress: Arc<Mutex<HashMap<String, Progress>>>,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    position: u64,
    saved: u64,
    saved_at: Instant,
}

impl<C: CheckpointStore> AtLeastOnce<C> {
    /// At-least-once delivery saving checkpoints to `checkpoints` at most once a second.
    pub fn new(checkpoints: C) -> Self {
        Self {
            checkpoints,
            interval: Duration::from_secs(1),
            progress: Arc::default(),
        }
    }

    /// Sets how often a running consumer saves its checkpoint (zero: after every batch).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The checkpoint store.
    pub fn checkpoints(&self) -> &C {
        &self.checkpoints
    }

    fn cached(&self, consumer: &str) -> Option<Progress> {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(consumer)
            .copied()
    }

    fn remember(&self, consumer: &str, progress: Progress) {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(consumer.to_owned(), progress);
    }
}

impl<C: CheckpointStore> Delivery for AtLeastOnce<C> {
    type Tx = ();
    const ATOMIC: bool = false;

    async fn begin(&self, consumer: &str) -> Result<((), u64), Error> {
        if let Some(progress) = self.cached(consumer) {
            return Ok(((), progress.position));
        }
        let position = self
            .checkpoints
            .load_checkpoint(consumer)
            .await?
            .unwrap_or(0);
        self.remember(
            consumer,
            Progress {
                position,
                saved: position,
                saved_at: Instant::now(),
            },
        );
        Ok(((), position))
    }

    async fn commit(
        &self,
        _tx: (),
        consumer: &str,
        position: u64,
        flush: bool,
    ) -> Result<(), Error> {
        let mut progress = self.cached(consumer).unwrap_or(Progress {
            position,
            saved: u64::MAX,
            saved_at: Instant::now(),
        });
        progress.position = position;
        let due = flush || progress.saved_at.elapsed() >= self.interval;
        if due && progress.saved != position {
            self.checkpoints.save_checkpoint(consumer, position).await?;
            progress.saved = position;
            progress.saved_at = Instant::now();
        }
        self.remember(consumer, progress);
        Ok(())
    }

    async fn rollback(&self, _tx: ()) -> Result<(), Error> {
        Ok(())
    }

    async fn park(&self, _tx: &mut (), consumer: &str, parked: &ParkedEvent) -> Result<(), Error> {
        self.checkpoints.park(consumer, parked).await
    }

    async fn unpark(&self, _tx: &mut (), consumer: &str, position: u64) -> Result<bool, Error> {
        self.checkpoints.unpark(consumer, position).await
    }

    async fn parked(&self, consumer: &str) -> Result<Vec<ParkedEvent>, Error> {
        self.checkpoints.parked(consumer).await
    }

    async fn flush(&self, consumer: &str) -> Result<(), Error> {
        match self.cached(consumer) {
            Some(progress) if progress.saved != progress.position => {
                self.commit((), consumer, progress.position, true).await
            }
            _ => Ok(()),
        }
    }

    fn refresh(&self, consumer: &str) {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(consumer);
    }
}
