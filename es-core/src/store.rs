//! The `EventStore` contract every backend keeps (see the crate docs for the semantics).

use std::fmt;
use std::future::Future;
use std::ops::{Bound, RangeBounds};

use chrono::{DateTime, Utc};
use futures::Stream;
use futures::stream::{self, BoxStream, StreamExt};

use crate::envelope::{NewEvent, RecordedEvent, ReplayEvent, Snapshot, StreamId};
use crate::error::Error;

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

/// A durable, ordered log of events in streams, with snapshots and projection checkpoints.
///
/// Semantics every implementation keeps (and the `testing` feature's conformance suite checks):
/// - stream versions start at 1 and have no gaps; appends are all-or-nothing;
/// - an append whose [`ExpectedVersion`] does not hold fails with [`Error::Conflict`] and
///   writes nothing;
/// - appending events whose ids are already stored with the same content returns the stored
///   events and writes nothing; the same id with other content is [`Error::DuplicateEventId`];
/// - [`EventStore::read_all`] returns events in global position order and never skips an event
///   that commits later with a lower position.
/// - Positions strictly increase along the log but may skip numbers (a backend that draws them
///   from a database sequence loses the ones of rolled-back appends). Count events, not
///   position differences.
pub trait EventStore: Clone + Send + Sync + 'static {
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

    /// Up to `limit` events of the global log with position greater than `after`, in position
    /// order. Returns only events a follower may safely consume: no event with a lower position
    /// may still appear later.
    fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, Error>> + Send;

    /// The highest position [`EventStore::read_all`] can currently return (0 when empty).
    fn head_position(&self) -> impl Future<Output = Result<u64, Error>> + Send;

    /// The latest snapshot of `stream`, if any.
    fn load_snapshot(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<Option<Snapshot>, Error>> + Send;

    /// Stores a snapshot unless a newer one is stored: newer means a higher state version, or
    /// the same state version at a higher stream version. So a deploy that changes the state's
    /// shape can snapshot at once, and old code still running never overwrites its snapshots.
    fn save_snapshot(&self, snapshot: Snapshot) -> impl Future<Output = Result<(), Error>> + Send;

    /// The last position projection `name` has processed, if it ever ran.
    fn load_checkpoint(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<u64>, Error>> + Send;

    /// Records that projection `name` processed everything up to `position`.
    fn save_checkpoint(
        &self,
        name: &str,
        position: u64,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// A snapshot (if one with `state_version` exists) and the events after it: everything a
    /// repository needs to load an aggregate, without the envelopes it does not need.
    /// Backends may answer in one round trip and skip reading metadata.
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
                    .filter(|s| s.state_version == v),
                None => None,
            };
            let after = snapshot.as_ref().map_or(0, |s| s.version);
            let events = self.read_stream(stream, &StreamQuery::after(after)).await?;
            Ok((
                snapshot,
                events.into_iter().map(ReplayEvent::from).collect(),
            ))
        }
    }
}

/// Extension methods available on every [`EventStore`].
pub trait EventStoreExt: EventStore {
    /// The global log from `after` (exclusive) to the head as it was when the stream reached it,
    /// fetched in batches of `batch_size`, so that a long scan never sits in memory.
    fn stream_all(
        &self,
        after: u64,
        batch_size: usize,
    ) -> BoxStream<'static, Result<RecordedEvent, Error>> {
        read_all_batches(self.clone(), after, batch_size)
            .map(|batch| match batch {
                Ok(events) => stream::iter(events.into_iter().map(Ok)).left_stream(),
                Err(e) => stream::iter([Err(e)]).right_stream(),
            })
            .flatten()
            .boxed()
    }
}

impl<S: EventStore> EventStoreExt for S {}

/// The global log from `after` in batches of at most `batch_size`, ending at the first empty
/// batch. Stops after the first error.
pub fn read_all_batches<S: EventStore>(
    store: S,
    after: u64,
    batch_size: usize,
) -> impl Stream<Item = Result<Vec<RecordedEvent>, Error>> + Send + 'static {
    let batch_size = batch_size.max(1);
    stream::unfold(Some(after), move |cursor| {
        let store = store.clone();
        async move {
            let after = cursor?;
            match store.read_all(after, batch_size).await {
                Ok(events) if events.is_empty() => None,
                Ok(events) => {
                    let next = events.last().map_or(after, |e| e.position);
                    Some((Ok(events), Some(next)))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    })
}

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
