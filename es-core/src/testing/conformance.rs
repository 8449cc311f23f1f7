//! The store-conformance suite: one set of checks that every [`EventStore`] runs against
//! itself, covering every semantic in the [`EventStore`] docs.
//!
//! Each case is a public async function taking a fresh, empty store. Run them all with
//! [`conformance_tests!`](crate::conformance_tests), which generates one test per case:
//!
//! ```ignore
//! async fn fresh_store() -> MyStore { /* an empty store */ }
//! es_core::conformance_tests!(fresh_store().await);
//! ```

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use serde_json::json;
use serde_json::value::{RawValue, to_raw_value};
use uuid::Uuid;

use crate::envelope::{NewEvent, RecordedEvent, ReplayEvent, Snapshot, StreamId};
use crate::error::Error;
use crate::log::{GlobalLogExt, LogFilter};
use crate::metadata::Metadata;
use crate::store::{EventStore, ExpectedVersion, StreamQuery};

/// Generates one `#[tokio::test]` per conformance case, each on the store `$fresh` evaluates
/// to (the expression may `.await`). The calling crate needs tokio with `macros` and
/// `rt-multi-thread`.
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:expr) => {
        $crate::conformance_tests!(@cases $fresh;
            append_to_new_stream_starts_at_version_one,
            versions_are_gapless_across_appends,
            no_stream_conflicts_when_stream_exists,
            stream_exists_conflicts_when_stream_is_missing,
            exact_version_mismatch_reports_actual_and_writes_nothing,
            any_version_always_appends,
            batch_is_atomic,
            empty_append_checks_expectation,
            idempotent_retry_returns_original_events,
            same_id_with_other_content_is_rejected,
            partially_replayed_batch_is_rejected,
            duplicate_ids_in_one_batch_are_rejected,
            streams_are_isolated_by_type_and_id,
            read_stream_by_version_range,
            read_stream_by_event_names,
            read_stream_until_time,
            metadata_and_payload_round_trip,
            read_all_pages_in_position_order,
            stream_all_visits_every_event_once,
            head_position_tracks_the_log,
            snapshots_keep_the_newest,
            load_stream_uses_matching_snapshot,
            checkpoints_round_trip,
            contested_stream_has_one_winner_per_version,
            concurrent_writers_keep_the_global_log_complete,
            follower_during_concurrent_writes_sees_every_event_once
        );
    };
    (@cases $fresh:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let store = $fresh;
                $crate::testing::conformance::$case(store).await;
            }
        )*
    };
}

fn payload(value: serde_json::Value) -> Box<RawValue> {
    to_raw_value(&value).expect("a serde_json::Value always encodes")
}

/// A new event named `name` with payload `{"n": n}` and a fresh id.
pub fn event(name: &str, n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_name: name.to_owned(),
        schema_version: 1,
        payload: payload(json!({ "n": n })),
        metadata: Metadata::by_user("conformance"),
    }
}

/// `count` events named `name`, payloads numbered from `first`.
pub fn events(name: &str, first: u64, count: u64) -> Vec<NewEvent> {
    (first..first + count).map(|n| event(name, n)).collect()
}

fn stream(id: &str) -> StreamId {
    StreamId::new("Conformance", format!("{id}-{}", Uuid::now_v7()))
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

async fn read(store: &impl EventStore, stream: &StreamId) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, &StreamQuery::all())
        .await
        .expect("read_stream")
}

#[track_caller]
fn assert_conflict(
    result: Result<Vec<RecordedEvent>, Error>,
    expected: ExpectedVersion,
    actual: u64,
) {
    match result {
        Err(Error::Conflict {
            expected: e,
            actual: a,
            ..
        }) => {
            assert_eq!(
                (e, a),
                (expected, actual),
                "conflict should report expected and actual versions"
            )
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// The first append to a stream gets version 1 and a position, and is readable back.
pub async fn append_to_new_stream_starts_at_version_one<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("new");
    let recorded = store
        .append(&s, ExpectedVersion::NoStream, vec![event("Opened", 1)])
        .await
        .expect("append");
    assert_eq!(versions(&recorded), [1]);
    assert!(recorded[0].position > 0, "positions start at 1");
    assert_eq!(recorded[0].stream, s);
    assert_eq!(store.stream_version(&s).await.expect("version"), 1);
    let read = read(&store, &s).await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].event_id, recorded[0].event_id);
}

/// Versions continue 1, 2, 3, … across appends of different sizes.
pub async fn versions_are_gapless_across_appends<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("gapless");
    store
        .append(&s, ExpectedVersion::NoStream, events("E", 1, 3))
        .await
        .expect("append 1");
    let second = store
        .append(&s, ExpectedVersion::Exact(3), events("E", 4, 2))
        .await
        .expect("append 2");
    assert_eq!(versions(&second), [4, 5]);
    store
        .append(&s, ExpectedVersion::Exact(5), events("E", 6, 1))
        .await
        .expect("append 3");
    assert_eq!(
        versions(&read(&store, &s).await),
        (1..=6).collect::<Vec<_>>()
    );
}

/// `NoStream` refuses a stream that has events.
pub async fn no_stream_conflicts_when_stream_exists<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("nostream");
    store
        .append(&s, ExpectedVersion::NoStream, events("E", 1, 2))
        .await
        .expect("append");
    assert_conflict(
        store
            .append(&s, ExpectedVersion::NoStream, events("E", 3, 1))
            .await,
        ExpectedVersion::NoStream,
        2,
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
        ExpectedVersion::StreamExists,
        0,
    );
    assert!(
        read(&store, &s).await.is_empty(),
        "a refused append writes nothing"
    );
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
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(2), events("E", 9, 2))
            .await,
        ExpectedVersion::Exact(2),
        3,
    );
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(7), events("E", 9, 1))
            .await,
        ExpectedVersion::Exact(7),
        3,
    );
    assert_eq!(versions(&read(&store, &s).await), [1, 2, 3]);
}

/// `Any` appends whatever the version.
pub async fn any_version_always_appends<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("any");
    store
        .append(&s, ExpectedVersion::Any, events("E", 1, 1))
        .await
        .expect("append on empty");
    let recorded = store
        .append(&s, ExpectedVersion::Any, events("E", 2, 2))
        .await
        .expect("append on existing");
    assert_eq!(versions(&recorded), [2, 3]);
}

/// A refused batch leaves no trace: not in the stream, not in the global log.
pub async fn batch_is_atomic<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("atomic");
    store
        .append(&s, ExpectedVersion::NoStream, events("E", 1, 1))
        .await
        .expect("append");
    let head = store.head_position().await.expect("head");
    let batch = events("E", 2, 50);
    let ids: HashSet<Uuid> = batch.iter().map(|e| e.event_id).collect();
    assert!(
        store
            .append(&s, ExpectedVersion::Exact(0), batch)
            .await
            .is_err()
    );
    assert_eq!(read(&store, &s).await.len(), 1);
    let log = store.read_all(0, 10_000).await.expect("read_all");
    assert!(
        log.iter().all(|e| !ids.contains(&e.event_id)),
        "no event of a refused batch is in the log"
    );
    assert_eq!(store.head_position().await.expect("head"), head);
}

/// An empty append writes nothing but still checks the expectation.
pub async fn empty_append_checks_expectation<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("empty");
    assert!(
        store
            .append(&s, ExpectedVersion::NoStream, Vec::new())
            .await
            .expect("empty append")
            .is_empty()
    );
    assert_eq!(store.stream_version(&s).await.expect("version"), 0);
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(4), Vec::new())
            .await,
        ExpectedVersion::Exact(4),
        0,
    );
}

/// Appending the same events again returns the originals and writes nothing, even though
/// the expectation no longer holds.
pub async fn idempotent_retry_returns_original_events<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("idem");
    let batch = events("E", 1, 3);
    let first = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("first append");
    let again = store
        .append(&s, ExpectedVersion::NoStream, batch)
        .await
        .expect("retry is idempotent");
    let key = |e: &RecordedEvent| (e.event_id, e.version, e.position);
    assert_eq!(
        first.iter().map(key).collect::<Vec<_>>(),
        again.iter().map(key).collect::<Vec<_>>()
    );
    assert_eq!(read(&store, &s).await.len(), 3, "no duplicates");
    assert_eq!(store.read_all(0, 10_000).await.expect("read_all").len(), 3);
}

/// The same event id with other content is an error naming the id.
pub async fn same_id_with_other_content_is_rejected<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("dupid");
    let original = event("E", 1);
    store
        .append(&s, ExpectedVersion::NoStream, vec![original.clone()])
        .await
        .expect("append");
    let mut altered = original.clone();
    altered.payload = payload(json!({ "n": 2 }));
    match store.append(&s, ExpectedVersion::Any, vec![altered]).await {
        Err(Error::DuplicateEventId { event_id, .. }) => assert_eq!(event_id, original.event_id),
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    let other_stream = stream("dupid-other");
    assert!(
        matches!(
            store
                .append(&other_stream, ExpectedVersion::Any, vec![original])
                .await,
            Err(Error::DuplicateEventId { .. })
        ),
        "the same id in another stream is not a retry"
    );
    assert_eq!(read(&store, &s).await.len(), 1);
    assert!(read(&store, &other_stream).await.is_empty());
}

/// A batch that repeats some stored ids and adds new ones is not a retry: rejected whole.
pub async fn partially_replayed_batch_is_rejected<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("partial");
    let first = events("E", 1, 2);
    store
        .append(&s, ExpectedVersion::NoStream, first.clone())
        .await
        .expect("append");
    let mut mixed = first;
    mixed.push(event("E", 3));
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, mixed).await,
        Err(Error::DuplicateEventId { .. })
    ));
    assert_eq!(read(&store, &s).await.len(), 2);
}

/// Two events with one id in the same batch are invalid.
pub async fn duplicate_ids_in_one_batch_are_rejected<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("samebatch");
    let e = event("E", 1);
    let result = store
        .append(&s, ExpectedVersion::Any, vec![e.clone(), e])
        .await;
    assert!(
        matches!(
            result,
            Err(Error::Invalid(_)) | Err(Error::DuplicateEventId { .. })
        ),
        "got {result:?}"
    );
    assert!(read(&store, &s).await.is_empty());
}

/// Streams with the same id but another aggregate type are separate.
pub async fn streams_are_isolated_by_type_and_id<S: EventStore + Clone + 'static>(store: S) {
    let id = format!("shared-{}", Uuid::now_v7());
    let a = StreamId::new("TypeA", id.clone());
    let b = StreamId::new("TypeB", id);
    store
        .append(&a, ExpectedVersion::NoStream, events("E", 1, 2))
        .await
        .expect("append a");
    let recorded = store
        .append(&b, ExpectedVersion::NoStream, events("E", 1, 1))
        .await
        .expect("append b");
    assert_eq!(versions(&recorded), [1]);
    assert_eq!(read(&store, &a).await.len(), 2);
    assert_eq!(read(&store, &b).await.len(), 1);
}

/// A version range selects exactly those versions.
pub async fn read_stream_by_version_range<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("range");
    store
        .append(&s, ExpectedVersion::NoStream, events("E", 1, 10))
        .await
        .expect("append");
    let middle = store
        .read_stream(&s, &StreamQuery::from(3..=6))
        .await
        .expect("read");
    assert_eq!(versions(&middle), [3, 4, 5, 6]);
    let tail = store
        .read_stream(&s, &StreamQuery::after(8))
        .await
        .expect("read");
    assert_eq!(versions(&tail), [9, 10]);
    let beyond = store
        .read_stream(&s, &StreamQuery::from(11..))
        .await
        .expect("read");
    assert!(beyond.is_empty());
    let missing = store
        .read_stream(&stream("missing"), &StreamQuery::all())
        .await
        .expect("read");
    assert!(missing.is_empty(), "a missing stream reads as empty");
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
    let deposits = store
        .read_stream(&s, &StreamQuery::all().with_names(["Deposited"]))
        .await
        .expect("read");
    assert_eq!(versions(&deposits), [2, 4]);
    let both = store
        .read_stream(
            &s,
            &StreamQuery::from(3..).with_names(["Deposited", "Withdrawn"]),
        )
        .await
        .expect("read");
    assert_eq!(versions(&both), [3, 4]);
}

/// `recorded_until` selects events recorded at or before a time.
pub async fn read_stream_until_time<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("time");
    let first = store
        .append(&s, ExpectedVersion::NoStream, events("E", 1, 2))
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(20)).await;
    store
        .append(&s, ExpectedVersion::Exact(2), events("E", 3, 1))
        .await
        .expect("append");
    let cut = first[1].recorded_at;
    let until = store
        .read_stream(&s, &StreamQuery::all().until(cut))
        .await
        .expect("read");
    assert_eq!(versions(&until), [1, 2]);
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

/// Every envelope field survives the store.
pub async fn metadata_and_payload_round_trip<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("meta");
    let correlation = Uuid::now_v7();
    let causation = Uuid::now_v7();
    let new = NewEvent {
        event_id: Uuid::now_v7(),
        event_name: "Detailed".into(),
        schema_version: 3,
        payload: payload(
            json!({ "text": "héllo \"quoted\"", "nested": { "list": [1, 2.5, null, true] } }),
        ),
        metadata: Metadata::by_user("u-7")
            .with_correlation_id(correlation)
            .with_causation_id(causation)
            .with_extra("ip", "127.0.0.1"),
    };
    store
        .append(&s, ExpectedVersion::NoStream, vec![new.clone()])
        .await
        .expect("append");
    let got = &read(&store, &s).await[0];
    assert_eq!(got.event_id, new.event_id);
    assert_eq!(got.event_name, "Detailed");
    assert_eq!(got.schema_version, 3);
    let as_value = |raw: &RawValue| {
        serde_json::from_str::<serde_json::Value>(raw.get()).expect("stored JSON parses")
    };
    assert_eq!(as_value(&got.payload), as_value(&new.payload));
    assert_eq!(got.metadata, new.metadata);
    assert_eq!(got.metadata.correlation_id, Some(correlation));
}

/// The global log pages in strictly increasing positions, across streams.
pub async fn read_all_pages_in_position_order<S: EventStore + Clone + 'static>(store: S) {
    let (a, b) = (stream("log-a"), stream("log-b"));
    for i in 0..5 {
        store
            .append(&a, ExpectedVersion::Any, events("A", i * 2, 2))
            .await
            .expect("append a");
        store
            .append(&b, ExpectedVersion::Any, events("B", i, 1))
            .await
            .expect("append b");
    }
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = store.read_all(after, 4).await.expect("read_all");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        after = page.last().map_or(after, |e| e.position);
        seen.extend(page);
    }
    assert_eq!(seen.len(), 15);
    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "positions strictly increase"
    );
    let a_versions: Vec<u64> = seen
        .iter()
        .filter(|e| e.stream == a)
        .map(|e| e.version)
        .collect();
    assert_eq!(
        a_versions,
        (1..=10).collect::<Vec<_>>(),
        "a stream's events appear in version order"
    );
}

/// The batched stream of the global log yields every event once.
pub async fn stream_all_visits_every_event_once<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("scan");
    for i in 0..7 {
        store
            .append(&s, ExpectedVersion::Any, events("E", i * 10, 10))
            .await
            .expect("append");
    }
    let all: Vec<RecordedEvent> = store
        .stream_all(0, 16, LogFilter::all())
        .map(|e| e.expect("scan"))
        .collect()
        .await;
    assert_eq!(all.len(), 70);
    let ids: HashSet<Uuid> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 70);
    let from_middle: Vec<RecordedEvent> = store
        .stream_all(all[29].position, 16, LogFilter::all())
        .map(|e| e.expect("scan"))
        .collect()
        .await;
    assert_eq!(
        from_middle.len(),
        40,
        "reading after a position skips exactly what precedes it"
    );
}

/// The head position is that of the last readable event.
pub async fn head_position_tracks_the_log<S: EventStore + Clone + 'static>(store: S) {
    assert_eq!(store.head_position().await.expect("head"), 0);
    let s = stream("head");
    let recorded = store
        .append(&s, ExpectedVersion::NoStream, events("E", 1, 3))
        .await
        .expect("append");
    assert_eq!(
        store.head_position().await.expect("head"),
        recorded[2].position
    );
}

/// A snapshot is replaced by a newer one, never by an older one; a new state version wins.
pub async fn snapshots_keep_the_newest<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("snap");
    assert!(store.load_snapshot(&s).await.expect("load").is_none());
    let snap = |version: u64, state_version: u32| Snapshot {
        stream: s.clone(),
        version,
        state_version,
        state: payload(json!({ "at": version, "sv": state_version })),
        taken_at: Utc::now(),
    };
    store.save_snapshot(snap(10, 1)).await.expect("save");
    store.save_snapshot(snap(5, 1)).await.expect("save older");
    assert_eq!(
        store
            .load_snapshot(&s)
            .await
            .expect("load")
            .map(|x| x.version),
        Some(10),
        "older never replaces newer"
    );
    store.save_snapshot(snap(20, 1)).await.expect("save newer");
    assert_eq!(
        store
            .load_snapshot(&s)
            .await
            .expect("load")
            .map(|x| x.version),
        Some(20)
    );
    store
        .save_snapshot(snap(3, 2))
        .await
        .expect("save new shape");
    let loaded = store
        .load_snapshot(&s)
        .await
        .expect("load")
        .expect("a snapshot");
    assert_eq!(
        (loaded.version, loaded.state_version),
        (3, 2),
        "a new state version replaces any old-shape snapshot"
    );
    store
        .save_snapshot(snap(30, 1))
        .await
        .expect("old code saves");
    assert_eq!(
        store
            .load_snapshot(&s)
            .await
            .expect("load")
            .map(|x| x.state_version),
        Some(2)
    );
}

/// `load_stream` returns a snapshot of the right state version and only the events after it.
pub async fn load_stream_uses_matching_snapshot<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("load");
    store
        .append(&s, ExpectedVersion::NoStream, events("E", 1, 10))
        .await
        .expect("append");
    let (none, all) = store.load_stream(&s, Some(1)).await.expect("load");
    assert!(none.is_none());
    assert_eq!(all.len(), 10);
    store
        .save_snapshot(Snapshot {
            stream: s.clone(),
            version: 7,
            state_version: 1,
            state: payload(json!(7)),
            taken_at: Utc::now(),
        })
        .await
        .expect("save");
    let (snapshot, rest) = store.load_stream(&s, Some(1)).await.expect("load");
    assert_eq!(snapshot.map(|x| x.version), Some(7));
    let stored = read(&store, &s).await;
    let fields = |e: &ReplayEvent| {
        (
            e.version,
            e.event_name.clone(),
            e.schema_version,
            e.payload.get().to_owned(),
        )
    };
    let expected: Vec<_> = stored[7..]
        .iter()
        .cloned()
        .map(|e| fields(&ReplayEvent::from(e)))
        .collect();
    let replayed: Vec<_> = rest.iter().map(fields).collect();
    assert_eq!(
        replayed, expected,
        "the events after the snapshot, as stored"
    );
    let (ignored, everything) = store.load_stream(&s, Some(2)).await.expect("load");
    assert!(
        ignored.is_none(),
        "a snapshot of another state version is not used"
    );
    assert_eq!(everything.len(), 10);
    let (no_snapshots, everything) = store.load_stream(&s, None).await.expect("load");
    assert!(no_snapshots.is_none());
    assert_eq!(everything.len(), 10);
}

/// Checkpoints start absent and keep the last saved position.
pub async fn checkpoints_round_trip<S: EventStore + Clone + 'static>(store: S) {
    let name = format!("projection-{}", Uuid::now_v7());
    assert_eq!(store.load_checkpoint(&name).await.expect("load"), None);
    store.save_checkpoint(&name, 42).await.expect("save");
    store.save_checkpoint(&name, 57).await.expect("save");
    assert_eq!(store.load_checkpoint(&name).await.expect("load"), Some(57));
    store.save_checkpoint(&name, 0).await.expect("reset");
    assert_eq!(store.load_checkpoint(&name).await.expect("load"), Some(0));
    assert_eq!(store.load_checkpoint("another").await.expect("load"), None);
}

/// Many tasks append at the same expected version: exactly one wins each version, the others
/// see a conflict with the actual version, and retries converge without gaps.
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
            let (mut wins, mut conflicts) = (0u64, 0u64);
            while wins < ROUNDS {
                let current = store.stream_version(&s).await.expect("version");
                match store
                    .append(&s, ExpectedVersion::Exact(current), vec![event("E", task)])
                    .await
                {
                    Ok(recorded) => {
                        assert_eq!(versions(&recorded), [current + 1]);
                        wins += 1;
                    }
                    Err(Error::Conflict { actual, .. }) => {
                        assert!(
                            actual > current,
                            "a conflict reports a newer actual version"
                        );
                        conflicts += 1;
                    }
                    Err(other) => panic!("unexpected error {other}"),
                }
            }
            conflicts
        }));
    }
    for handle in handles {
        handle.await.expect("task panicked");
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
    assert!(
        per_task.values().all(|&n| n == ROUNDS),
        "every task won exactly {ROUNDS} times"
    );
}

/// Concurrent writers on many streams: every event is in the log once, positions are unique
/// and increasing, and each stream's versions are gapless.
pub async fn concurrent_writers_keep_the_global_log_complete<S: EventStore + Clone + 'static>(
    store: S,
) {
    const WRITERS: u64 = 16;
    const APPENDS: u64 = 20;
    let mut handles = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..APPENDS {
                let s = StreamId::new("Concurrent", format!("w{writer}-s{}", i % 3));
                let batch = events("E", i, 1 + i % 3);
                ids.extend(batch.iter().map(|e| e.event_id));
                store
                    .append(&s, ExpectedVersion::Any, batch)
                    .await
                    .expect("append");
            }
            ids
        }));
    }
    let mut written = HashSet::new();
    for handle in handles {
        written.extend(handle.await.expect("writer panicked"));
    }
    let log: Vec<RecordedEvent> = store
        .stream_all(0, 97, LogFilter::all())
        .map(|e| e.expect("scan"))
        .collect()
        .await;
    let concurrent: Vec<&RecordedEvent> = log
        .iter()
        .filter(|e| e.stream.aggregate_type == "Concurrent")
        .collect();
    assert_eq!(concurrent.len(), written.len(), "every event once");
    assert!(concurrent.iter().all(|e| written.contains(&e.event_id)));
    assert!(log.windows(2).all(|w| w[0].position < w[1].position));
    let mut per_stream: HashMap<&StreamId, Vec<u64>> = HashMap::new();
    for e in &concurrent {
        per_stream.entry(&e.stream).or_default().push(e.version);
    }
    for (s, v) in per_stream {
        assert_eq!(
            v,
            (1..=v.len() as u64).collect::<Vec<_>>(),
            "{s} has gapless versions in log order"
        );
    }
}

/// A follower reading the global log while writers append sees every event exactly once,
/// in position order, never skipping one that committed late.
pub async fn follower_during_concurrent_writes_sees_every_event_once<
    S: EventStore + Clone + 'static,
>(
    store: S,
) {
    const WRITERS: u64 = 8;
    const APPENDS: u64 = 25;
    let start = store.head_position().await.expect("head");
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..APPENDS {
                let s = StreamId::new("Followed", format!("w{writer}"));
                let batch = events("E", i, 1 + i % 2);
                ids.extend(batch.iter().map(|e| e.event_id));
                store
                    .append(&s, ExpectedVersion::Any, batch)
                    .await
                    .expect("append");
                tokio::task::yield_now().await;
            }
            ids
        }));
    }
    let total_expected = WRITERS * (APPENDS + APPENDS / 2);
    let follower = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = start;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while (seen.len() as u64) < total_expected {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "follower saw {} of {total_expected} events",
                    seen.len()
                );
                let page = store.read_all(after, 7).await.expect("read_all");
                match page.last() {
                    Some(last) => after = last.position,
                    None => tokio::time::sleep(Duration::from_millis(2)).await,
                }
                seen.extend(page.into_iter().map(|e| (e.position, e.event_id)));
            }
            seen
        })
    };
    let mut written = HashSet::new();
    for writer in writers {
        written.extend(writer.await.expect("writer panicked"));
    }
    let seen = follower.await.expect("follower panicked");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "follower sees positions in order"
    );
    let seen_ids: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(seen_ids.len(), seen.len(), "no event seen twice");
    assert_eq!(seen_ids, written, "every committed event seen");
}
