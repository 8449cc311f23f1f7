//! Streams: appends with optimistic concurrency, idempotent retries, stream reads and
//! `read_event` ([`StreamStore`](crate::StreamStore)).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tokio::sync::Barrier;
use uuid::Uuid;

use super::*;

/// The first append to a stream gets version 1 and a position, and reads back as returned.
pub async fn append_to_new_stream_starts_at_version_one<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("new");
    let sent = event("Opened", 1);
    let recorded = store
        .append(&s, ExpectedVersion::NoStream, vec![sent.clone()])
        .await
        .expect("append");
    assert_eq!(versions(&recorded), [1]);
    assert!(recorded[0].position > 0, "positions start at 1");
    assert_holds(&recorded[0], &sent, &s, "the append's result");
    assert_eq!(store.stream_version(&s).await.expect("version"), 1);
    let read = read(&store, &s).await;
    assert_eq!(read.len(), 1);
    assert_same_record(&read[0], &recorded[0], "read back");
}

/// Versions continue 1, 2, 3, … across appends of different sizes.
pub async fn versions_are_gapless_across_appends<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("gapless");
    let mut sent = Vec::new();
    for (expected, batch) in [
        (ExpectedVersion::NoStream, events("E", 1, 3)),
        (ExpectedVersion::Exact(3), events("E", 4, 2)),
        (ExpectedVersion::Exact(5), events("E", 6, 1)),
    ] {
        let first = sent.len() as u64 + 1;
        sent.extend(new_ids(&batch));
        let recorded = store.append(&s, expected, batch).await.expect("append");
        assert_eq!(
            versions(&recorded),
            (first..=sent.len() as u64).collect::<Vec<_>>()
        );
    }
    let all = read(&store, &s).await;
    assert_eq!(versions(&all), (1..=6).collect::<Vec<_>>());
    assert_eq!(ids(&all), sent, "in the order appended");
    assert_eq!(store.stream_version(&s).await.expect("version"), 6);
}

/// `NoStream` refuses a stream that has events, and writes nothing.
pub async fn no_stream_conflicts_when_stream_exists<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("nostream");
    store
        .append(&s, ExpectedVersion::NoStream, events("E", 1, 2))
        .await
        .expect("append");
    let refused = events("E", 3, 1);
    assert_conflict(
        store
            .append(&s, ExpectedVersion::NoStream, refused.clone())
            .await,
        &s,
        ExpectedVersion::NoStream,
        2,
    );
    assert_eq!(store.stream_version(&s).await.expect("version"), 2);
    assert!(
        store
            .read_event(refused[0].event_id)
            .await
            .expect("read_event")
            .is_none()
    );
}

/// `StreamExists` refuses a stream with no events, and accepts one with events.
pub async fn stream_exists_conflicts_when_stream_is_missing<S: EventStore + Clone + 'static>(
    store: S,
) {
    let s = stream("exists");
    assert_conflict(
        store
            .append(&s, ExpectedVersion::StreamExists, events("E", 1, 1))
            .await,
        &s,
        ExpectedVersion::StreamExists,
        0,
    );
    assert!(
        read(&store, &s).await.is_empty(),
        "a refused append writes nothing"
    );
    assert_eq!(store.head_position().await.expect("head"), 0);
    store
        .append(&s, ExpectedVersion::Any, events("E", 1, 1))
        .await
        .expect("append");
    let recorded = store
        .append(&s, ExpectedVersion::StreamExists, events("E", 2, 1))
        .await
        .expect("append");
    assert_eq!(versions(&recorded), [2]);
}

/// `Exact(n)` refuses any other version, reports the actual one, and writes nothing.
pub async fn exact_version_mismatch_reports_actual_and_writes_nothing<
    S: EventStore + Clone + 'static,
>(
    store: S,
) {
    let s = stream("exact");
    store
        .append(&s, ExpectedVersion::Exact(0), events("E", 1, 3))
        .await
        .expect("append at 0");
    let head = store.head_position().await.expect("head");
    for expected in [0, 2, 4, 7] {
        assert_conflict(
            store
                .append(&s, ExpectedVersion::Exact(expected), events("E", 9, 2))
                .await,
            &s,
            ExpectedVersion::Exact(expected),
            3,
        );
    }
    assert_eq!(versions(&read(&store, &s).await), [1, 2, 3]);
    assert_eq!(store.head_position().await.expect("head"), head);
}

/// `Any` appends whatever the version.
pub async fn any_version_always_appends<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("any");
    let first = store
        .append(&s, ExpectedVersion::Any, events("E", 1, 1))
        .await
        .expect("append on empty");
    assert_eq!(versions(&first), [1]);
    let recorded = store
        .append(&s, ExpectedVersion::Any, events("E", 2, 2))
        .await
        .expect("append on existing");
    assert_eq!(versions(&recorded), [2, 3]);
}

/// A refused batch leaves no trace: not in the stream, not in the global log, not by id.
pub async fn batch_is_atomic<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("atomic");
    let kept = store
        .append(&s, ExpectedVersion::NoStream, events("E", 1, 1))
        .await
        .expect("append");
    let head = store.head_position().await.expect("head");
    let batch = events("E", 2, 50);
    let refused = new_ids(&batch);
    assert_conflict(
        store.append(&s, ExpectedVersion::Exact(0), batch).await,
        &s,
        ExpectedVersion::Exact(0),
        1,
    );
    assert_eq!(ids(&read(&store, &s).await), ids(&kept));
    let log = read_log_all(&store, 0, &LogFilter::all()).await;
    assert_eq!(
        ids(&log),
        ids(&kept),
        "no event of a refused batch is in the log"
    );
    for id in refused {
        assert!(store.read_event(id).await.expect("read_event").is_none());
    }
    assert_eq!(store.head_position().await.expect("head"), head);
}

/// An empty append writes nothing but still checks the expectation.
pub async fn empty_append_checks_expectation<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("empty");
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Any,
    ] {
        let recorded = store
            .append(&s, expected, Vec::new())
            .await
            .expect("empty append");
        assert!(recorded.is_empty());
    }
    assert_eq!(store.stream_version(&s).await.expect("version"), 0);
    assert_eq!(store.head_position().await.expect("head"), 0);
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(4), Vec::new())
            .await,
        &s,
        ExpectedVersion::Exact(4),
        0,
    );
    assert_conflict(
        store
            .append(&s, ExpectedVersion::StreamExists, Vec::new())
            .await,
        &s,
        ExpectedVersion::StreamExists,
        0,
    );
    store
        .append(&s, ExpectedVersion::NoStream, events("E", 1, 2))
        .await
        .expect("append");
    let head = store.head_position().await.expect("head");
    assert!(
        store
            .append(&s, ExpectedVersion::Exact(2), Vec::new())
            .await
            .expect("empty append at the right version")
            .is_empty()
    );
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(1), Vec::new())
            .await,
        &s,
        ExpectedVersion::Exact(1),
        2,
    );
    assert_eq!(store.stream_version(&s).await.expect("version"), 2);
    assert_eq!(store.head_position().await.expect("head"), head);
}

/// Batches of 17, 51 and 500 events (beyond any small-batch path a store may have) land in
/// order, with consecutive versions and increasing positions, and retry idempotently.
pub async fn large_batches_keep_order<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("large");
    let mut version = 0;
    let mut last_position = 0;
    let mut all_sent = Vec::new();
    let mut batches = Vec::new();
    for size in [17u64, 51, 500] {
        let batch = events("E", version, size);
        let recorded = store
            .append(&s, ExpectedVersion::Exact(version), batch.clone())
            .await
            .expect("append a large batch");
        assert_eq!(
            versions(&recorded),
            (version + 1..=version + size).collect::<Vec<_>>()
        );
        for (got, sent) in recorded.iter().zip(&batch) {
            assert_holds(got, sent, &s, "a large batch");
            assert!(
                got.position > last_position,
                "positions increase in batch order"
            );
            last_position = got.position;
        }
        version += size;
        all_sent.extend(new_ids(&batch));
        batches.push((batch, recorded));
    }
    assert_eq!(ids(&read(&store, &s).await), all_sent);
    let (batch, recorded) = &batches[1];
    let again = store
        .append(&s, ExpectedVersion::Any, batch.clone())
        .await
        .expect("retry of a batch of 51");
    assert_eq!(again.len(), recorded.len());
    for (a, r) in again.iter().zip(recorded) {
        assert_same_record(a, r, "a retried batch of 51");
    }
    let head = store.head_position().await.expect("head");
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(17), events("E", 0, 51))
            .await,
        &s,
        ExpectedVersion::Exact(17),
        version,
    );
    assert_eq!(store.head_position().await.expect("head"), head);
    assert_eq!(store.stream_version(&s).await.expect("version"), version);
}

/// Appending the same events again returns the originals, as first recorded, and writes
/// nothing, whatever the expectation says.
pub async fn idempotent_retry_returns_original_events<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("idem");
    let batch = events("E", 1, 3);
    let first = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("first append");
    let head = store.head_position().await.expect("head");
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Exact(3),
        ExpectedVersion::Exact(9),
        ExpectedVersion::StreamExists,
        ExpectedVersion::Any,
    ] {
        let again = store
            .append(&s, expected, batch.clone())
            .await
            .unwrap_or_else(|e| panic!("a retry expecting {expected} is idempotent: {e}"));
        assert_eq!(again.len(), 3);
        for (a, f) in again.iter().zip(&first) {
            assert_same_record(a, f, "a retry returns the events as first stored");
        }
    }
    assert_eq!(ids(&read(&store, &s).await), ids(&first), "no duplicates");
    assert_eq!(
        ids(&read_log_all(&store, 0, &LogFilter::all()).await),
        ids(&first)
    );
    assert_eq!(store.head_position().await.expect("head"), head);
}

/// A retry that comes after other appends (to the same stream and others) still returns the
/// first outcome, at its original versions and positions.
pub async fn retry_after_later_appends_returns_the_first_outcome<
    S: EventStore + Clone + 'static,
>(
    store: S,
) {
    let (s, other) = (stream("later"), stream("later-other"));
    let a = events("A", 1, 2);
    let b = events("B", 1, 1);
    let first_a = store
        .append(&s, ExpectedVersion::NoStream, a.clone())
        .await
        .expect("append a");
    let first_b = store
        .append(&s, ExpectedVersion::Exact(2), b.clone())
        .await
        .expect("append b");
    store
        .append(&other, ExpectedVersion::NoStream, events("C", 1, 2))
        .await
        .expect("append c");
    let head = store.head_position().await.expect("head");
    let again_a = store
        .append(&s, ExpectedVersion::NoStream, a)
        .await
        .expect("retry a");
    let again_b = store
        .append(&s, ExpectedVersion::Exact(0), b)
        .await
        .expect("retry b");
    for (again, first) in [(&again_a, &first_a), (&again_b, &first_b)] {
        assert_eq!(again.len(), first.len());
        for (x, y) in again.iter().zip(first) {
            assert_same_record(x, y, "a late retry");
        }
    }
    assert_eq!(versions(&again_a), [1, 2]);
    assert_eq!(versions(&again_b), [3]);
    assert_eq!(store.stream_version(&s).await.expect("version"), 3);
    assert_eq!(store.head_position().await.expect("head"), head);
}

/// Many tasks, on two handles, append the same batch at once: every one gets the same
/// events back, and the stream holds them once.
pub async fn concurrent_identical_retries_converge<S: EventStore + Clone + 'static>(
    store: S,
    other: S,
) {
    const TASKS: usize = 16;
    let s = stream("retries");
    for (round, expected) in [ExpectedVersion::NoStream, ExpectedVersion::Exact(3)]
        .into_iter()
        .enumerate()
    {
        let batch = events("E", round as u64 * 3, 3);
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let handle = if task % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            let (s, batch, barrier) = (s.clone(), batch.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                handle.append(&s, expected, batch).await
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(
                task.await
                    .expect("task panicked")
                    .expect("an identical retry succeeds, whoever wins"),
            );
        }
        let first = &outcomes[0];
        assert_eq!(ids(first), new_ids(&batch));
        let base = round as u64 * 3;
        assert_eq!(versions(first), [base + 1, base + 2, base + 3]);
        for outcome in &outcomes[1..] {
            assert_eq!(outcome.len(), 3);
            for (x, y) in outcome.iter().zip(first) {
                assert_same_record(x, y, "concurrent identical appends");
            }
        }
    }
    let stored = read(&store, &s).await;
    assert_eq!(versions(&stored), [1, 2, 3, 4, 5, 6]);
    assert_eq!(read_log_all(&other, 0, &LogFilter::all()).await.len(), 6);
}

/// The same id with another name or schema version is not a retry: `DuplicateEventId`.
pub async fn retry_differing_in_name_or_schema_version_is_a_duplicate<
    S: EventStore + Clone + 'static,
>(
    store: S,
) {
    let s = stream("differ");
    let batch = events("E", 1, 2);
    store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("append");
    let head = store.head_position().await.expect("head");
    let mut renamed = batch[0].clone();
    renamed.event_name = "Renamed".into();
    assert_duplicate(
        store.append(&s, ExpectedVersion::Any, vec![renamed]).await,
        batch[0].event_id,
        &s,
    );
    let mut reversioned = batch[1].clone();
    reversioned.schema_version = 2;
    assert_duplicate(
        store
            .append(
                &s,
                ExpectedVersion::Any,
                vec![batch[0].clone(), reversioned],
            )
            .await,
        batch[1].event_id,
        &s,
    );
    assert_eq!(store.stream_version(&s).await.expect("version"), 2);
    assert_eq!(store.head_position().await.expect("head"), head);
    let stored = read(&store, &s).await;
    assert_eq!(
        stored
            .iter()
            .map(|e| (e.event_name.as_str(), e.schema_version))
            .collect::<Vec<_>>(),
        [("E", 1), ("E", 1)]
    );
}

/// A retry that differs only in metadata is a retry: it returns the events with the metadata
/// first stored, and changes nothing.
pub async fn retry_differing_only_in_metadata_returns_the_stored_metadata<
    S: EventStore + Clone + 'static,
>(
    store: S,
) {
    let s = stream("meta-retry");
    let mut original = events("E", 1, 2);
    for e in &mut original {
        e.metadata = Metadata::by_user("first").with_extra("attempt", 1);
    }
    let first = store
        .append(&s, ExpectedVersion::NoStream, original.clone())
        .await
        .expect("append");
    let mut retry = original.clone();
    for e in &mut retry {
        e.metadata = Metadata::by_user("second")
            .with_causation_id(Uuid::now_v7())
            .with_extra("attempt", 2);
    }
    let again = store
        .append(&s, ExpectedVersion::Exact(0), retry)
        .await
        .expect("a retry with other metadata is a retry");
    for ((a, f), sent) in again.iter().zip(&first).zip(&original) {
        assert_same_record(a, f, "the retry's result");
        assert_eq!(a.metadata, sent.metadata, "the stored metadata wins");
    }
    for (r, sent) in read(&store, &s).await.iter().zip(&original) {
        assert_eq!(
            r.metadata, sent.metadata,
            "the stored metadata is unchanged"
        );
    }
    assert_eq!(store.stream_version(&s).await.expect("version"), 2);
}

/// The same event id with another payload, or in another stream, is an error naming the id
/// and where it is stored.
pub async fn same_id_with_other_content_is_rejected<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("dupid");
    let original = event("E", 1);
    store
        .append(&s, ExpectedVersion::NoStream, vec![original.clone()])
        .await
        .expect("append");
    let mut altered = original.clone();
    altered.payload = payload(json!({ "n": 2 }));
    assert_duplicate(
        store.append(&s, ExpectedVersion::Any, vec![altered]).await,
        original.event_id,
        &s,
    );
    let other_stream = stream("dupid-other");
    assert_duplicate(
        store
            .append(&other_stream, ExpectedVersion::Any, vec![original.clone()])
            .await,
        original.event_id,
        &s,
    );
    let other_type = StreamId::new("ConformanceOther", s.aggregate_id.clone());
    assert_duplicate(
        store
            .append(&other_type, ExpectedVersion::Any, vec![original.clone()])
            .await,
        original.event_id,
        &s,
    );
    assert_eq!(read(&store, &s).await.len(), 1);
    assert!(read(&store, &other_stream).await.is_empty());
    assert!(read(&store, &other_type).await.is_empty());
}

/// A batch that repeats some stored ids and adds new ones is not a retry: rejected whole.
pub async fn partially_replayed_batch_is_rejected<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("partial");
    let first = events("E", 1, 2);
    store
        .append(&s, ExpectedVersion::NoStream, first.clone())
        .await
        .expect("append");
    let head = store.head_position().await.expect("head");
    let fresh = event("E", 3);
    for mixed in [
        vec![first[0].clone(), first[1].clone(), fresh.clone()],
        vec![fresh.clone(), first[1].clone()],
        vec![first[1].clone()],
    ] {
        let complete_retry = mixed.len() == 1;
        let result = store.append(&s, ExpectedVersion::Any, mixed).await;
        if complete_retry {
            // A retry of a stored event alone is a retry, even if it was stored in a batch.
            assert_eq!(versions(&result.expect("a sub-batch retry")), [2]);
            continue;
        }
        match result {
            Err(Error::DuplicateEventId { event_id, stream }) => {
                assert!(
                    new_ids(&first).contains(&event_id),
                    "names a reused id, not {event_id}"
                );
                assert_eq!(stream, s);
            }
            other => panic!("expected DuplicateEventId, got {other:?}"),
        }
    }
    assert_eq!(versions(&read(&store, &s).await), [1, 2]);
    assert!(
        store
            .read_event(fresh.event_id)
            .await
            .expect("read_event")
            .is_none()
    );
    assert_eq!(store.head_position().await.expect("head"), head);
}

/// Streams with the same id but another aggregate type are separate.
pub async fn streams_are_isolated_by_type_and_id<S: EventStore + Clone + 'static>(store: S) {
    let id = format!("shared-{}", Uuid::now_v7());
    let a = StreamId::new("TypeA", id.clone());
    let b = StreamId::new("TypeB", id);
    let in_a = store
        .append(&a, ExpectedVersion::NoStream, events("E", 1, 2))
        .await
        .expect("append a");
    let in_b = store
        .append(&b, ExpectedVersion::NoStream, events("E", 1, 1))
        .await
        .expect("append b");
    assert_eq!(versions(&in_b), [1]);
    assert_eq!(ids(&read(&store, &a).await), ids(&in_a));
    assert_eq!(ids(&read(&store, &b).await), ids(&in_b));
    assert_eq!(store.stream_version(&a).await.expect("version"), 2);
    assert_eq!(store.stream_version(&b).await.expect("version"), 1);
}

/// Stream ids are compared byte for byte: no case folding, trimming, Unicode normalisation,
/// and a `/` in a type or an id does not make two streams one.
pub async fn stream_ids_are_compared_exactly<S: EventStore + Clone + 'static>(store: S) {
    let t = format!("Exact{}", Uuid::now_v7().simple());
    let slash_type = format!("{t}/a");
    let streams = [
        StreamId::new(t.as_str(), "a/b"),
        StreamId::new(slash_type.as_str(), "b"),
        StreamId::new(t.as_str(), "/"),
        StreamId::new(t.as_str(), "x"),
        StreamId::new(t.as_str(), "X"),
        StreamId::new(t.as_str(), "x "),
        StreamId::new(t.as_str(), " x"),
        StreamId::new(t.as_str(), "\u{00C4}"),
        StreamId::new(t.as_str(), "A\u{0308}"),
        StreamId::new(t.as_str(), "🦀 crab"),
        StreamId::new(t.as_str(), "שלום"),
        StreamId::new(t.as_str(), "中文/ид"),
        StreamId::new(t.as_str(), "tab\there"),
        StreamId::new(t.as_str(), "\u{FEFF}bom"),
        StreamId::new(t.as_str(), "'; DROP TABLE events; --"),
        StreamId::new(t.as_str(), "%_\\"),
    ];
    let mut appended = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        let recorded = store
            .append(s, ExpectedVersion::NoStream, vec![event("E", i as u64)])
            .await
            .unwrap_or_else(|e| panic!("append to {s:?}: {e}"));
        assert_eq!(&recorded[0].stream, s);
        appended.push(recorded.remove_first());
    }
    for (s, recorded) in streams.iter().zip(&appended) {
        let stored = read(&store, s).await;
        assert_eq!(stored.len(), 1, "{s:?} holds only its own event");
        assert_same_record(&stored[0], recorded, "an exact stream id");
        assert_eq!(store.stream_version(s).await.expect("version"), 1);
        let by_id = store
            .read_event(recorded.event_id)
            .await
            .expect("read_event")
            .expect("stored");
        assert_eq!(&by_id.stream, s, "read_event keeps the stream id exactly");
    }
    let log = read_log_all(&store, 0, &LogFilter::all().aggregate_types([t.as_str()])).await;
    assert_eq!(
        log.len(),
        streams.len() - 1,
        "the type with a slash is another type"
    );
}

trait RemoveFirst<T> {
    fn remove_first(self) -> T;
}

impl<T> RemoveFirst<T> for Vec<T> {
    fn remove_first(self) -> T {
        self.into_iter().next().expect("one element")
    }
}

/// A version range selects exactly those versions.
pub async fn read_stream_by_version_range<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("range");
    let all = store
        .append(&s, ExpectedVersion::NoStream, events("E", 1, 10))
        .await
        .expect("append");
    let cases: [(StreamQuery, &[u64]); 6] = [
        (StreamQuery::from(3..=6), &[3, 4, 5, 6]),
        (StreamQuery::from(3..6), &[3, 4, 5]),
        (StreamQuery::after(8), &[9, 10]),
        (StreamQuery::from(..=2), &[1, 2]),
        (StreamQuery::from(10..=10), &[10]),
        (StreamQuery::from(11..), &[]),
    ];
    for (query, expected) in cases {
        let got = store.read_stream(&s, &query).await.expect("read");
        assert_eq!(versions(&got), expected, "{query:?}");
        for e in &got {
            assert_same_record(e, &all[(e.version - 1) as usize], "a range read");
        }
    }
    let missing = store
        .read_stream(&stream("missing"), &StreamQuery::all())
        .await
        .expect("read");
    assert!(missing.is_empty(), "a missing stream reads as empty");
    assert_eq!(
        store
            .stream_version(&stream("missing"))
            .await
            .expect("version"),
        0
    );
}

/// Inverted ranges and empty name lists read nothing; a range starting at 0 starts at 1; a
/// range ending beyond the stream ends with it.
pub async fn inverted_and_extreme_ranges_read_nothing_or_everything<
    S: EventStore + Clone + 'static,
>(
    store: S,
) {
    let s = stream("inverted");
    store
        .append(&s, ExpectedVersion::NoStream, events("E", 1, 10))
        .await
        .expect("append");
    let everything: Vec<u64> = (1..=10).collect();
    let from_zero = StreamQuery {
        from_version: 0,
        ..StreamQuery::all()
    };
    let inverted = StreamQuery {
        from_version: 7,
        to_version: Some(3),
        ..StreamQuery::all()
    };
    let inverted_names = inverted.clone().with_names(["E"]);
    let cases: [(StreamQuery, &[u64]); 8] = [
        (inverted, &[]),
        (StreamQuery::from(5..5), &[]),
        (StreamQuery::from(0..=0), &[]),
        (from_zero, &everything),
        (StreamQuery::from(..=1000), &everything),
        (StreamQuery::from(4..=1000), &everything[3..]),
        (StreamQuery::all().with_names(Vec::<String>::new()), &[]),
        (inverted_names, &[]),
    ];
    for (query, expected) in cases {
        let got = store.read_stream(&s, &query).await.expect("read");
        assert_eq!(versions(&got), expected, "{query:?}");
    }
}

/// A name filter selects only those events, keeping their versions.
pub async fn read_stream_by_event_names<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("names");
    let batch = vec![
        event("Opened", 1),
        event("Deposited", 2),
        event("Withdrawn", 3),
        event("Deposited", 4),
    ];
    store
        .append(&s, ExpectedVersion::NoStream, batch)
        .await
        .expect("append");
    let cases: [(StreamQuery, &[u64]); 5] = [
        (StreamQuery::all().with_names(["Deposited"]), &[2, 4]),
        (
            StreamQuery::from(3..).with_names(["Deposited", "Withdrawn"]),
            &[3, 4],
        ),
        (StreamQuery::from(..=3).with_names(["Deposited"]), &[2]),
        (StreamQuery::all().with_names(["Closed"]), &[]),
        (StreamQuery::all().with_names(["deposited"]), &[]),
    ];
    for (query, expected) in cases {
        let got = store.read_stream(&s, &query).await.expect("read");
        assert_eq!(versions(&got), expected, "{query:?}");
    }
}

/// `recorded_until` selects events recorded at or before a time.
pub async fn read_stream_until_time<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("time");
    let first = store
        .append(&s, ExpectedVersion::NoStream, events("E", 1, 2))
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = store
        .append(&s, ExpectedVersion::Exact(2), events("E", 3, 1))
        .await
        .expect("append");
    assert!(
        second[0].recorded_at > first[1].recorded_at,
        "a later append is recorded later"
    );
    let cut = first[1].recorded_at;
    let until = store
        .read_stream(&s, &StreamQuery::all().until(cut))
        .await
        .expect("read");
    assert_eq!(versions(&until), [1, 2]);
    let until_second = store
        .read_stream(&s, &StreamQuery::all().until(second[0].recorded_at))
        .await
        .expect("read");
    assert_eq!(versions(&until_second), [1, 2, 3], "the bound is inclusive");
    let before_all = store
        .read_stream(
            &s,
            &StreamQuery::all().until(first[0].recorded_at - chrono::Duration::seconds(1)),
        )
        .await
        .expect("read");
    assert!(before_all.is_empty());
    assert!(first[0].recorded_at <= Utc::now());
}

/// `read_event` finds every stored event by id, as stored, and nothing else.
pub async fn read_event_finds_stored_events_only<S: EventStore + Clone + 'static>(store: S) {
    let (a, b) = (stream("byid-a"), stream("byid-b"));
    let mut stored = store
        .append(&a, ExpectedVersion::NoStream, events("A", 1, 2))
        .await
        .expect("append a");
    stored.extend(
        store
            .append(&b, ExpectedVersion::NoStream, events("B", 1, 1))
            .await
            .expect("append b"),
    );
    for recorded in &stored {
        let found = store
            .read_event(recorded.event_id)
            .await
            .expect("read_event")
            .expect("a stored event is found");
        assert_same_record(&found, recorded, "read_event");
    }
    assert!(
        store
            .read_event(Uuid::now_v7())
            .await
            .expect("read_event")
            .is_none()
    );
    assert!(
        store
            .read_event(Uuid::nil())
            .await
            .expect("read_event")
            .is_none()
    );
    let refused = event("A", 9);
    assert!(
        store
            .append(&a, ExpectedVersion::NoStream, vec![refused.clone()])
            .await
            .is_err()
    );
    assert!(
        store
            .read_event(refused.event_id)
            .await
            .expect("read_event")
            .is_none()
    );
}

/// Rounds of many tasks appending at the same expected version: in each round exactly one
/// wins, and every other task gets a conflict reporting exactly the winner's version.
pub async fn contested_stream_has_one_winner_per_round<S: EventStore + Clone + 'static>(store: S) {
    const TASKS: usize = 12;
    const ROUNDS: u64 = 6;
    let s = stream("rounds");
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (store, s, barrier) = (store.clone(), s.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for round in 0..ROUNDS {
                barrier.wait().await;
                let result = store
                    .append(
                        &s,
                        ExpectedVersion::Exact(round),
                        vec![event("E", task as u64)],
                    )
                    .await;
                outcomes.push(match result {
                    Ok(recorded) => {
                        assert_eq!(versions(&recorded), [round + 1]);
                        true
                    }
                    Err(Error::Conflict {
                        expected, actual, ..
                    }) => {
                        assert_eq!(
                            (expected, actual),
                            (ExpectedVersion::Exact(round), round + 1),
                            "the loser sees exactly the winner's version"
                        );
                        false
                    }
                    Err(other) => panic!("round {round}: unexpected error {other:?}"),
                });
                // Nobody starts the next round before every task has its answer.
                barrier.wait().await;
            }
            outcomes
        }));
    }
    let mut wins_per_round = vec![0; ROUNDS as usize];
    for task in tasks {
        for (round, won) in task.await.expect("task panicked").into_iter().enumerate() {
            wins_per_round[round] += usize::from(won);
        }
    }
    assert_eq!(
        wins_per_round,
        vec![1; ROUNDS as usize],
        "one winner per round"
    );
    assert_eq!(
        versions(&read(&store, &s).await),
        (1..=ROUNDS).collect::<Vec<_>>()
    );
}

/// Many tasks race on one stream, each reading the version and appending at it until it won
/// a number of times: one event per version, every conflict reports a newer version, and
/// the attempts add up.
pub async fn contested_stream_has_one_winner_per_version<S: EventStore + Clone + 'static>(
    store: S,
) {
    const TASKS: u64 = 16;
    const ROUNDS: u64 = 8;
    let s = stream("contested");
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let (store, s) = (store.clone(), s.clone());
        handles.push(tokio::spawn(async move {
            let (mut wins, mut conflicts, mut attempts) = (0u64, 0u64, 0u64);
            while wins < ROUNDS {
                let current = store.stream_version(&s).await.expect("version");
                attempts += 1;
                match store
                    .append(&s, ExpectedVersion::Exact(current), vec![event("E", task)])
                    .await
                {
                    Ok(recorded) => {
                        assert_eq!(versions(&recorded), [current + 1]);
                        wins += 1;
                    }
                    Err(Error::Conflict {
                        expected, actual, ..
                    }) => {
                        assert_eq!(expected, ExpectedVersion::Exact(current));
                        assert!(
                            actual > current && actual <= TASKS * ROUNDS,
                            "a conflict reports a newer actual version ({actual} after {current})"
                        );
                        conflicts += 1;
                    }
                    Err(other) => panic!("unexpected error {other:?}"),
                }
            }
            (wins, conflicts, attempts)
        }));
    }
    let mut total_conflicts = 0;
    for handle in handles {
        let (wins, conflicts, attempts) = handle.await.expect("task panicked");
        assert_eq!(wins, ROUNDS);
        assert_eq!(
            wins + conflicts,
            attempts,
            "every attempt won or conflicted"
        );
        total_conflicts += conflicts;
    }
    let all = read(&store, &s).await;
    assert_eq!(
        versions(&all),
        (1..=TASKS * ROUNDS).collect::<Vec<_>>(),
        "one event per version, no gaps"
    );
    let per_task = all.iter().fold(HashMap::<String, u64>::new(), |mut m, e| {
        *m.entry(e.payload.get().to_owned()).or_default() += 1;
        m
    });
    assert_eq!(per_task.len() as u64, TASKS);
    assert!(
        per_task.values().all(|&n| n == ROUNDS),
        "every task won exactly {ROUNDS} times"
    );
    eprintln!(
        "contested stream: {total_conflicts} conflicts for {} wins",
        TASKS * ROUNDS
    );
}
