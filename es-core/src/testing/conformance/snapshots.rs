//! Snapshots: which one is kept, what comes back, and `load_stream`
//! ([`SnapshotStore`](crate::SnapshotStore)).

use chrono::{DateTime, Utc};
use serde_json::json;

use super::values::{Sample, Sampler, exact};
use super::*;
use crate::aggregate::Aggregate;
use crate::envelope::Snapshot;
use crate::repository::Repository;

fn snapshot(stream: &StreamId, version: u64, state_version: u32, tag: &str) -> Snapshot {
    Snapshot {
        stream: stream.clone(),
        version,
        state_version,
        state: payload(json!({ "at": version, "sv": state_version, "tag": tag })),
        taken_at: Utc::now(),
    }
}

async fn kept<S: EventStore>(store: &S, stream: &StreamId) -> Option<(u64, u32, String)> {
    store
        .load_snapshot(stream)
        .await
        .expect("load_snapshot")
        .map(|s| {
            let state: serde_json::Value =
                serde_json::from_str(s.state.get()).expect("the state is JSON");
            let tag = state["tag"].as_str().unwrap_or_default().to_owned();
            (s.version, s.state_version, tag)
        })
}

/// A snapshot saved (stream version, state version, tag) and the one then kept.
type Step = (u64, u32, &'static str, (u64, u32, &'static str));

/// Timestamps as a store keeps them: to the microsecond.
fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A snapshot is replaced by a newer one, never by an older one; a higher state version wins
/// whatever its stream version.
pub async fn snapshots_keep_the_newest<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("snap");
    assert_eq!(kept(&store, &s).await, None);
    let steps: [Step; 6] = [
        (10, 1, "a", (10, 1, "a")),
        (5, 1, "older", (10, 1, "a")),
        (20, 1, "b", (20, 1, "b")),
        (3, 2, "new shape", (3, 2, "new shape")),
        (30, 1, "old code", (3, 2, "new shape")),
        (4, 2, "c", (4, 2, "c")),
    ];
    for (version, state_version, tag, (v, sv, t)) in steps {
        store
            .save_snapshot(snapshot(&s, version, state_version, tag))
            .await
            .expect("save_snapshot");
        assert_eq!(
            kept(&store, &s).await,
            Some((v, sv, t.to_owned())),
            "after saving {tag} at ({version}, {state_version})"
        );
    }
    let other = StreamId::new("ConformanceOther", s.aggregate_id.clone());
    assert_eq!(kept(&store, &other).await, None, "snapshots are per stream");
}

/// A snapshot at the same state version and stream version as the kept one replaces it.
pub async fn snapshot_ties_replace<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("ties");
    for (version, state_version, tag, (v, sv, t)) in [
        (10, 1, "a", (10, 1, "a")),
        (10, 1, "b", (10, 1, "b")),
        (9, 1, "c", (10, 1, "b")),
        (10, 2, "d", (10, 2, "d")),
        (10, 2, "e", (10, 2, "e")),
        (11, 1, "f", (10, 2, "e")),
    ] {
        store
            .save_snapshot(snapshot(&s, version, state_version, tag))
            .await
            .expect("save_snapshot");
        assert_eq!(
            kept(&store, &s).await,
            Some((v, sv, t.to_owned())),
            "after saving {tag} at ({version}, {state_version})"
        );
    }
}

/// Every field of a snapshot comes back: stream, versions, state (by JSON value) and the time
/// it was taken (to the microsecond).
pub async fn snapshots_round_trip_every_field<S: EventStore + Clone + 'static>(store: S) {
    let s = StreamId::new("Conformance/Snapshots", format!("é/🦀-{}", Uuid::now_v7()));
    let state = json!({
        "text": "héllo \"quoted\" \\ \u{1} 中文 🦀",
        "numbers": [0, -1, 1.5, 1e300, 5e-324, i64::MIN, u64::MAX],
        "nested": { "b": [true, null, { "c": {} }], "a": [] },
    });
    store
        .append(&s, ExpectedVersion::NoStream, events("E", 0, 7))
        .await
        .expect("the stream the snapshot is of");
    let saved = Snapshot {
        stream: s.clone(),
        version: 7,
        state_version: 3,
        state: payload(state),
        taken_at: Utc::now(),
    };
    store
        .save_snapshot(saved.clone())
        .await
        .expect("save_snapshot");
    let loaded = store
        .load_snapshot(&s)
        .await
        .expect("load_snapshot")
        .expect("saved");
    assert_eq!(
        (&loaded.stream, loaded.version, loaded.state_version),
        (&saved.stream, saved.version, saved.state_version)
    );
    assert!(
        same_json(loaded.state.get(), saved.state.get()),
        "{}",
        loaded.state.get()
    );
    assert_eq!(micros(loaded.taken_at), micros(saved.taken_at), "taken_at");
    let (through_load, events) = store.load_stream(&s, Some(3)).await.expect("load_stream");
    let through_load = through_load.expect("the snapshot of that state version");
    assert_eq!(through_load.version, 7);
    assert!(same_json(through_load.state.get(), saved.state.get()));
    assert!(
        events.is_empty(),
        "the stream has no events after the snapshot"
    );
}

/// `load_stream` returns a snapshot of the asked state version and exactly the events after
/// it, compared with what was appended.
pub async fn load_stream_uses_matching_snapshot<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("load");
    let sent = events("E", 1, 10);
    store
        .append(&s, ExpectedVersion::NoStream, sent.clone())
        .await
        .expect("append");
    let expect_after = |after: usize| -> Vec<(u64, String, u32, String)> {
        sent[after..]
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    (after + i + 1) as u64,
                    e.event_name.clone(),
                    e.schema_version,
                    e.payload.get().to_owned(),
                )
            })
            .collect()
    };
    let check = |events: &[crate::envelope::ReplayEvent], after: usize, what: &str| {
        let want = expect_after(after);
        assert_eq!(events.len(), want.len(), "{what}: how many events");
        for (got, (version, name, schema, text)) in events.iter().zip(&want) {
            assert_eq!(
                (got.version, &got.event_name, got.schema_version),
                (*version, name, *schema),
                "{what}"
            );
            assert!(
                same_json(got.payload.get(), text),
                "{what}: payload of {version}"
            );
        }
    };
    let (none, all) = store.load_stream(&s, Some(1)).await.expect("load");
    assert!(none.is_none());
    check(&all, 0, "no snapshot yet");
    store
        .save_snapshot(snapshot(&s, 7, 1, "seven"))
        .await
        .expect("save");
    let (found, rest) = store.load_stream(&s, Some(1)).await.expect("load");
    let found = found.expect("the snapshot of state version 1");
    assert_eq!((found.version, found.state_version), (7, 1));
    assert!(same_json(
        found.state.get(),
        r#"{"at":7,"sv":1,"tag":"seven"}"#
    ));
    check(&rest, 7, "after the snapshot");
    let (ignored, everything) = store.load_stream(&s, Some(2)).await.expect("load");
    assert!(
        ignored.is_none(),
        "a snapshot of another state version is not used"
    );
    check(&everything, 0, "another state version");
    let (no_snapshots, everything) = store.load_stream(&s, None).await.expect("load");
    assert!(no_snapshots.is_none());
    check(&everything, 0, "no snapshots asked");
    store
        .save_snapshot(snapshot(&s, 10, 1, "ten"))
        .await
        .expect("save");
    let (at_end, nothing) = store.load_stream(&s, Some(1)).await.expect("load");
    assert_eq!(at_end.map(|s| s.version), Some(10));
    check(&nothing, 10, "a snapshot at the stream's end");
    let (missing_snapshot, missing) = store
        .load_stream(&stream("load-missing"), Some(1))
        .await
        .expect("load");
    assert!(missing_snapshot.is_none() && missing.is_empty());
}

/// A snapshot beyond its stream's end (restored from elsewhere, or written by a bug) is stored
/// as given; the repository does not trust it and loads the state a replay gives.
pub async fn snapshot_newer_than_its_stream_makes_the_repository_replay<
    S: EventStore + Clone + 'static,
>(
    store: S,
) {
    let mut rng = Rng::seeded(7);
    let id = format!("ahead-{}", Uuid::now_v7());
    let stream = StreamId::new(Sampler::TYPE, id.as_str());
    let samples: Vec<Sample> = (0..2).map(|_| Sample::generate(&mut rng)).collect();
    let writer = Repository::<Sampler, _>::new(store.clone());
    for sample in &samples {
        writer
            .execute(&id, Metadata::by_user("ahead"), |_: &Sampler| {
                Ok::<_, String>(sample.clone())
            })
            .await
            .expect("execute");
    }
    let bogus = Sampler {
        samples: (0..12).map(|_| Sample::generate(&mut rng)).collect(),
    };
    store
        .save_snapshot(Snapshot {
            stream: stream.clone(),
            version: 12,
            state_version: Sampler::STATE_VERSION,
            state: serde_json::value::to_raw_value(&bogus).expect("encode"),
            taken_at: Utc::now(),
        })
        .await
        .expect("a snapshot beyond the stream is stored as given");
    assert_eq!(
        store
            .load_snapshot(&stream)
            .await
            .expect("load_snapshot")
            .map(|s| s.version),
        Some(12)
    );
    let (snapshot, events) = store
        .load_stream(&stream, Some(Sampler::STATE_VERSION))
        .await
        .expect("load_stream");
    assert!(
        snapshot.is_none(),
        "load_stream leaves out a snapshot beyond its stream"
    );
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2],
        "and returns the whole stream"
    );
    let replay = Sampler {
        samples: samples.iter().map(Sample::normalized).collect(),
    };
    let fresh = Repository::<Sampler, _>::new(store.clone());
    let loaded = fresh.load(&id).await.expect("load");
    assert_eq!(
        loaded.version, 2,
        "the stream's version, not the snapshot's"
    );
    assert_eq!(
        exact(&loaded.state),
        exact(&replay),
        "the state a replay gives"
    );
    let next = Sample::generate(&mut rng);
    let committed = fresh
        .execute(&id, Metadata::by_user("ahead"), |state: &Sampler| {
            assert_eq!(
                state.samples.len(),
                2,
                "the command sees the replayed state"
            );
            Ok::<_, String>(next.clone())
        })
        .await
        .expect("a command after the bogus snapshot");
    assert_eq!(committed.version, 3);
    assert_eq!(read(&store, &stream).await.len(), 3);
}
