//! What a store holds: streams, events on their way in, recorded events and snapshots.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::Error;
use crate::event::{Event, EventSet};
use crate::json::same_json;
use crate::metadata::Metadata;

/// Identifies a stream: the aggregate type and the aggregate id.
///
/// ```
/// use es_core::StreamId;
/// let stream = StreamId::new("BankAccount", "acc-1");
/// assert_eq!(stream.to_string(), "BankAccount/acc-1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId {
    /// Aggregate type name, as in [`Aggregate::TYPE`](crate::Aggregate::TYPE).
    pub aggregate_type: String,
    /// Aggregate id, unique within its type.
    pub aggregate_id: String,
}

impl StreamId {
    /// A stream id from its two parts.
    pub fn new(aggregate_type: impl Into<String>, aggregate_id: impl Into<String>) -> Self {
        Self {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
        }
    }

    /// The stream of aggregate `A` with id `id`.
    pub fn of<A: crate::Aggregate>(id: impl Into<String>) -> Self {
        Self::new(A::TYPE, id)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.aggregate_type, self.aggregate_id)
    }
}

/// An event on its way into a store: encoded, with its id and metadata, not yet positioned.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Unique id (UUIDv7). Appending the same id again is an idempotent retry.
    pub event_id: Uuid,
    /// Stored event name.
    pub event_name: String,
    /// Schema version of `payload`.
    pub schema_version: u32,
    /// The event's JSON.
    pub payload: Box<RawValue>,
    /// Who, why, which flow.
    pub metadata: Metadata,
}

impl NewEvent {
    /// Encodes a value of an aggregate's event set with a fresh UUIDv7.
    pub fn from_set<S: EventSet>(event: &S, metadata: Metadata) -> Result<Self, Error> {
        Ok(Self {
            event_id: Uuid::now_v7(),
            event_name: event.name().to_owned(),
            schema_version: event.version(),
            payload: event.encode().map_err(Error::Encode)?,
            metadata,
        })
    }

    /// Encodes a single `#[event]` value with a fresh UUIDv7.
    pub fn from_event<E: Event>(event: &E, metadata: Metadata) -> Result<Self, Error> {
        let payload = serde_json::value::to_raw_value(event).map_err(Error::Encode)?;
        Ok(Self {
            event_id: Uuid::now_v7(),
            event_name: E::NAME.to_owned(),
            schema_version: E::VERSION,
            payload,
            metadata,
        })
    }

    /// Replaces the generated id, e.g. with one derived from an idempotency key.
    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    /// The event as a store recorded it: for store implementations, once they know where it
    /// landed.
    pub fn into_recorded(
        self,
        stream: StreamId,
        version: u64,
        position: u64,
        recorded_at: DateTime<Utc>,
    ) -> RecordedEvent {
        RecordedEvent {
            event_id: self.event_id,
            stream,
            version,
            position,
            event_name: self.event_name,
            schema_version: self.schema_version,
            payload: self.payload,
            metadata: self.metadata,
            recorded_at,
        }
    }

    /// Whether `recorded` holds the same stream, name, schema version and payload (compared
    /// by JSON value): the test for an idempotent retry of this event. Metadata is not
    /// compared: a retry returns the event with the metadata first stored.
    pub fn same_content_as(&self, stream: &StreamId, recorded: &RecordedEvent) -> bool {
        recorded.stream == *stream
            && recorded.event_name == self.event_name
            && recorded.schema_version == self.schema_version
            && same_json(recorded.payload.get(), self.payload.get())
    }
}

/// An event as a store recorded it: the envelope of the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Unique id.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Version within the stream: 1, 2, 3, … without gaps.
    pub version: u64,
    /// Position in the store's global log, increasing in commit-visible order (not
    /// necessarily by one: positions may skip numbers).
    pub position: u64,
    /// Stored event name.
    pub event_name: String,
    /// Schema version of `payload`.
    pub schema_version: u32,
    /// The event's JSON as stored (before upcasting).
    pub payload: Box<RawValue>,
    /// Who, why, which flow.
    pub metadata: Metadata,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// Decodes the payload into an aggregate's event set, upcasting older schemas.
    /// Errors name the stream, version and event.
    pub fn decode<S: EventSet>(&self) -> Result<S, Error> {
        decode_payload(
            &self.stream,
            self.version,
            &self.event_name,
            self.schema_version,
            &self.payload,
        )
    }

    /// Decodes the payload as one event type, or `None` when the name is another event's.
    pub fn decode_event<E: Event>(&self) -> Option<Result<E, Error>> {
        (self.event_name == E::NAME).then(|| {
            E::decode_versioned(self.schema_version, &self.payload).map_err(|source| {
                Error::Decode {
                    stream: self.stream.clone(),
                    version: self.version,
                    event_name: self.event_name.clone(),
                    source,
                }
            })
        })
    }
}

/// A stored event without its envelope: only what replaying an aggregate needs.
/// [`SnapshotStore::load_stream`](crate::SnapshotStore::load_stream) returns these, so a backend
/// loading an aggregate neither reads nor parses ids, metadata and timestamps.
#[derive(Debug, Clone)]
pub struct ReplayEvent {
    /// Version within the stream.
    pub version: u64,
    /// Stored event name.
    pub event_name: String,
    /// Schema version of `payload`.
    pub schema_version: u32,
    /// The event's JSON as stored (before upcasting).
    pub payload: Box<RawValue>,
}

impl ReplayEvent {
    /// Decodes the payload into an aggregate's event set, upcasting older schemas. Errors
    /// name `stream` (the stream this event was loaded from), the version and the event.
    pub fn decode<S: EventSet>(&self, stream: &StreamId) -> Result<S, Error> {
        decode_payload(
            stream,
            self.version,
            &self.event_name,
            self.schema_version,
            &self.payload,
        )
    }
}

impl From<RecordedEvent> for ReplayEvent {
    fn from(recorded: RecordedEvent) -> Self {
        Self {
            version: recorded.version,
            event_name: recorded.event_name,
            schema_version: recorded.schema_version,
            payload: recorded.payload,
        }
    }
}

fn decode_payload<S: EventSet>(
    stream: &StreamId,
    version: u64,
    event_name: &str,
    schema_version: u32,
    payload: &RawValue,
) -> Result<S, Error> {
    S::decode(event_name, schema_version, payload).map_err(|source| Error::Decode {
        stream: stream.clone(),
        version,
        event_name: event_name.to_owned(),
        source,
    })
}

/// A cached aggregate state at a stream version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream: StreamId,
    /// The stream version the state includes.
    pub version: u64,
    /// The aggregate's [`STATE_VERSION`](crate::Aggregate::STATE_VERSION) when it was taken.
    pub state_version: u32,
    /// The serialised state.
    pub state: Box<RawValue>,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
}
