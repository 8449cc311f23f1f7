//! Projections: read models fed by the global log, resumable from a checkpoint.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::future;

use crate::envelope::RecordedEvent;
use crate::error::{BoxError, Error};
use crate::store::EventStore;

/// A read model built from the global log.
///
/// ```
/// use es_core::{BoxError, Projection, RecordedEvent};
///
/// #[derive(Default)]
/// struct EventCount(u64);
///
/// impl Projection for EventCount {
///     fn name(&self) -> &str { "event-count" }
///     async fn handle(&mut self, _event: &RecordedEvent) -> Result<(), BoxError> {
///         self.0 += 1;
///         Ok(())
///     }
///     async fn reset(&mut self) -> Result<(), BoxError> {
///         self.0 = 0;
///         Ok(())
///     }
/// }
///
/// let mut count = EventCount::default();
/// # futures::executor::block_on(async {
/// # let event: RecordedEvent = serde_json::from_value(serde_json::json!({
/// #     "event_id": uuid::Uuid::now_v7(), "stream": { "aggregate_type": "T", "aggregate_id": "1" },
/// #     "version": 1, "position": 1, "event_name": "E", "schema_version": 1, "payload": {},
/// #     "metadata": {}, "recorded_at": "2026-01-01T00:00:00Z" })).unwrap();
/// count.handle(&event).await.unwrap();
/// # });
/// assert_eq!(count.0, 1);
/// ```
pub trait Projection: Send {
    /// Stable name; the key of its checkpoint.
    fn name(&self) -> &str;

    /// Names of the events it wants; others advance the checkpoint without a call.
    /// `None` (the default) handles every event.
    fn event_names(&self) -> Option<&[&str]> {
        None
    }

    /// Folds one event into the read model.
    fn handle(
        &mut self,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Empties the read model before a rebuild.
    fn reset(&mut self) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// How far a rebuild or catch-up has come.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Events read so far in this run.
    pub done: u64,
    /// Events to read in this run (head position minus start position when it began).
    pub total: u64,
    /// Position of the last event read.
    pub position: u64,
    /// Time since the run began.
    pub elapsed: Duration,
}

impl Progress {
    /// Events per second so far.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        }
    }
}

/// Feeds one projection from a store's global log, resuming from its checkpoint.
///
/// The checkpoint is saved after the projection handled the events it covers: at most once per
/// [checkpoint interval](ProjectionRunner::with_checkpoint_interval) during a run, at the end
/// of every run, and up to the last handled event when a handler fails. Delivery is at least
/// once across crashes: a crashed run repeats at most one interval's events. Stores that keep
/// read models in the same database can do better (es-postgres commits the read model and
/// checkpoint in one transaction).
///
/// The next batch is read while the projection handles the current one.
pub struct ProjectionRunner<S, P> {
    store: S,
    projection: P,
    batch_size: usize,
    checkpoint_interval: Duration,
}

impl<S: EventStore, P: Projection> ProjectionRunner<S, P> {
    /// A runner reading batches of 5,000 events and saving its checkpoint at most once a
    /// second during a run.
    pub fn new(store: S, projection: P) -> Self {
        Self {
            store,
            projection,
            batch_size: 5_000,
            checkpoint_interval: Duration::from_secs(1),
        }
    }

    /// Sets the batch size (events read per round trip; default 5,000, which a rebuild from
    /// PostgreSQL ran 12–17% faster with than 1,000).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Sets how often a run saves its checkpoint between batches (default 1 s; zero saves
    /// after every batch). Runs always save at their end and when a handler fails.
    pub fn with_checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// The projection, to query its read model.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// Mutable access to the projection.
    pub fn projection_mut(&mut self) -> &mut P {
        &mut self.projection
    }

    /// Gives the projection back.
    pub fn into_projection(self) -> P {
        self.projection
    }

    /// Handles every event after the checkpoint up to the current head; returns the final
    /// progress.
    pub async fn catch_up(&mut self) -> Result<Progress, Error> {
        self.catch_up_with(|_| {}).await
    }

    /// Like [`ProjectionRunner::catch_up`], calling `on_progress` after every batch.
    pub async fn catch_up_with(
        &mut self,
        mut on_progress: impl FnMut(Progress) + Send,
    ) -> Result<Progress, Error> {
        let Self {
            store,
            projection,
            batch_size,
            checkpoint_interval,
        } = self;
        let (batch_size, checkpoint_interval) = (*batch_size, *checkpoint_interval);
        let name = projection.name().to_owned();
        let start = store.load_checkpoint(&name).await?.unwrap_or(0);
        let head = store.head_position().await?;
        let began = Instant::now();
        let mut progress = Progress {
            done: 0,
            total: head.saturating_sub(start),
            position: start,
            elapsed: Duration::ZERO,
        };
        let mut saved = Saved {
            position: start,
            at: began,
        };
        let mut last_log = began;
        let mut fetched = Some(store.read_all(start, batch_size).await);
        while let Some(result) = fetched.take() {
            let batch = result?;
            let Some(last) = batch.last().map(|e| e.position) else {
                break;
            };
            let handled = handle_batch(projection, &name, progress.position, &batch);
            let outcome = if last < head {
                let (next, outcome) = future::join(store.read_all(last, batch_size), handled).await;
                fetched = Some(next);
                outcome
            } else {
                handled.await
            };
            if let Err(failure) = outcome {
                saved.save(store, &name, failure.handled_up_to).await?;
                return Err(failure.error);
            }
            progress.done += batch.len() as u64;
            progress.total = progress.total.max(progress.done);
            progress.position = last;
            progress.elapsed = began.elapsed();
            if saved.at.elapsed() >= checkpoint_interval {
                saved.save(store, &name, last).await?;
            }
            on_progress(progress);
            if last_log.elapsed() >= Duration::from_secs(1) {
                last_log = Instant::now();
                tracing::info!(projection = %name, done = progress.done, total = progress.total, rate = progress.rate(), "projection progress");
            }
        }
        saved.save(store, &name, progress.position).await?;
        progress.elapsed = began.elapsed();
        Ok(progress)
    }

    /// Empties the read model and replays the whole log into it from position 0, calling
    /// `on_progress` after every batch.
    pub async fn rebuild(
        &mut self,
        on_progress: impl FnMut(Progress) + Send,
    ) -> Result<Progress, Error> {
        let name = self.projection.name().to_owned();
        self.projection
            .reset()
            .await
            .map_err(|source| Error::Projection {
                projection: name.clone(),
                position: 0,
                source,
            })?;
        self.store.save_checkpoint(&name, 0).await?;
        let progress = self.catch_up_with(on_progress).await?;
        tracing::info!(projection = %name, events = progress.done, seconds = progress.elapsed.as_secs_f64(), rate = progress.rate(), "projection rebuilt");
        Ok(progress)
    }
}

/// The checkpoint a run saved last.
struct Saved {
    position: u64,
    at: Instant,
}

impl Saved {
    /// Saves `position` unless it is already saved.
    async fn save<S: EventStore>(
        &mut self,
        store: &S,
        name: &str,
        position: u64,
    ) -> Result<(), Error> {
        if position != self.position {
            store.save_checkpoint(name, position).await?;
            self.position = position;
        }
        self.at = Instant::now();
        Ok(())
    }
}

/// A handler failure, and the position up to which every event was handled.
struct Failure {
    handled_up_to: u64,
    error: Error,
}

/// Hands `batch` (the events after position `after`) to the projection, skipping the events
/// it does not want.
async fn handle_batch<P: Projection>(
    projection: &mut P,
    name: &str,
    after: u64,
    batch: &[RecordedEvent],
) -> Result<(), Failure> {
    let mut handled_up_to = after;
    for event in batch {
        let wanted = projection
            .event_names()
            .is_none_or(|names| names.contains(&event.event_name.as_str()));
        if wanted && let Err(source) = projection.handle(event).await {
            return Err(Failure {
                handled_up_to,
                error: Error::Projection {
                    projection: name.to_owned(),
                    position: event.position,
                    source,
                },
            });
        }
        handled_up_to = event.position;
    }
    Ok(())
}
