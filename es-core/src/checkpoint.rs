//! Where consumers keep their progress: checkpoints and parked events.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::{RecordedEvent, StreamId};
use crate::error::Error;
use crate::limits::{check_i64, check_name};

/// An event a consumer could not handle and set aside to go on with the log.
///
/// Listed by [`CheckpointStore::parked`]; a parked event can be handled again with
/// [`ConsumerHandle::replay_parked`](crate::ConsumerHandle::replay_parked) once the cause is
/// fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedEvent {
    /// Global position of the event.
    pub position: u64,
    /// The event's id.
    pub event_id: Option<Uuid>,
    /// Its stream.
    pub stream: StreamId,
    /// Its version in the stream.
    pub version: u64,
    /// Its stored name.
    pub event_name: String,
    /// What the handler (or the decoder) said, last time it tried.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u32,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
}

impl ParkedEvent {
    /// A parked record of `event`, which failed `attempts` times with `error`.
    pub fn of(event: &RecordedEvent, error: &dyn std::fmt::Display, attempts: u32) -> Self {
        Self {
            position: event.position,
            event_id: Some(event.event_id),
            stream: event.stream.clone(),
            version: event.version,
            event_name: event.event_name.clone(),
            error: printable(&error.to_string()),
            attempts: attempts.min(i32::MAX as u32),
            parked_at: Utc::now(),
        }
    }
}

/// `text` with NUL characters replaced (databases cannot store them in text columns).
pub(crate) fn printable(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// Consumer progress: the last position each consumer processed, and the events it parked.
///
/// Names are checked by [`Limits`](crate::Limits) rules (1 to 255 bytes, no NUL) and positions
/// must fit `i64`, the same on every store.
pub trait CheckpointStore: Send + Sync {
    /// The last position consumer `name` has processed, if it ever saved one.
    fn load_checkpoint(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<u64>, Error>> + Send;

    /// Records that consumer `name` processed everything up to `position`.
    fn save_checkpoint(
        &self,
        name: &str,
        position: u64,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Stores (or replaces, by consumer and position) a parked event.
    fn park(
        &self,
        consumer: &str,
        parked: &ParkedEvent,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The events consumer `consumer` parked, by position.
    fn parked(
        &self,
        consumer: &str,
    ) -> impl Future<Output = Result<Vec<ParkedEvent>, Error>> + Send;

    /// Removes a parked event; whether there was one.
    fn unpark(
        &self,
        consumer: &str,
        position: u64,
    ) -> impl Future<Output = Result<bool, Error>> + Send;
}

macro_rules! forward_checkpoint_store {
    ($($ty:ty),*) => {$(
        impl<T: CheckpointStore + ?Sized> CheckpointStore for $ty {
            fn load_checkpoint(&self, name: &str) -> impl Future<Output = Result<Option<u64>, Error>> + Send {
                (**self).load_checkpoint(name)
            }
            fn save_checkpoint(&self, name: &str, position: u64) -> impl Future<Output = Result<(), Error>> + Send {
                (**self).save_checkpoint(name, position)
            }
            fn park(&self, consumer: &str, parked: &ParkedEvent) -> impl Future<Output = Result<(), Error>> + Send {
                (**self).park(consumer, parked)
            }
            fn parked(&self, consumer: &str) -> impl Future<Output = Result<Vec<ParkedEvent>, Error>> + Send {
                (**self).parked(consumer)
            }
            fn unpark(&self, consumer: &str, position: u64) -> impl Future<Output = Result<bool, Error>> + Send {
                (**self).unpark(consumer, position)
            }
        }
    )*};
}

forward_checkpoint_store!(&T, Arc<T>);

/// Checks a checkpoint write the way every store does.
pub fn check_checkpoint(name: &str, position: u64) -> Result<(), Error> {
    check_name(name, "consumer name")?;
    check_i64(position, "checkpoint position")
}

/// Checks a parked event the way every store does before writing it: the consumer name and
/// the position as for checkpoints, the stream id, a version within `i64`, at most `i32::MAX`
/// attempts, and no NUL in the event name or error text.
pub fn check_parked(consumer: &str, parked: &ParkedEvent) -> Result<(), Error> {
    check_checkpoint(consumer, parked.position)?;
    crate::limits::check_stream(&parked.stream)?;
    check_i64(parked.version, "parked event version")?;
    if i32::try_from(parked.attempts).is_err() {
        return Err(Error::Invalid(format!(
            "parked event attempts {} exceed {}",
            parked.attempts,
            i32::MAX
        )));
    }
    if parked.event_name.contains('\0') || parked.error.contains('\0') {
        return Err(Error::Invalid(
            "a parked event's name or error contains the NUL character".into(),
        ));
    }
    Ok(())
}

/// Checkpoints and parked events in this process's memory: for views rebuilt at every start,
/// which should write nothing to the event store. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct LocalCheckpoints {
    inner: Arc<Mutex<Local>>,
}

#[derive(Debug, Default)]
pub(crate) struct Local {
    pub(crate) checkpoints: HashMap<String, u64>,
    pub(crate) parked: HashMap<String, BTreeMap<u64, ParkedEvent>>,
}

impl Local {
    pub(crate) fn park(&mut self, consumer: &str, parked: &ParkedEvent) {
        self.parked
            .entry(consumer.to_owned())
            .or_default()
            .insert(parked.position, parked.clone());
    }

    pub(crate) fn parked(&self, consumer: &str) -> Vec<ParkedEvent> {
        self.parked
            .get(consumer)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn unpark(&mut self, consumer: &str, position: u64) -> bool {
        self.parked
            .get_mut(consumer)
            .is_some_and(|p| p.remove(&position).is_some())
    }
}

impl LocalCheckpoints {
    /// Empty: every consumer starts from position 0.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl CheckpointStore for LocalCheckpoints {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, Error> {
        check_name(name, "consumer name")?;
        Ok(self.lock().checkpoints.get(name).copied())
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), Error> {
        check_checkpoint(name, position)?;
        self.lock().checkpoints.insert(name.to_owned(), position);
        Ok(())
    }

    async fn park(&self, consumer: &str, parked: &ParkedEvent) -> Result<(), Error> {
        check_parked(consumer, parked)?;
        self.lock().park(consumer, parked);
        Ok(())
    }

    async fn parked(&self, consumer: &str) -> Result<Vec<ParkedEvent>, Error> {
        check_name(consumer, "consumer name")?;
        Ok(self.lock().parked(consumer))
    }

    async fn unpark(&self, consumer: &str, position: u64) -> Result<bool, Error> {
        check_name(consumer, "consumer name")?;
        Ok(self.lock().unpark(consumer, position))
    }
}
