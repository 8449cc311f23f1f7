//! The one error type of stores, repositories and consumers.

use uuid::Uuid;

use crate::envelope::StreamId;
use crate::event::DecodeError;
use crate::store::ExpectedVersion;

/// A boxed error from a storage backend or a handler.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A handler error that retrying cannot fix (a refusal, an event the handler can never
/// accept): the consumer runtime parks the event (or stops, per its poison policy) at once
/// instead of retrying. Make one with [`permanent`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Permanent(#[source] pub BoxError);

/// Marks `error` as [`Permanent`].
///
/// ```
/// let error = es_core::permanent("amount out of range");
/// assert!(error.is::<es_core::Permanent>());
/// ```
pub fn permanent(error: impl Into<BoxError>) -> BoxError {
    Box::new(Permanent(error.into()))
}

/// Everything a store, repository or consumer can refuse or fail with.
///
/// What a caller may do next depends on the variant:
/// - [`Error::Conflict`]: nothing was written; load again and decide again (the repository
///   does this for you).
/// - [`Error::Backend`]: nothing was written; the same call may succeed later.
/// - [`Error::OutcomeUnknown`]: the write may have committed or not. Retry with the same
///   event ids (or the same command key): a store recognises its own events and returns them
///   as first stored, so the retry converges on one outcome.
/// - [`Error::Invalid`], [`Error::DuplicateEventId`]: a retry will fail the same way.
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
    /// A stored payload could not be decoded by this code.
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
    /// A stored row's envelope (metadata, a column out of range) cannot be read, as opposed
    /// to a payload the code cannot decode ([`Error::Decode`]).
    #[error(
        "stored event {stream} version {version} (position {position:?}) is unreadable: {reason}"
    )]
    BadRow {
        /// Stream of the row.
        stream: StreamId,
        /// Stream version of the row.
        version: u64,
        /// Global position of the row, where the read knows it: consumers park the row and
        /// read on after it.
        position: Option<u64>,
        /// What could not be read.
        reason: String,
    },
    /// An event or a state could not be serialised.
    #[error("cannot encode: {0}")]
    Encode(#[source] serde_json::Error),
    /// The request cannot be honoured and was refused before anything was written, the same
    /// way by every store: see [`Limits`](crate::Limits) for the rules.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A consumer's handler failed on the event at `position`; its checkpoint stays before it.
    #[error("consumer `{consumer}` failed at position {position}: {source}")]
    Handler {
        /// The consumer's name.
        consumer: String,
        /// Global position of the event it failed on.
        position: u64,
        /// The handler's error.
        source: BoxError,
    },
    /// Another runner holds the single-active lease this call needs.
    #[error("busy: {0}")]
    Busy(String),
    /// A wait (for example [`ConsumerHandle::wait_for`](crate::ConsumerHandle::wait_for))
    /// ran out of time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The write reached the backend but its outcome was lost (the connection died around
    /// the commit). It committed whole or not at all; retry with the same event ids or
    /// command key to learn which and to converge.
    #[error("the outcome of the write is unknown (retry with the same ids or key): {0}")]
    OutcomeUnknown(#[source] BoxError),
    /// The storage backend failed (unreachable, I/O, timeout) and nothing was written.
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

    /// Whether the same call may succeed if made again (a conflict, a backend failure or an
    /// unknown outcome). Retrying an [`Error::OutcomeUnknown`] is safe only with the same event
    /// ids or command key.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Conflict { .. } | Error::Backend(_) | Error::OutcomeUnknown(_)
        )
    }
}
