//! Stream versions this store has seen committed, so that an append at `Exact(n)` can leave
//! out its look at version `n`.
//!
//! `Exact(n)` claims a stream at version `n`. The unique key refuses a second `n + 1`, but
//! only a look at version `n` refuses a gap (`n + 1` written onto a stream of fewer than `n`
//! events). Events are never deleted (the append-only triggers of migration 5), so a version
//! once seen committed exists for good: when this store has written, read or been told of
//! version `n` or later of a stream, its statements skip the look (`Check::None` rather than
//! `Check::Version`, see `crate::sql::Check`). A repository's appends always qualify, since the
//! version they expect is one the store just returned; so do a writer's successive appends.
//!
//! Only committed versions are recorded: what an append returned (or a conflict reported),
//! and what a read outside any transaction returned. An [`append_in`] is not, as its
//! transaction may still roll back.
//!
//! The memory is bounded: two generations of at most [`GENERATION`] streams each. When the
//! current one is full it becomes the previous one and the oldest is forgotten, so the
//! streams used recently stay known at a constant cost per call. A forgotten stream only costs
//! its next append the look again.
//!
//! Erasure tooling that deletes events (through the triggers' deliberate bypass) must restart
//! the processes whose stores saw them.
//!
//! [`append_in`]: crate::PostgresStore::append_in

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use es_core::StreamId;

/// Most streams in one generation.
pub(crate) const GENERATION: usize = 10_000;

/// The highest committed version seen per stream (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct KnownVersions {
    generations: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<StreamId, u64>,
    previous: HashMap<StreamId, u64>,
}

impl KnownVersions {
    /// Whether version `version` of `stream` is known to exist.
    pub(crate) fn holds(&self, stream: &StreamId, version: u64) -> bool {
        let generations = self.lock();
        let seen = generations
            .current
            .get(stream)
            .or_else(|| generations.previous.get(stream));
        seen.is_some_and(|&seen| seen >= version)
    }

    /// Records that version `version` of `stream` exists, committed. Version 0 (no stream)
    /// says nothing.
    pub(crate) fn saw(&self, stream: &StreamId, version: u64) {
        if version == 0 {
            return;
        }
        let mut generations = self.lock();
        if let Some(seen) = generations.current.get_mut(stream) {
            *seen = (*seen).max(version);
            return;
        }
        let before = generations.previous.get(stream).copied().unwrap_or(0);
        if generations.current.len() >= GENERATION {
            generations.previous = std::mem::take(&mut generations.current);
        }
        generations
            .current
            .insert(stream.clone(), version.max(before));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(i: usize) -> StreamId {
        StreamId::new("Account", format!("a{i}"))
    }

    #[test]
    fn a_version_is_known_once_it_or_a_later_one_was_seen() {
        let known = KnownVersions::default();
        assert!(!known.holds(&stream(1), 1));
        known.saw(&stream(1), 3);
        assert!(known.holds(&stream(1), 1));
        assert!(known.holds(&stream(1), 3));
        assert!(
            !known.holds(&stream(1), 4),
            "a version beyond the seen one is not known"
        );
        known.saw(&stream(1), 2);
        assert!(
            known.holds(&stream(1), 3),
            "an older sighting does not lower it"
        );
        known.saw(&stream(2), 0);
        assert!(!known.holds(&stream(2), 1));
    }

    #[test]
    fn the_oldest_generation_is_forgotten_and_recent_streams_stay() {
        let known = KnownVersions::default();
        known.saw(&stream(0), 5);
        for i in 1..GENERATION {
            known.saw(&stream(i), 1);
        }
        // Full: the next new stream starts a generation; stream 0 is still in the previous.
        known.saw(&stream(GENERATION), 1);
        assert!(known.holds(&stream(0), 5));
        // Seen again, it moves to the current generation, keeping its version.
        known.saw(&stream(0), 1);
        assert!(known.holds(&stream(0), 5));
        for i in GENERATION + 1..2 * GENERATION + 1 {
            known.saw(&stream(i), 1);
        }
        assert!(known.holds(&stream(0), 5), "recently seen: kept");
        assert!(
            !known.holds(&stream(1), 1),
            "two generations old: forgotten"
        );
    }
}
