//! The one set of input rules every store applies before any I/O, so that what one store
//! accepts every store accepts, and what one refuses every store refuses with the same
//! [`Error::Invalid`].
//!
//! | what | rule |
//! |---|---|
//! | aggregate type, event name, consumer or checkpoint name | 1 to [`MAX_NAME_BYTES`] bytes, no NUL |
//! | aggregate id | 1 to [`MAX_ID_BYTES`] bytes, no NUL |
//! | schema version, snapshot state version | 1 to `i32::MAX` |
//! | expected version, snapshot version, checkpoint position | at most `i64::MAX` |
//! | payload, snapshot state, metadata | valid JSON, no `\u0000`, no lone surrogate, no duplicate key, nesting at most [`MAX_JSON_DEPTH`](crate::MAX_JSON_DEPTH), at most [`Limits::max_payload_bytes`] bytes; negative zero is stored as zero |
//! | one append | at most [`Limits::max_batch`] events, ids unique within it |
//!
//! The bounds come from PostgreSQL: `text` and `jsonb` cannot hold NUL, an index row holds
//! about 2.7 kB, and versions are `bigint`. The others keep them so that moving between stores
//! never changes what is accepted.

use std::collections::HashSet;

use serde_json::value::RawValue;

use crate::envelope::{NewEvent, Snapshot, StreamId};
use crate::error::Error;
use crate::json::{self, JsonProblem};
use crate::metadata::Metadata;
use crate::store::ExpectedVersion;

/// Longest aggregate type, event name or consumer name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Longest aggregate id, in bytes.
pub const MAX_ID_BYTES: usize = 1024;

/// The bounds a store enforces on what it is given. Every store starts from
/// [`Limits::default`]; a store's options may lower or raise the payload size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload, snapshot state or metadata document, in bytes of JSON text
    /// (default 4 MiB).
    pub max_payload_bytes: usize,
    /// Most events in one append (default 10,000).
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 4 << 20,
            max_batch: 10_000,
        }
    }
}

impl Limits {
    /// Checks an append and rewrites what every store rewrites (negative zero), before any I/O.
    pub fn check_append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &mut [NewEvent],
    ) -> Result<(), Error> {
        check_stream(stream)?;
        if let ExpectedVersion::Exact(v) = expected {
            check_i64(v, "expected version")?;
        }
        if events.len() > self.max_batch {
            return Err(Error::Invalid(format!(
                "an append holds {} events; the limit is {}",
                events.len(),
                self.max_batch
            )));
        }
        check_unique_ids(events)?;
        for event in events.iter_mut() {
            check_name(&event.event_name, "event name")?;
            check_schema_version(event.schema_version, "schema version")?;
            self.normalize_json(&mut event.payload, "payload")?;
            self.check_metadata(&event.metadata)?;
        }
        Ok(())
    }

    /// Checks a snapshot (and rewrites negative zeros in its state) before any I/O.
    pub fn check_snapshot(&self, snapshot: &mut Snapshot) -> Result<(), Error> {
        check_stream(&snapshot.stream)?;
        check_i64(snapshot.version, "snapshot version")?;
        check_schema_version(snapshot.state_version, "snapshot state version")?;
        self.normalize_json(&mut snapshot.state, "snapshot state")
    }

    /// Checks a payload-like JSON document and makes negative zeros positive.
    pub fn normalize_json(&self, value: &mut Box<RawValue>, what: &str) -> Result<(), Error> {
        let text = value.get();
        if text.len() > self.max_payload_bytes {
            return Err(Error::Invalid(format!(
                "{what} is {} bytes; the limit is {}",
                text.len(),
                self.max_payload_bytes
            )));
        }
        match json::normalize(text) {
            Ok(None) => Ok(()),
            Ok(Some(normalized)) => {
                *value = RawValue::from_string(normalized).map_err(Error::Encode)?;
                Ok(())
            }
            Err(problem) => Err(invalid_json(what, &problem)),
        }
    }

    fn check_metadata(&self, metadata: &Metadata) -> Result<(), Error> {
        if let Some(user) = &metadata.user_id {
            check_text(user, "metadata user id")?;
        }
        if metadata.extra.is_empty() {
            return Ok(());
        }
        let text = serde_json::to_string(&metadata.extra).map_err(Error::Encode)?;
        if text.len() > self.max_payload_bytes {
            return Err(Error::Invalid(format!(
                "metadata is {} bytes; the limit is {}",
                text.len(),
                self.max_payload_bytes
            )));
        }
        match json::check(&text) {
            // Negative zeros in metadata are not rewritten: nothing decodes state from it.
            Ok(_) => Ok(()),
            Err(problem) => Err(invalid_json("metadata", &problem)),
        }
    }
}

fn invalid_json(what: &str, problem: &JsonProblem) -> Error {
    Error::Invalid(format!("{what} {problem}"))
}

/// Checks a stream id: both parts non-empty, within their length, without NUL.
pub fn check_stream(stream: &StreamId) -> Result<(), Error> {
    check_name(&stream.aggregate_type, "aggregate type")?;
    check_bounded(&stream.aggregate_id, MAX_ID_BYTES, "aggregate id")
}

/// Checks a name (event, consumer, checkpoint): 1 to [`MAX_NAME_BYTES`] bytes, no NUL.
pub fn check_name(name: &str, what: &str) -> Result<(), Error> {
    check_bounded(name, MAX_NAME_BYTES, what)
}

fn check_bounded(text: &str, max: usize, what: &str) -> Result<(), Error> {
    if text.is_empty() {
        return Err(Error::Invalid(format!("{what} is empty")));
    }
    if text.len() > max {
        return Err(Error::Invalid(format!(
            "{what} is {} bytes; the limit is {max}",
            text.len()
        )));
    }
    check_text(text, what)
}

fn check_text(text: &str, what: &str) -> Result<(), Error> {
    if text.contains('\0') {
        return Err(Error::Invalid(format!("{what} contains the NUL character")));
    }
    Ok(())
}

/// Checks that a version or position fits the signed 64-bit integers databases store.
pub fn check_i64(value: u64, what: &str) -> Result<(), Error> {
    if i64::try_from(value).is_err() {
        return Err(Error::Invalid(format!(
            "{what} {value} exceeds the largest storable value {}",
            i64::MAX
        )));
    }
    Ok(())
}

fn check_schema_version(version: u32, what: &str) -> Result<(), Error> {
    if version == 0 || i32::try_from(version).is_err() {
        return Err(Error::Invalid(format!(
            "{what} {version} is outside 1..={}",
            i32::MAX
        )));
    }
    Ok(())
}

fn check_unique_ids(events: &[NewEvent]) -> Result<(), Error> {
    let duplicate = if events.len() <= 16 {
        events
            .iter()
            .enumerate()
            .find(|(i, e)| events[..*i].iter().any(|p| p.event_id == e.event_id))
            .map(|(_, e)| e.event_id)
    } else {
        let mut seen = HashSet::with_capacity(events.len());
        events
            .iter()
            .find(|e| !seen.insert(e.event_id))
            .map(|e| e.event_id)
    };
    match duplicate {
        Some(id) => Err(Error::Invalid(format!(
            "event id {id} appears twice in one append"
        ))),
        None => Ok(()),
    }
}
