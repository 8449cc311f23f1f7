//! The store contract every backend keeps: streams and snapshots here, the global log in
//! [`crate::log`], checkpoints in [`crate::checkpoint`], and [`EventStore`], their union.

use std::fmt;
use std::future::Future;
use std::ops::{Bound, RangeBounds};

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::checkpoint::CheckpointStore;
use crate::envelope::{NewEvent, RecordedEvent, ReplayEvent, Snapshot, StreamId};
use crate::error::Error;
use crate::log::GlobalLog;

/// What an append expects of the stream before it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last version must be exactly this (0 means no stream).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` (0: no stream) satisfies this expectation.
    pub fn accepts(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::StreamExists => actual > 0,
            ExpectedVersion::Exact(v) => actual == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Which events of one stream to read: a version range, an optional set of event names,
/// and an optional upper bound on the recorded time.
///
/// ```
/// use es_core::StreamQuery;
/// let q = StreamQuery::from(3..=10).with_names(["MoneyDeposited"]);
/// assert_eq!((q.from_version, q.to_version), (3, Some(10)));
/// let all: StreamQuery = (..).into();
/// assert_eq!(all, StreamQuery::all());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamQuery {
    /// First version to return (inclusive, at least 1).
    pub from_version: u64,
    /// Last version to return (inclusive); `None` for the end of the stream.
    pub to_version: Option<u64>,
    /// Only events with one of these names; `None` for all.
    pub event_names: Option<Vec<String>>,
    /// Only events recorded at or before this time.
    pub recorded_until: Option<DateTime<Utc>>,
}

impl StreamQuery {
    /// The whole stream.
    pub fn all() -> Self {
        Self {
            from_version: 1,
            to_version: None,
            event_names: None,
            recorded_until: None,
        }
    }

    /// Events after `version` (exclusive): what a reader holding state at `version` lacks.
    pub fn after(version: u64) -> Self {
        Self {
            from_version: version.saturating_add(1),
            ..Self::all()
        }
    }

    /// Restricts to events with one of `names`.
    pub fn with_names<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        self.event_names = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Restricts to events recorded at or before `time`.
    pub fn until(mut self, time: DateTime<Utc>) -> Self {
        self.recorded_until = Some(time);
        self
    }

    /// Whether `event` (of the queried stream) is selected.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        event.version >= self.from_version
            && self.to_version.is_none_or(|to| event.version <= to)
            && self.recorded_until.is_none_or(|t| event.recorded_at <= t)
            && self
                .event_names
                .as_ref()
                .is_none_or(|names| names.contains(&event.event_name))
    }
}

impl<R: RangeBounds<u64>> From<R> for StreamQuery {
    fn from(range: R) -> Self {
        let from_version = match range.start_bound() {
            Bound::Included(v) => (*v).max(1),
            Bound::Excluded(v) => v.saturating_add(1).max(1),
            Bound::Unbounded => 1,
        };
        let to_version = match range.end_bound() {
            Bound::Included(v) => Some(*v),
            Bound::Excluded(v) => Some(v.saturating_sub(1)),
            Bound::Unbounded => None,
        };
        Self {
            from_version,
            to_version,
            ..Self::all()
        }
    }
}

/// Streams: append with optimistic concurrency, read back, look up.
///
/// Semantics every implementation keeps (the `testing` feature's conformance suite checks
/// them):
/// - stream versions start at 1 and have no gaps; an append is all or nothing;
/// - an append whose [`ExpectedVersion`] does not hold fails with [`Error::Conflict`] and
///   writes nothing;
/// - appending events whose ids are already stored with the same content (compared by JSON
///   value) returns the events as first stored, whatever the expected version, and writes
///   nothing; the same id with other content is [`Error::DuplicateEventId`];
/// - input is checked by [`Limits`](crate::Limits) before any I/O, the same way on every
///   store; reads by stream check the stream id the same way ([`check_stream`](crate::check_stream)),
///   so an id no append could store is [`Error::Invalid`], not an empty stream;
/// - a dropped append future leaves the append committed whole or not at all.
pub trait StreamStore: Send + Sync {
    /// Appends `events` to `stream` atomically if `expected` holds, returning them as recorded.
    fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, Error>> + Send;

    /// Reads the events of one stream selected by `query`, in version order.
    fn read_stream(
        &self,
        stream: &StreamId,
        query: &StreamQuery,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, Error>> + Send;

    /// The stream's current version (0 when it has no events).
    fn stream_version(&self, stream: &StreamId) -> impl Future<Output = Result<u64, Error>> + Send;

    /// The stored event with this id, if any.
    fn read_event(
        &self,
        event_id: Uuid,
    ) -> impl Future<Output = Result<Option<RecordedEvent>, Error>> + Send;
}

/// Snapshots of aggregate state, and the load that combines a snapshot with the events after it.
pub trait SnapshotStore: StreamStore {
    /// The latest snapshot of `stream`, if any.
    fn load_snapshot(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Option<Snapshot>, Error>> + Send;

    /// Stores a snapshot unless a newer one is stored: newer means a higher state version, or
    /// the same state version at a higher stream version (a tie replaces). So a deploy that
    /// changes the state's shape can snapshot at once, and old code still running never
    /// overwrites its snapshots. A snapshot newer than its stream is stored as given: it is a
    /// cache, and the repository never trusts it beyond the stream.
    fn save_snapshot(&self, snapshot: Snapshot) -> impl Future<Output = Result<(), Error>> + Send;

    /// A snapshot (if one with `state_version` exists and the stream has an event at its
    /// version) and the events after it: everything a repository needs to load an aggregate,
    /// without the envelopes it does not need. A snapshot beyond its stream is left out, and
    /// the events are then the whole stream, so a repository trusts what it gets without a
    /// second round trip. Backends may answer in one round trip and skip reading metadata.
    fn load_stream(
        &self,
        stream: &StreamId,
        state_version: Option<u32>,
    ) -> impl Future<Output = Result<(Option<Snapshot>, Vec<ReplayEvent>), Error>> + Send {
        async move {
            let snapshot = match state_version {
                Some(v) => self
                    .load_snapshot(stream)
                    .await?
                    .filter(|s| s.state_version == v && s.version > 0),
                None => None,
            };
            // From the snapshot's own version, which must be there for the snapshot to count.
            let from = snapshot.as_ref().map_or(0, |s| s.version - 1);
            let mut events = self.read_stream(stream, &StreamQuery::after(from)).await?;
            let (snapshot, skip) = match snapshot {
                Some(s) if events.first().is_some_and(|e| e.version == s.version) => (Some(s), 1),
                Some(_) => {
                    events = self.read_stream(stream, &StreamQuery::all()).await?;
                    (None, 0)
                }
                None => (None, 0),
            };
            let events = events
                .into_iter()
                .skip(skip)
                .map(ReplayEvent::from)
                .collect();
            Ok((snapshot, events))
        }
    }
}

/// A complete event store: streams, snapshots, the global log and consumer checkpoints.
///
/// Implemented automatically for every type that implements the four parts. The repository
/// needs only [`SnapshotStore`] (which includes [`StreamStore`]); the consumer runtime needs
/// only [`GlobalLog`] and [`CheckpointStore`]; so a decorator implements only what it changes.
pub trait EventStore: SnapshotStore + GlobalLog + CheckpointStore {}

impl<T: SnapshotStore + GlobalLog + CheckpointStore> EventStore for T {}

macro_rules! forward_stream_store {
    ($($ty:ty),*) => {$(
        impl<T: StreamStore + ?Sized> StreamStore for $ty {
            fn append(
                &self,
                stream: &StreamId,
                expected: ExpectedVersion,
                events: Vec<NewEvent>,
            ) -> impl Future<Output = Result<Vec<RecordedEvent>, Error>> + Send {
                (**self).append(stream, expected, events)
            }
            fn read_stream(
                &self,
                stream: &StreamId,
                query: &StreamQuery,
            ) -> impl Future<Output = Result<Vec<RecordedEvent>, Error>> + Send {
                (**self).read_stream(stream, query)
            }
            fn stream_version(
                &self,
                stream: &StreamId,
            ) -> impl Future<Output = Result<u64, Error>> + Send {
                (**self).stream_version(stream)
            }
            fn read_event(
                &self,
                event_id: Uuid,
            ) -> impl Future<Output = Result<Option<RecordedEvent>, Error>> + Send {
                (**self).read_event(event_id)
            }
        }

        impl<T: SnapshotStore + ?Sized> SnapshotStore for $ty {
            fn load_snapshot(
                &self,
                stream: &StreamId,
            ) -> impl Future<Output = Result<Option<Snapshot>, Error>> + Send {
                (**self).load_snapshot(stream)
            }
            fn save_snapshot(
                &self,
                snapshot: Snapshot,
            ) -> impl Future<Output = Result<(), Error>> + Send {
                (**self).save_snapshot(snapshot)
            }
            fn load_stream(
                &self,
                stream: &StreamId,
                state_version: Option<u32>,
            ) -> impl Future<Output = Result<(Option<Snapshot>, Vec<ReplayEvent>), Error>> + Send
            {
                (**self).load_stream(stream, state_version)
            }
        }
    )*};
}

forward_stream_store!(&T, Arc<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_version_accepts_exactly_what_it_states() {
        let cases = [
            (ExpectedVersion::Any, [true, true, true]),
            (ExpectedVersion::NoStream, [true, false, false]),
            (ExpectedVersion::StreamExists, [false, true, true]),
            (ExpectedVersion::Exact(1), [false, true, false]),
        ];
        for (expected, accepts) in cases {
            assert_eq!(
                [0, 1, 2].map(|actual| expected.accepts(actual)),
                accepts,
                "{expected}"
            );
        }
    }

    #[test]
    fn ranges_become_inclusive_version_bounds() {
        let bounds = |q: StreamQuery| (q.from_version, q.to_version);
        assert_eq!(bounds((..).into()), (1, None));
        assert_eq!(bounds((3..).into()), (3, None));
        assert_eq!(bounds((3..7).into()), (3, Some(6)));
        assert_eq!(bounds((..=7).into()), (1, Some(7)));
        assert_eq!(
            bounds((0..=0).into()),
            (1, Some(0)),
            "version 0 is before the first event"
        );
        assert_eq!(bounds(StreamQuery::after(4)), (5, None));
    }
}
