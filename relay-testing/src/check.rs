//! What a broker holds, compared with the log.

use std::collections::HashSet;
use std::time::Duration;

use es_core::{Error, GlobalLog, LogFilter, RecordedEvent};
use futures::{Stream, StreamExt};

use crate::events::canonical;

/// Asserts that `held` (the positions a broker holds, in its order) are exactly the positions
/// of `log`, in order; otherwise panics naming `what`, the duplicates and the first missing.
pub fn assert_positions(what: &str, held: &[u64], log: &[RecordedEvent]) {
    let expected: Vec<u64> = log.iter().map(|e| e.position).collect();
    if held == expected.as_slice() {
        return;
    }
    let mut seen = HashSet::new();
    let duplicates: Vec<_> = held.iter().filter(|p| !seen.insert(**p)).collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|p| !seen.contains(*p))
        .take(20)
        .collect();
    panic!(
        "{what} holds {} events, the log {}; duplicates {duplicates:?}; missing (first 20) {missing:?}",
        held.len(),
        expected.len()
    );
}

/// Reads all of `log` in pages of `page` events, asserting that the empty page at the end
/// reports `scanned_to` where the read started.
pub async fn read_in_pages<L: GlobalLog>(log: &L, page: usize) -> Vec<RecordedEvent> {
    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let events = log
            .read_log(after, page, &LogFilter::all())
            .await
            .expect("read");
        if events.events.is_empty() {
            assert_eq!(events.scanned_to, after);
            return read;
        }
        after = events.scanned_to;
        read.extend(events.events);
    }
}

/// Asserts that `read` and `log` are the same events, field for field.
pub fn assert_same_events(read: &[RecordedEvent], log: &[RecordedEvent]) {
    assert_eq!(
        read.iter().map(canonical).collect::<Vec<_>>(),
        log.iter().map(canonical).collect::<Vec<_>>()
    );
}

/// Asserts that `events` (a follower, [`GlobalLogExt::subscribe`](es_core::GlobalLogExt))
/// yields `expected`, each within `wait`.
pub async fn follow<S>(events: &mut S, expected: &[RecordedEvent], wait: Duration)
where
    S: Stream<Item = Result<RecordedEvent, Error>> + Unpin,
{
    for expected in expected {
        let event = tokio::time::timeout(wait, events.next())
            .await
            .expect("the follower gets every event")
            .expect("stream open")
            .expect("no read error");
        assert_eq!(canonical(&event), canonical(expected));
    }
}
