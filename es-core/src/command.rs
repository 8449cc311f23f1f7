//! Command keys: the identity that makes a command safe to retry.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::StreamId;

/// Namespace of the name-based UUIDs this module derives (a fixed, random UUID).
const NAMESPACE: Uuid = Uuid::from_u128(0x6f0c_3b4e_9a51_4d2b_8e07_52d1_c4a9_e3f1);

/// Identifies one command. The ids of the events a command produces are derived from its key
/// ([`CommandKey::event_id`]), so running the same command again with the same key, after a
/// timeout or a lost connection, from this process or another, finds its events already
/// stored and returns the first outcome instead of appending again
/// ([`Repository::execute_once`](crate::Repository::execute_once)).
///
/// ```
/// use es_core::{CommandKey, StreamId};
/// let key = CommandKey::from_text("request-7f3a");
/// let stream = StreamId::new("Account", "acc-1");
/// assert_eq!(key.event_id(&stream, 0), CommandKey::from_text("request-7f3a").event_id(&stream, 0));
/// assert_ne!(key.event_id(&stream, 0), key.event_id(&stream, 1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CommandKey(Uuid);

impl CommandKey {
    /// A fresh key (a UUIDv7): a command that is never retried under the same key.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// A key the caller already has as a UUID (a command id, a request id).
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// A key from arbitrary text, such as an HTTP `Idempotency-Key` header.
    pub fn from_text(key: &str) -> Self {
        Self(Uuid::new_v5(&NAMESPACE, key.as_bytes()))
    }

    /// The key of the command a process manager issues in reaction to event `event_id`, for
    /// its step `step`: redelivering the event re-issues the same command, which then
    /// returns its first outcome.
    pub fn caused_by(event_id: Uuid, step: &str) -> Self {
        let mut name = Vec::with_capacity(16 + step.len());
        name.extend_from_slice(event_id.as_bytes());
        name.extend_from_slice(step.as_bytes());
        Self(keep_time(event_id, Uuid::new_v5(&NAMESPACE, &name)))
    }

    /// The key as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The id of event number `index` (from 0) that this command appends to `stream`.
    ///
    /// Deterministic in the key, the stream and the index. When the key is a UUIDv7, the
    /// derived id keeps its 48-bit timestamp prefix, so ids stay roughly time-ordered (which
    /// keeps B-tree inserts local) and the ids of one command sort together.
    pub fn event_id(&self, stream: &StreamId, index: usize) -> Uuid {
        let mut name =
            Vec::with_capacity(16 + stream.aggregate_type.len() + stream.aggregate_id.len() + 10);
        name.extend_from_slice(self.0.as_bytes());
        name.extend_from_slice(stream.aggregate_type.as_bytes());
        name.push(0);
        name.extend_from_slice(stream.aggregate_id.as_bytes());
        name.push(0);
        name.extend_from_slice(&(index as u64).to_be_bytes());
        keep_time(self.0, Uuid::new_v5(&NAMESPACE, &name))
    }
}

impl Default for CommandKey {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CommandKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Uuid> for CommandKey {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

/// `derived` as a UUIDv8 that starts with `source`'s timestamp when `source` is a UUIDv7.
fn keep_time(source: Uuid, derived: Uuid) -> Uuid {
    let mut bytes = *derived.as_bytes();
    if source.get_version_num() == 7 {
        bytes[..6].copy_from_slice(&source.as_bytes()[..6]);
    }
    Uuid::new_v8(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_deterministic_distinct_and_keep_v7_time() {
        let key = CommandKey::new();
        let a = StreamId::new("A", "1");
        let b = StreamId::new("A", "2");
        assert_eq!(key.event_id(&a, 0), key.event_id(&a, 0));
        assert_ne!(key.event_id(&a, 0), key.event_id(&b, 0));
        assert_ne!(key.event_id(&a, 0), key.event_id(&a, 1));
        assert_ne!(key.event_id(&a, 0), CommandKey::new().event_id(&a, 0));
        assert_eq!(
            key.event_id(&a, 3).as_bytes()[..6],
            key.as_uuid().as_bytes()[..6]
        );
        assert_eq!(key.event_id(&a, 3).get_version_num(), 8);
        let step = CommandKey::caused_by(key.as_uuid(), "debit");
        assert_eq!(step, CommandKey::caused_by(key.as_uuid(), "debit"));
        assert_ne!(step, CommandKey::caused_by(key.as_uuid(), "credit"));
    }
}
