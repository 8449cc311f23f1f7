//! Consumer checkpoints and parked events ([`CheckpointStore`](crate::CheckpointStore)).

use chrono::Utc;

use super::*;
use crate::checkpoint::ParkedEvent;
use crate::limits::MAX_NAME_BYTES;

/// Checkpoints start absent, keep the last saved position (also a lower one), and are kept
/// per exact name.
pub async fn checkpoints_round_trip<S: EventStore + Clone + 'static>(store: S) {
    let name = format!("projection-{}", Uuid::now_v7());
    assert_eq!(store.load_checkpoint(&name).await.expect("load"), None);
    store.save_checkpoint(&name, 42).await.expect("save");
    assert_eq!(store.load_checkpoint(&name).await.expect("load"), Some(42));
    store.save_checkpoint(&name, 57).await.expect("save");
    assert_eq!(store.load_checkpoint(&name).await.expect("load"), Some(57));
    store.save_checkpoint(&name, 0).await.expect("reset");
    assert_eq!(store.load_checkpoint(&name).await.expect("load"), Some(0));
    let neighbours = [
        name.to_uppercase(),
        format!("{name} "),
        format!("{name}[0/4]"),
        format!("{name}/é🦀"),
    ];
    for (i, other) in neighbours.iter().enumerate() {
        assert_eq!(
            store.load_checkpoint(other).await.expect("load"),
            None,
            "{other:?}"
        );
        store
            .save_checkpoint(other, 100 + i as u64)
            .await
            .expect("save");
    }
    for (i, other) in neighbours.iter().enumerate() {
        assert_eq!(
            store.load_checkpoint(other).await.expect("load"),
            Some(100 + i as u64),
            "{other:?}"
        );
    }
    assert_eq!(store.load_checkpoint(&name).await.expect("load"), Some(0));
}

/// Consumer names follow the name rules and positions must fit `i64`; a refused write leaves
/// the checkpoint as it was.
pub async fn checkpoint_names_and_positions_are_checked<S: EventStore + Clone + 'static>(store: S) {
    let name = format!("checked-{}", Uuid::now_v7());
    store.save_checkpoint(&name, 5).await.expect("save");
    assert_invalid(
        store.save_checkpoint(&name, i64::MAX as u64 + 1).await,
        "a position beyond i64",
    );
    assert_invalid(store.save_checkpoint(&name, u64::MAX).await, "u64::MAX");
    assert_eq!(store.load_checkpoint(&name).await.expect("load"), Some(5));
    store
        .save_checkpoint(&name, i64::MAX as u64)
        .await
        .expect("i64::MAX fits");
    assert_eq!(
        store.load_checkpoint(&name).await.expect("load"),
        Some(i64::MAX as u64)
    );
    let longest = "n".repeat(MAX_NAME_BYTES);
    store
        .save_checkpoint(&longest, 1)
        .await
        .expect("the longest name");
    assert_eq!(
        store.load_checkpoint(&longest).await.expect("load"),
        Some(1)
    );
    let multibyte = "é".repeat(MAX_NAME_BYTES / 2);
    store
        .save_checkpoint(&multibyte, 2)
        .await
        .expect("a multi-byte name within the limit");
    assert_eq!(
        store.load_checkpoint(&multibyte).await.expect("load"),
        Some(2)
    );
    for bad in [
        String::new(),
        "n".repeat(MAX_NAME_BYTES + 1),
        "é".repeat(MAX_NAME_BYTES / 2 + 1),
        "nul\0name".to_owned(),
    ] {
        let what = format!("consumer name of {} bytes", bad.len());
        assert_invalid(store.save_checkpoint(&bad, 1).await, &what);
        assert_invalid(store.load_checkpoint(&bad).await, &what);
        assert_invalid(store.parked(&bad).await, &what);
        assert_invalid(store.unpark(&bad, 1).await, &what);
    }
}

fn parked(stream: &StreamId, position: u64, attempts: u32, error: &str) -> ParkedEvent {
    ParkedEvent {
        position,
        event_id: (!position.is_multiple_of(20)).then(Uuid::now_v7),
        stream: stream.clone(),
        version: position / 10,
        event_name: format!("Event{position}"),
        error: error.to_owned(),
        attempts,
        parked_at: Utc::now(),
    }
}

#[track_caller]
fn assert_same_parked(got: &[ParkedEvent], want: &[&ParkedEvent]) {
    assert_eq!(got.len(), want.len(), "how many parked events");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            (
                g.position,
                g.event_id,
                &g.stream,
                g.version,
                &g.event_name,
                &g.error,
                g.attempts
            ),
            (
                w.position,
                w.event_id,
                &w.stream,
                w.version,
                &w.event_name,
                &w.error,
                w.attempts
            )
        );
        assert_eq!(
            g.parked_at.timestamp_micros(),
            w.parked_at.timestamp_micros(),
            "parked_at, to the microsecond"
        );
    }
}

/// Parked events come back whole, by position, per consumer; parking a position again
/// replaces it; unparking removes exactly one.
pub async fn parked_events_round_trip<S: EventStore + Clone + 'static>(store: S) {
    let consumer = format!("parker-{}", Uuid::now_v7());
    let other_consumer = format!("{consumer}-other");
    let s = StreamId::new("Conformance/Parked", "é🦀 / x");
    assert!(store.parked(&consumer).await.expect("parked").is_empty());
    let long_error = format!(
        "line one\nline \"two\" \u{1} 中文 🦀\n{}",
        "x".repeat(5_000)
    );
    let thirty = parked(&s, 30, 1, "first failure");
    let ten = parked(&s, 10, 5, &long_error);
    let twenty = parked(&s, 20, 3, "");
    for p in [&thirty, &ten, &twenty] {
        store.park(&consumer, p).await.expect("park");
    }
    let elsewhere = parked(&s, 10, 1, "another consumer's");
    store.park(&other_consumer, &elsewhere).await.expect("park");
    assert_same_parked(
        &store.parked(&consumer).await.expect("parked"),
        &[&ten, &twenty, &thirty],
    );
    let twenty_again = parked(&s, 20, 4, "failed again");
    store
        .park(&consumer, &twenty_again)
        .await
        .expect("park again");
    assert_same_parked(
        &store.parked(&consumer).await.expect("parked"),
        &[&ten, &twenty_again, &thirty],
    );
    assert!(store.unpark(&consumer, 20).await.expect("unpark"));
    assert!(!store.unpark(&consumer, 20).await.expect("unpark twice"));
    assert!(!store.unpark(&consumer, 999).await.expect("unpark unknown"));
    assert_same_parked(
        &store.parked(&consumer).await.expect("parked"),
        &[&ten, &thirty],
    );
    assert_same_parked(
        &store.parked(&other_consumer).await.expect("parked"),
        &[&elsewhere],
    );
    assert_invalid(
        store
            .park(&consumer, &parked(&s, i64::MAX as u64 + 1, 1, "beyond i64"))
            .await,
        "a parked position beyond i64",
    );
    assert_invalid(
        store.park("", &parked(&s, 40, 1, "no name")).await,
        "an empty consumer name",
    );
    let mut nowhere = parked(&s, 50, 1, "no stream");
    nowhere.stream = StreamId::new("Conformance", "");
    assert_invalid(
        store.park(&consumer, &nowhere).await,
        "an empty aggregate id",
    );
    assert_same_parked(
        &store.parked(&consumer).await.expect("parked"),
        &[&ten, &thirty],
    );
}
