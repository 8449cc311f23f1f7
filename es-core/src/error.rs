//! The one error type of stores and repositories.

use uuid::Uuid;

use crate::envelope::StreamId;
use crate::event::DecodeError;
use crate::store::ExpectedVersion;

/// A boxed error from a storage backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a store or repository can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream's version was not what the append expected; nothing was written.
    #[error("concurrency conflict on {stream}: expected {expected}, actual version {actual}")]
    Conflict {
        /// The stream.
        stream: StreamId,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was refused (0: no stream).
        actual: u64,
    },
    /// An event id that is already stored was appended with different content.
    #[error("event id {event_id} is already stored with different content (in {stream})")]
    DuplicateEventId {
        /// The reused id.
        event_id: Uuid,
        /// Where the stored event lives.
        stream: StreamId,
    },
    /// A stored event could not be decoded by this code.
    #[error("cannot decode {stream} version {version} (`{event_name}`): {source}")]
    Decode {
        /// Stream of the event.
        stream: StreamId,
        /// Stream version of the event.
        version: u64,
        /// Stored event name.
        event_name: String,
        /// Why.
        source: DecodeError,
    },
    /// An event or a state could not be serialised.
    #[error("cannot encode: {0}")]
    Encode(#[source] serde_json::Error),
    /// The arguments cannot be honoured (for example, an append of a batch larger than the
    /// backend accepts, or an empty aggregate id).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A projection's handler failed on the event at `position`; its checkpoint stays before it.
    #[error("projection `{projection}` failed at position {position}: {source}")]
    Projection {
        /// The projection's name.
        projection: String,
        /// Global position of the event it failed on.
        position: u64,
        /// The handler's error.
        source: BoxError,
    },
    /// The storage backend failed (connection lost, I/O, timeout). The write may or may not
    /// have committed; retrying with the same event ids is safe.
    #[error("storage backend error: {0}")]
    Backend(#[source] BoxError),
}

impl Error {
    /// Wraps a backend error.
    pub fn backend(error: impl Into<BoxError>) -> Self {
        Error::Backend(error.into())
    }

    /// Whether this is an optimistic-concurrency conflict.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}
