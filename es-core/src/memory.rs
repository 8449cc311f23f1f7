//! `MemoryStore`: the embedded default and the test double, with every store semantic.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use crate::checkpoint::{CheckpointStore, Local, ParkedEvent, check_checkpoint, check_parked};
use crate::envelope::{NewEvent, RecordedEvent, Snapshot, StreamId};
use crate::error::Error;
use crate::lease::{Lease, Leases, LocalLeases};
use crate::limits::{Limits, check_name, check_stream};
use crate::log::{GlobalLog, LogFilter, LogPage, Wakeup, WakeupSender};
use crate::store::{ExpectedVersion, SnapshotStore, StreamQuery, StreamStore};

/// A thread-safe in-memory [`EventStore`](crate::EventStore). Clones share the same data.
///
/// Appends take a write lock, so positions are assigned in commit order and followers never
/// see a gap; every append wakes followers ([`GlobalLog::wakeup`]). Payloads are stored
/// encoded and checked by the same [`Limits`] as every other store, so schema evolution,
/// decode errors and refusals behave as they do in production. It also offers
/// single-active leases within the process ([`Leases`]).
///
/// ```
/// # futures::executor::block_on(async {
/// use es_core::{ExpectedVersion, MemoryStore, Metadata, NewEvent, StreamId, StreamQuery, StreamStore};
/// use serde_json::value::to_raw_value;
///
/// let store = MemoryStore::new();
/// let stream = StreamId::new("Counter", "c-1");
/// let event = NewEvent {
///     event_id: uuid::Uuid::now_v7(),
///     event_name: "Incremented".into(),
///     schema_version: 1,
///     payload: to_raw_value(&serde_json::json!({ "by": 2 })).unwrap(),
///     metadata: Metadata::by_user("u-1"),
/// };
/// let recorded = store.append(&stream, ExpectedVersion::NoStream, vec![event]).await.unwrap();
/// assert_eq!((recorded[0].version, recorded[0].position), (1, 1));
/// assert_eq!(store.read_stream(&stream, &StreamQuery::all()).await.unwrap().len(), 1);
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<RwLock<Inner>>,
    wakeup: WakeupSender,
    leases: LocalLeases,
    limits: Limits,
}

#[derive(Debug, Default)]
struct Inner {
    /// The global log; an event's position is its index plus one.
    log: Vec<RecordedEvent>,
    /// Log indices of each stream's events, in version order.
    streams: HashMap<StreamId, Vec<usize>>,
    /// Log index of every event id.
    ids: HashMap<Uuid, usize>,
    snapshots: HashMap<StreamId, Snapshot>,
    consumers: Local,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store enforcing `limits` instead of the defaults.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Number of events in the global log.
    pub fn len(&self) -> usize {
        self.read().log.len()
    }

    /// Whether no event was ever appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // Every mutation below completes before it could panic, so a poisoned lock still
        // guards consistent data.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn stream_version(&self, stream: &StreamId) -> u64 {
        self.streams.get(stream).map_or(0, |v| v.len() as u64)
    }

    /// If the batch was stored before, the stored events; an error if an id is reused with
    /// other content or the batch only partly matches a stored one.
    fn replayed_batch(
        &self,
        stream: &StreamId,
        events: &[NewEvent],
    ) -> Result<Option<Vec<RecordedEvent>>, Error> {
        let mut stored = Vec::new();
        for event in events {
            if let Some(&index) = self.ids.get(&event.event_id) {
                let recorded = &self.log[index];
                if !event.same_content_as(stream, recorded) {
                    return Err(Error::DuplicateEventId {
                        event_id: event.event_id,
                        stream: recorded.stream.clone(),
                    });
                }
                stored.push(recorded.clone());
            }
        }
        match stored.len() {
            0 => Ok(None),
            n if n == events.len() => Ok(Some(stored)),
            _ => {
                let reused = &stored[0];
                Err(Error::DuplicateEventId {
                    event_id: reused.event_id,
                    stream: reused.stream.clone(),
                })
            }
        }
    }
}

impl StreamStore for MemoryStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.limits.check_append(stream, expected, &mut events)?;
        let recorded = {
            let mut inner = self.write();
            if let Some(stored) = inner.replayed_batch(stream, &events)? {
                return Ok(stored);
            }
            let actual = inner.stream_version(stream);
            if !expected.accepts(actual) {
                return Err(Error::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual,
                });
            }
            if events.is_empty() {
                return Ok(Vec::new());
            }
            let recorded_at = Utc::now();
            let first_index = inner.log.len();
            let mut recorded = Vec::with_capacity(events.len());
            for (offset, event) in events.into_iter().enumerate() {
                recorded.push(event.into_recorded(
                    stream.clone(),
                    actual + offset as u64 + 1,
                    (first_index + offset) as u64 + 1,
                    recorded_at,
                ));
            }
            let Inner {
                log, streams, ids, ..
            } = &mut *inner;
            let indices = match streams.entry(stream.clone()) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => v.insert(Vec::new()),
            };
            for (offset, event) in recorded.iter().enumerate() {
                indices.push(first_index + offset);
                ids.insert(event.event_id, first_index + offset);
            }
            log.extend(recorded.iter().cloned());
            recorded
        };
        self.wakeup.notify();
        Ok(recorded)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        query: &StreamQuery,
    ) -> Result<Vec<RecordedEvent>, Error> {
        check_stream(stream)?;
        let inner = self.read();
        let Some(indices) = inner.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let start = usize::try_from(query.from_version.saturating_sub(1)).unwrap_or(usize::MAX);
        let end = query.to_version.map_or(indices.len(), |to| {
            usize::try_from(to).unwrap_or(usize::MAX).min(indices.len())
        });
        let selected = indices.get(start..end.max(start)).unwrap_or_default();
        Ok(selected
            .iter()
            .map(|&i| &inner.log[i])
            .filter(|e| query.matches(e))
            .cloned()
            .collect())
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, Error> {
        check_stream(stream)?;
        Ok(self.read().stream_version(stream))
    }

    async fn read_event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>, Error> {
        let inner = self.read();
        Ok(inner.ids.get(&event_id).map(|&i| inner.log[i].clone()))
    }
}

impl SnapshotStore for MemoryStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, Error> {
        check_stream(stream)?;
        Ok(self.read().snapshots.get(stream).cloned())
    }

    async fn save_snapshot(&self, mut snapshot: Snapshot) -> Result<(), Error> {
        self.limits.check_snapshot(&mut snapshot)?;
        let mut inner = self.write();
        match inner.snapshots.entry(snapshot.stream.clone()) {
            Entry::Occupied(mut o) => {
                let current = o.get();
                if (snapshot.state_version, snapshot.version)
                    >= (current.state_version, current.version)
                {
                    o.insert(snapshot);
                }
            }
            Entry::Vacant(v) => {
                v.insert(snapshot);
            }
        }
        Ok(())
    }
}

impl GlobalLog for MemoryStore {
    async fn read_log(
        &self,
        after: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogPage, Error> {
        let inner = self.read();
        let len = inner.log.len();
        let end = filter.before_position.map_or(len, |before| {
            usize::try_from(before.saturating_sub(1))
                .unwrap_or(usize::MAX)
                .min(len)
        });
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(end);
        if limit == 0 {
            return Ok(LogPage {
                events: Vec::new(),
                scanned_to: after,
            });
        }
        let mut events = Vec::new();
        let mut scanned_to = end as u64;
        for event in &inner.log[start..end] {
            if filter.matches(event) {
                events.push(event.clone());
                if events.len() == limit {
                    scanned_to = event.position;
                    break;
                }
            }
        }
        Ok(LogPage {
            events,
            scanned_to: scanned_to.max(after),
        })
    }

    async fn head_position(&self) -> Result<u64, Error> {
        Ok(self.read().log.len() as u64)
    }

    fn wakeup(&self) -> Wakeup {
        self.wakeup.subscribe(Duration::from_secs(1))
    }
}

impl CheckpointStore for MemoryStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, Error> {
        check_name(name, "consumer name")?;
        Ok(self.read().consumers.checkpoints.get(name).copied())
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), Error> {
        check_checkpoint(name, position)?;
        self.write()
            .consumers
            .checkpoints
            .insert(name.to_owned(), position);
        Ok(())
    }

    async fn park(&self, consumer: &str, parked: &ParkedEvent) -> Result<(), Error> {
        check_parked(consumer, parked)?;
        self.write().consumers.park(consumer, parked);
        Ok(())
    }

    async fn parked(&self, consumer: &str) -> Result<Vec<ParkedEvent>, Error> {
        check_name(consumer, "consumer name")?;
        Ok(self.read().consumers.parked(consumer))
    }

    async fn unpark(&self, consumer: &str, position: u64) -> Result<bool, Error> {
        check_name(consumer, "consumer name")?;
        Ok(self.write().consumers.unpark(consumer, position))
    }
}

impl Leases for MemoryStore {
    fn try_acquire<'a>(
        &'a self,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<Lease>, Error>> {
        self.leases.try_acquire(name)
    }
}
