//! Cancellation: any future a store returns may be dropped at any await point; an append
//! then committed whole or not at all, a later read tells which, and the store keeps working.

use std::collections::{HashMap, HashSet};

use super::*;
use crate::log::GlobalLogExt;

/// What became of one append whose future may have been dropped.
struct Attempt {
    stream: StreamId,
    events: Vec<NewEvent>,
    acknowledged: Option<Vec<RecordedEvent>>,
}

/// Many tasks append (and read) with most futures dropped after a random time, drawn up to
/// twice the time an undisturbed append of that task last took (so that on a slow store some
/// appends still complete and on a fast one some are still cut). Afterwards
/// every append is whole or absent (`read_event` tells which), every acknowledged one is
/// stored as acknowledged, streams stay gapless, the log holds each stored event once,
/// retrying an absent append with the same ids stores it once, and the store keeps working.
pub async fn dropped_appends_commit_whole_or_not_at_all<S: EventStore + Clone + 'static>(store: S) {
    const TASKS: u64 = 16;
    const OPERATIONS: u64 = 40;
    let mut rng = Rng::for_case("dropped_appends_commit_whole_or_not_at_all");
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        let mut rng = Rng::seeded(rng.next_u64());
        tasks.push(tokio::spawn(async move {
            let s = StreamId::new("Cancelled", format!("t{task}-{}", Uuid::now_v7()));
            let mut attempts = Vec::new();
            // How long an undisturbed append of this task took last; patience is drawn below
            // twice that.
            let mut typical = Duration::from_millis(3);
            for i in 0..OPERATIONS {
                let undisturbed = i % 5 == 0;
                let patience = if undisturbed {
                    Duration::from_secs(60)
                } else {
                    let bound = u64::try_from(typical.as_micros() * 2).unwrap_or(u64::MAX);
                    Duration::from_micros(rng.below(bound.max(1) + 1))
                };
                let began = tokio::time::Instant::now();
                match rng.below(10) {
                    0 => {
                        let _ = tokio::time::timeout(
                            patience,
                            store.read_stream(&s, &StreamQuery::all()),
                        )
                        .await;
                    }
                    1 => {
                        let _ = tokio::time::timeout(
                            patience,
                            store.read_log(0, 100, &LogFilter::all()),
                        )
                        .await;
                    }
                    _ => {
                        let batch = events("E", i, 1 + rng.below(4));
                        let outcome = tokio::time::timeout(
                            patience,
                            store.append(&s, ExpectedVersion::Any, batch.clone()),
                        )
                        .await;
                        if undisturbed {
                            typical = began.elapsed();
                        }
                        let acknowledged = match outcome {
                            Ok(Ok(recorded)) => Some(recorded),
                            Ok(Err(error)) => {
                                panic!("an append that was not dropped failed: {error:?}")
                            }
                            Err(_dropped) => None,
                        };
                        attempts.push(Attempt {
                            stream: s.clone(),
                            events: batch,
                            acknowledged,
                        });
                    }
                }
            }
            attempts
        }));
    }
    let mut attempts = Vec::new();
    for task in tasks {
        attempts.extend(task.await.expect("task panicked"));
    }
    let (mut acknowledged, mut dropped, mut stored, mut absent) = (0, 0, 0, 0);
    let mut stored_ids = HashSet::new();
    let mut absent_attempts = Vec::new();
    for attempt in &attempts {
        let mut found = Vec::new();
        for e in &attempt.events {
            found.push(store.read_event(e.event_id).await.expect("read_event"));
        }
        let present = found.iter().filter(|f| f.is_some()).count();
        assert!(
            present == 0 || present == found.len(),
            "an append of {} events left {present} of them",
            found.len()
        );
        match &attempt.acknowledged {
            Some(recorded) => {
                acknowledged += 1;
                for (f, r) in found.iter().zip(recorded) {
                    let f = f.as_ref().expect("an acknowledged event is stored");
                    assert_same_record(f, r, "an acknowledged append");
                }
            }
            None => dropped += 1,
        }
        if present == 0 {
            absent += 1;
            absent_attempts.push(attempt);
            continue;
        }
        stored += 1;
        let recorded: Vec<RecordedEvent> = found.into_iter().flatten().collect();
        let first = recorded[0].version;
        for (k, (r, sent)) in recorded.iter().zip(&attempt.events).enumerate() {
            assert_holds(r, sent, &attempt.stream, "a stored append");
            assert_eq!(
                r.version,
                first + k as u64,
                "an append's events are consecutive"
            );
        }
        stored_ids.extend(ids(&recorded));
    }
    eprintln!(
        "cancellation storm: {} appends attempted, {acknowledged} acknowledged, {dropped} dropped, {stored} stored, {absent} absent",
        attempts.len()
    );
    assert!(
        acknowledged >= attempts.len() / 10,
        "too few appends completed ({acknowledged} of {}) for the checks to mean much",
        attempts.len()
    );
    let log = read_log_all(&store, 0, &LogFilter::all()).await;
    let log_ids: Vec<Uuid> = ids(&log);
    assert_eq!(
        log_ids.iter().copied().collect::<HashSet<_>>().len(),
        log_ids.len(),
        "the log holds each event once"
    );
    assert_eq!(
        log_ids.iter().copied().collect::<HashSet<_>>(),
        stored_ids,
        "the log holds exactly the stored appends"
    );
    let mut per_stream: HashMap<StreamId, u64> = HashMap::new();
    for e in &log {
        let version = per_stream.entry(e.stream.clone()).or_default();
        *version += 1;
        assert_eq!(e.version, *version, "{} stays gapless", e.stream);
    }
    // Retrying what was lost, with the same ids, stores it exactly once; retrying what is
    // stored returns it.
    for attempt in absent_attempts.iter().take(20) {
        let first = store
            .append(
                &attempt.stream,
                ExpectedVersion::Any,
                attempt.events.clone(),
            )
            .await
            .expect("a retry of a lost append");
        let again = store
            .append(
                &attempt.stream,
                ExpectedVersion::Any,
                attempt.events.clone(),
            )
            .await
            .expect("a second retry");
        assert_eq!(ids(&first), new_ids(&attempt.events));
        for (a, f) in again.iter().zip(&first) {
            assert_same_record(a, f, "a retry after a lost append");
        }
    }
    // The store keeps working: every stream takes an append at its exact version.
    for (s, version) in per_stream {
        let recorded = store
            .append(
                &s,
                ExpectedVersion::Exact(store.stream_version(&s).await.expect("version")),
                events("After", 0, 1),
            )
            .await
            .expect("the store keeps working");
        assert!(recorded[0].version > version);
    }
    let all: Vec<RecordedEvent> = read_log_all(&store, 0, &LogFilter::all()).await;
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let head = store.head_position().await.expect("head");
    assert_eq!(all.last().map(|e| e.position), Some(head));
    let _ = store.read_all(0, 1).await.expect("reads still work");
}
