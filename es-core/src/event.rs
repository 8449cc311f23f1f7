//! Events, the set of events an aggregate owns, and how both decode.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

/// A domain event: a fact, named and versioned so that it can be stored and read back.
///
/// Implemented by `#[event]`; write it by hand only for unusual encodings.
/// `NAME` is stable across renames of the Rust type; `VERSION` is the schema version the
/// current type encodes. Older stored versions are upcast by [`Event::decode_versioned`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event",
    label = "not an event",
    note = "annotate the struct with `#[event]` (optionally `#[event(name = \"...\", version = N)]`)"
)]
pub trait Event: Serialize + DeserializeOwned + Debug + Clone + Send + Sync + 'static {
    /// The stable name stored with every payload.
    const NAME: &'static str;
    /// The schema version this type encodes (at least 1).
    const VERSION: u32;

    /// Decodes a payload stored with schema `version`, upcasting older versions to `Self`.
    ///
    /// The default accepts only [`Event::VERSION`]; `#[event(previous = T)]` generates a
    /// version that decodes older payloads as `T` and converts them with `From`.
    fn decode_versioned(version: u32, payload: &RawValue) -> Result<Self, DecodeError> {
        decode_exact(version, payload)
    }
}

/// Decodes a payload that must be exactly `E::VERSION`; the base case of every upcaster chain.
pub fn decode_exact<E: Event>(version: u32, payload: &RawValue) -> Result<E, DecodeError> {
    match version.cmp(&E::VERSION) {
        std::cmp::Ordering::Equal => {
            serde_json::from_str(payload.get()).map_err(|source| DecodeError::Payload {
                event: E::NAME,
                version,
                source,
            })
        }
        std::cmp::Ordering::Greater => Err(DecodeError::VersionTooNew {
            event: E::NAME.to_owned(),
            stored: version,
            supported: E::VERSION,
        }),
        std::cmp::Ordering::Less => Err(DecodeError::VersionTooOld {
            event: E::NAME,
            stored: version,
            oldest: E::VERSION,
        }),
    }
}

/// Decodes a payload for an event whose previous schema is `P`: the current version decodes
/// directly, older ones decode as `P` (recursively) and convert with `From`.
pub fn decode_upcast<E, P>(version: u32, payload: &RawValue) -> Result<E, DecodeError>
where
    E: Event + From<P>,
    P: Event,
{
    if version < E::VERSION {
        P::decode_versioned(version, payload).map(E::from)
    } else {
        decode_exact(version, payload)
    }
}

/// The closed set of events one aggregate owns: the enum `#[derive(Aggregate)]` generates.
pub trait EventSet: Debug + Clone + Send + Sync + Sized + 'static {
    /// Every event name in the set, in declaration order.
    const NAMES: &'static [&'static str];

    /// The stored name of this value's event.
    fn name(&self) -> &'static str;

    /// The schema version this value encodes.
    fn version(&self) -> u32;

    /// Encodes the payload (without name or version) as JSON.
    fn encode(&self) -> Result<Box<RawValue>, serde_json::Error>;

    /// Decodes a stored payload by its event name and schema version, upcasting as needed.
    fn decode(name: &str, version: u32, payload: &RawValue) -> Result<Self, DecodeError>;
}

/// Why a stored payload could not become an event. Stores wrap it in
/// [`Error::Decode`](crate::Error::Decode) with the stream and version it came from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No event in the set has this name.
    #[error("unknown event name `{name}` (known: {known:?})")]
    UnknownEvent {
        /// The stored name.
        name: String,
        /// The names this code knows.
        known: &'static [&'static str],
    },
    /// The payload was written by newer code than this.
    #[error(
        "event `{event}` is stored with schema version {stored}, newer than the {supported} this code supports"
    )]
    VersionTooNew {
        /// Event name.
        event: String,
        /// Stored schema version.
        stored: u32,
        /// Highest version this code decodes.
        supported: u32,
    },
    /// The payload is older than the oldest schema in the upcaster chain.
    #[error(
        "event `{event}` is stored with schema version {stored}, older than the oldest known version {oldest}; add `previous = ...` to its `#[event]`"
    )]
    VersionTooOld {
        /// Event name.
        event: &'static str,
        /// Stored schema version.
        stored: u32,
        /// Lowest version the chain decodes.
        oldest: u32,
    },
    /// The JSON does not match the event's schema.
    #[error("payload of `{event}` version {version} does not decode: {source}")]
    Payload {
        /// Event name.
        event: &'static str,
        /// Stored schema version.
        version: u32,
        /// The serde error.
        source: serde_json::Error,
    },
}

/// What a command may return: one event, several, or none.
///
/// Implemented for any `#[event]` type of the aggregate, for `Option` of one, for `Vec` of
/// anything convertible into the set, and (by the derive) for the event enum itself.
pub trait IntoEvents<S> {
    /// Converts into the aggregate's events, in order.
    fn into_events(self) -> Vec<S>;
}

impl<S, E> IntoEvents<S> for E
where
    E: Event,
    S: EventSet + From<E>,
{
    fn into_events(self) -> Vec<S> {
        vec![S::from(self)]
    }
}

impl<S, E> IntoEvents<S> for Vec<E>
where
    S: EventSet,
    E: Into<S>,
{
    fn into_events(self) -> Vec<S> {
        self.into_iter().map(Into::into).collect()
    }
}

impl<S, E> IntoEvents<S> for Option<E>
where
    S: EventSet,
    E: Into<S>,
{
    fn into_events(self) -> Vec<S> {
        self.into_iter().map(Into::into).collect()
    }
}

/// Compile-time string equality, used by generated `const` assertions on upcaster chains.
#[doc(hidden)]
pub const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
