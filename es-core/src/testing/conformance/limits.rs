//! The input rules of [`Limits`]: what one store accepts every store accepts,
//! and what one refuses every store refuses with [`Error::Invalid`], before writing anything.

use chrono::Utc;
use serde_json::json;

use super::*;
use crate::envelope::Snapshot;
use crate::json::MAX_JSON_DEPTH;
use crate::limits::{Limits, MAX_ID_BYTES, MAX_NAME_BYTES};

/// Asserts that every read by stream id refuses `stream` with [`Error::Invalid`], as appends do:
/// a store must not answer "empty" for an id it could never have stored.
async fn refuse_reads<S: EventStore>(store: &S, stream: &StreamId, what: &str) {
    assert_invalid(
        store.read_stream(stream, &StreamQuery::all()).await,
        &format!("read_stream of {what}"),
    );
    assert_invalid(
        store.stream_version(stream).await,
        &format!("stream_version of {what}"),
    );
    assert_invalid(
        store.load_snapshot(stream).await,
        &format!("load_snapshot of {what}"),
    );
    assert_invalid(
        store.load_stream(stream, Some(1)).await,
        &format!("load_stream of {what}"),
    );
}

/// Asserts that a refused append wrote nothing: no event by id, the stream and head unchanged.
async fn assert_nothing_written<S: EventStore>(
    store: &S,
    stream: &StreamId,
    refused: &[NewEvent],
    head: u64,
    what: &str,
) {
    for e in refused {
        assert!(
            store
                .read_event(e.event_id)
                .await
                .expect("read_event")
                .is_none(),
            "{what}: a refused event is stored"
        );
    }
    assert_eq!(
        store.head_position().await.expect("head"),
        head,
        "{what}: the head moved"
    );
    if crate::limits::check_stream(stream).is_ok() {
        assert_eq!(
            store.stream_version(stream).await.expect("version"),
            0,
            "{what}: the stream has events"
        );
    }
}

async fn refuse_append<S: EventStore>(
    store: &S,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    what: &str,
) {
    let head = store.head_position().await.expect("head");
    assert_invalid(store.append(stream, expected, events.clone()).await, what);
    assert_nothing_written(store, stream, &events, head, what).await;
}

fn snapshot_of(
    stream: &StreamId,
    version: u64,
    state_version: u32,
    state: Box<RawValue>,
) -> Snapshot {
    Snapshot {
        stream: stream.clone(),
        version,
        state_version,
        state,
        taken_at: Utc::now(),
    }
}

/// Versions and positions beyond `i64`, schema and state versions beyond `i32` or zero: all
/// refused with `Invalid`, nothing written; the largest storable values are accepted.
pub async fn numeric_limits_are_refused_before_any_write<S: EventStore + Clone + 'static>(
    store: S,
) {
    let s = stream("numeric");
    for v in [i64::MAX as u64 + 1, u64::MAX] {
        refuse_append(
            &store,
            &s,
            ExpectedVersion::Exact(v),
            events("E", 1, 1),
            &format!("expected version {v}"),
        )
        .await;
    }
    assert_conflict(
        store
            .append(
                &s,
                ExpectedVersion::Exact(i64::MAX as u64),
                events("E", 1, 1),
            )
            .await,
        &s,
        ExpectedVersion::Exact(i64::MAX as u64),
        0,
    );
    for schema_version in [0, i32::MAX as u32 + 1, u32::MAX] {
        let mut e = event("E", 1);
        e.schema_version = schema_version;
        let mut batch = events("E", 2, 2);
        batch.push(e);
        refuse_append(
            &store,
            &s,
            ExpectedVersion::Any,
            batch,
            &format!("schema version {schema_version}"),
        )
        .await;
    }
    let mut highest = event("E", 1);
    highest.schema_version = i32::MAX as u32;
    let stored = store
        .append(&s, ExpectedVersion::NoStream, vec![highest])
        .await
        .expect("schema version i32::MAX is storable");
    assert_eq!(read(&store, &s).await[0].schema_version, i32::MAX as u32);
    assert_eq!(stored[0].schema_version, i32::MAX as u32);

    let snap = stream("numeric-snapshot");
    let state = || payload(json!({ "ok": true }));
    for (version, state_version) in [
        (i64::MAX as u64 + 1, 1),
        (u64::MAX, 1),
        (1, 0),
        (1, i32::MAX as u32 + 1),
        (1, u32::MAX),
    ] {
        assert_invalid(
            store
                .save_snapshot(snapshot_of(&snap, version, state_version, state()))
                .await,
            &format!("snapshot at version {version}, state version {state_version}"),
        );
        assert!(store.load_snapshot(&snap).await.expect("load").is_none());
    }
    store
        .save_snapshot(snapshot_of(
            &snap,
            i64::MAX as u64,
            i32::MAX as u32,
            state(),
        ))
        .await
        .expect("the largest storable snapshot versions");
    let kept = store
        .load_snapshot(&snap)
        .await
        .expect("load")
        .expect("saved");
    assert_eq!(
        (kept.version, kept.state_version),
        (i64::MAX as u64, i32::MAX as u32)
    );
    // Beyond its (empty) stream: load_stream leaves it out, and reads the range without error.
    let (loaded, rest) = store
        .load_stream(&snap, Some(i32::MAX as u32))
        .await
        .expect("load_stream past every event");
    assert!(loaded.is_none());
    assert!(rest.is_empty());
}

/// Reads with bounds beyond what a store can hold find nothing, without an error.
pub async fn reads_beyond_the_storable_range_find_nothing<S: EventStore + Clone + 'static>(
    store: S,
) {
    let s = stream("beyond");
    store
        .append(&s, ExpectedVersion::NoStream, events("E", 1, 3))
        .await
        .expect("append");
    let huge = [i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX];
    for v in huge {
        let from = StreamQuery {
            from_version: v,
            ..StreamQuery::all()
        };
        assert!(
            store
                .read_stream(&s, &from)
                .await
                .expect("read from")
                .is_empty()
        );
        let to = StreamQuery::from(..=v);
        assert_eq!(
            versions(&store.read_stream(&s, &to).await.expect("read to")),
            [1, 2, 3]
        );
        let page = store
            .read_log(v, 10, &LogFilter::all())
            .await
            .expect("read_log");
        assert!(page.events.is_empty(), "nothing after position {v}");
        assert_eq!(page.scanned_to, v);
        let below = store
            .read_log(0, 10, &LogFilter::all().before(v))
            .await
            .expect("read_log before");
        assert_eq!(below.events.len(), 3, "before {v} is everything");
    }
    let (snapshot, events) = store
        .load_stream(&s, Some(u32::MAX))
        .await
        .expect("load_stream");
    assert!(snapshot.is_none());
    assert_eq!(events.len(), 3);
}

/// Stream ids, type names and event names: empty refused, the longest allowed accepted (bytes
/// counted, not characters), one byte more refused.
pub async fn stream_ids_and_names_at_and_beyond_their_limits<S: EventStore + Clone + 'static>(
    store: S,
) {
    let id_at_limit = format!("{}{}", "é".repeat(MAX_ID_BYTES / 2 - 1), "xy");
    assert_eq!(id_at_limit.len(), MAX_ID_BYTES);
    let name_at_limit = format!("{}{}", "中".repeat(MAX_NAME_BYTES / 3), "");
    assert_eq!(name_at_limit.len(), MAX_NAME_BYTES);
    let accepted = [
        StreamId::new("Conformance", id_at_limit.as_str()),
        StreamId::new(name_at_limit.as_str(), "x"),
        StreamId::new("C", "1"),
    ];
    for s in &accepted {
        let mut e = event("E", 1);
        e.event_name = name_at_limit.clone();
        let stored = store
            .append(s, ExpectedVersion::NoStream, vec![e])
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "{} / {} bytes: {err}",
                    s.aggregate_type.len(),
                    s.aggregate_id.len()
                )
            });
        let read_back = read(&store, s).await;
        assert_eq!(&read_back[0].stream, s);
        assert_eq!(read_back[0].event_name, name_at_limit);
        assert_eq!(stored[0].stream, *s);
        store
            .save_snapshot(snapshot_of(s, 1, 1, payload(json!(1))))
            .await
            .expect("a snapshot of a stream at the limits");
        assert_eq!(
            store
                .load_snapshot(s)
                .await
                .expect("load")
                .map(|x| x.stream),
            Some(s.clone())
        );
    }
    let refused = [
        StreamId::new("Conformance", ""),
        StreamId::new("", "x"),
        StreamId::new("Conformance", format!("{id_at_limit}z")),
        StreamId::new("Conformance", format!("{}é", "x".repeat(MAX_ID_BYTES - 1))),
        StreamId::new(format!("{name_at_limit}z"), "x"),
        StreamId::new("Conformance", "x".repeat(1 << 20)),
    ];
    for s in &refused {
        let what = format!(
            "a stream id of {} + {} bytes",
            s.aggregate_type.len(),
            s.aggregate_id.len()
        );
        refuse_append(&store, s, ExpectedVersion::Any, events("E", 1, 1), &what).await;
        assert_invalid(
            store
                .save_snapshot(snapshot_of(s, 1, 1, payload(json!(1))))
                .await,
            &what,
        );
        refuse_reads(&store, s, &what).await;
    }
    let ok = stream("names");
    for name in [
        String::new(),
        format!("{name_at_limit}z"),
        "x".repeat(MAX_NAME_BYTES + 1),
    ] {
        let mut e = event("E", 1);
        e.event_name = name.clone();
        refuse_append(
            &store,
            &ok,
            ExpectedVersion::Any,
            vec![event("E", 0), e],
            &format!("an event name of {} bytes", name.len()),
        )
        .await;
    }
}

/// NUL cannot be stored by every backend, so every store refuses it wherever it appears:
/// stream ids, type and event names, metadata, payload and snapshot strings and keys.
pub async fn nul_is_refused_everywhere<S: EventStore + Clone + 'static>(store: S) {
    let ok = stream("nul");
    for s in [
        StreamId::new("Conformance", "a\0b"),
        StreamId::new("Confor\0mance", "a"),
        StreamId::new("Conformance", "\0"),
    ] {
        refuse_append(
            &store,
            &s,
            ExpectedVersion::Any,
            events("E", 1, 1),
            "NUL in a stream id",
        )
        .await;
        assert_invalid(
            store
                .save_snapshot(snapshot_of(&s, 1, 1, payload(json!(1))))
                .await,
            "NUL in a snapshot's stream id",
        );
        refuse_reads(&store, &s, "NUL in a stream id").await;
    }
    let mut named = event("E", 1);
    named.event_name = "Na\0me".into();
    refuse_append(
        &store,
        &ok,
        ExpectedVersion::Any,
        vec![named],
        "NUL in an event name",
    )
    .await;
    let mut user = event("E", 1);
    user.metadata = Metadata::by_user("u\0ser");
    refuse_append(
        &store,
        &ok,
        ExpectedVersion::Any,
        vec![user],
        "NUL in the user id",
    )
    .await;
    let mut extra_value = event("E", 1);
    extra_value.metadata = Metadata::by_user("u").with_extra("ip", "1.2.3.4\0");
    refuse_append(
        &store,
        &ok,
        ExpectedVersion::Any,
        vec![extra_value],
        "NUL in a metadata value",
    )
    .await;
    let mut extra_key = event("E", 1);
    extra_key.metadata = Metadata::by_user("u").with_extra("k\0", 1);
    refuse_append(
        &store,
        &ok,
        ExpectedVersion::Any,
        vec![extra_key],
        "NUL in a metadata key",
    )
    .await;
    let mut nested = event("E", 1);
    nested.metadata = Metadata::by_user("u").with_extra("deep", json!({ "list": ["ok", "n\0"] }));
    refuse_append(
        &store,
        &ok,
        ExpectedVersion::Any,
        vec![nested],
        "NUL nested in metadata",
    )
    .await;
    for text in [
        r#"{"s":"a\u0000b"}"#,
        r#"{"a\u0000":1}"#,
        r#"["\u0000"]"#,
        r#""\u0000""#,
        r#"{"deep":[{"x":"\u0000"}]}"#,
    ] {
        let mut e = event("E", 1);
        e.payload = raw(text);
        refuse_append(
            &store,
            &ok,
            ExpectedVersion::Any,
            vec![event("E", 0), e],
            &format!("NUL in the payload {text}"),
        )
        .await;
        assert_invalid(
            store.save_snapshot(snapshot_of(&ok, 1, 1, raw(text))).await,
            &format!("NUL in the snapshot state {text}"),
        );
    }
    let mut typed = event("E", 1);
    typed.payload = payload(json!({ "s": "from serde \0" }));
    refuse_append(
        &store,
        &ok,
        ExpectedVersion::Any,
        vec![typed],
        "NUL in a serialised string",
    )
    .await;
    assert!(store.load_snapshot(&ok).await.expect("load").is_none());
    let mut escaped = event("E", 1);
    escaped.payload = raw(r#"{"s":"\\u0000 is six characters"}"#);
    store
        .append(&ok, ExpectedVersion::NoStream, vec![escaped])
        .await
        .expect("an escaped backslash followed by u0000 is not NUL");
}

/// JSON a store cannot keep as given (duplicate keys, lone surrogates, nesting deeper than
/// the limit) is refused in payloads, snapshots and metadata; nesting at the limit is kept.
pub async fn json_the_store_cannot_keep_is_refused<S: EventStore + Clone + 'static>(store: S) {
    let ok = stream("json");
    let too_deep_arrays = format!(
        "{}1{}",
        "[".repeat(MAX_JSON_DEPTH + 1),
        "]".repeat(MAX_JSON_DEPTH + 1)
    );
    let too_deep_objects = format!(
        "{}1{}",
        "{\"k\":".repeat(MAX_JSON_DEPTH + 1),
        "}".repeat(MAX_JSON_DEPTH + 1)
    );
    let bad = [
        r#"{"a":1,"a":2}"#.to_owned(),
        r#"{"a":1,"a":1}"#.to_owned(),
        r#"{"x":{"b":[{"c":1,"c":{}}]}}"#.to_owned(),
        r#"{"\u0061":1,"a":2}"#.to_owned(),
        r#""\ud800""#.to_owned(),
        r#""\udc00""#.to_owned(),
        r#"{"s":"\ud800x"}"#.to_owned(),
        r#"{"s":"\ud800\u0041"}"#.to_owned(),
        r#"{"\udfff":1}"#.to_owned(),
        too_deep_arrays,
        too_deep_objects,
    ];
    for text in &bad {
        let mut e = event("E", 1);
        e.payload = raw(text);
        refuse_append(
            &store,
            &ok,
            ExpectedVersion::Any,
            vec![event("E", 0), e],
            &format!("the payload {text:.60}"),
        )
        .await;
        assert_invalid(
            store.save_snapshot(snapshot_of(&ok, 1, 1, raw(text))).await,
            &format!("the snapshot state {text:.60}"),
        );
    }
    let mut deep_metadata = event("E", 1);
    let mut value = json!(1);
    for _ in 0..MAX_JSON_DEPTH {
        value = json!([value]);
    }
    deep_metadata.metadata = Metadata::by_user("u").with_extra("deep", value);
    refuse_append(
        &store,
        &ok,
        ExpectedVersion::Any,
        vec![deep_metadata],
        "metadata nested beyond the limit",
    )
    .await;
    assert!(store.load_snapshot(&ok).await.expect("load").is_none());
    let at_limit = format!(
        "{}1{}",
        "[".repeat(MAX_JSON_DEPTH),
        "]".repeat(MAX_JSON_DEPTH)
    );
    let mut deep = event("E", 1);
    deep.payload = raw(&at_limit);
    let stored = store
        .append(&ok, ExpectedVersion::NoStream, vec![deep])
        .await
        .expect("nesting at the limit is accepted");
    assert!(same_json(
        read(&store, &ok).await[0].payload.get(),
        &at_limit
    ));
    assert!(same_json(stored[0].payload.get(), &at_limit));
    store
        .save_snapshot(snapshot_of(&ok, 1, 1, raw(&at_limit)))
        .await
        .expect("a snapshot nested at the limit");
    let pair = r#"{"s":"\ud83e\udd80"}"#;
    let mut surrogates = event("E", 2);
    surrogates.payload = raw(pair);
    store
        .append(&ok, ExpectedVersion::Exact(1), vec![surrogates])
        .await
        .expect("a surrogate pair is a character");
    assert!(same_json(
        read(&store, &ok).await[1].payload.get(),
        r#"{"s":"🦀"}"#
    ));
}

/// A payload, snapshot state or metadata document larger than the limit is refused; one of
/// exactly the limit is stored.
pub async fn oversize_documents_are_refused<S: EventStore + Clone + 'static>(store: S) {
    let limit = Limits::default().max_payload_bytes;
    let string_of = |bytes: usize| format!("\"{}\"", "a".repeat(bytes - 2));
    let ok = stream("oversize");
    let mut over = event("E", 1);
    over.payload = raw(&string_of(limit + 1));
    refuse_append(
        &store,
        &ok,
        ExpectedVersion::Any,
        vec![over],
        "a payload one byte too large",
    )
    .await;
    assert_invalid(
        store
            .save_snapshot(snapshot_of(&ok, 1, 1, raw(&string_of(limit + 1))))
            .await,
        "a snapshot one byte too large",
    );
    let mut fat_metadata = event("E", 1);
    fat_metadata.metadata = Metadata::by_user("u").with_extra("blob", "b".repeat(limit));
    refuse_append(
        &store,
        &ok,
        ExpectedVersion::Any,
        vec![fat_metadata],
        "metadata larger than the limit",
    )
    .await;
    let mut exact = event("E", 1);
    exact.payload = raw(&string_of(limit));
    store
        .append(&ok, ExpectedVersion::NoStream, vec![exact])
        .await
        .expect("a payload of exactly the limit");
    let stored = read(&store, &ok).await;
    assert_eq!(stored[0].payload.get().len(), limit);
}

/// One append holds at most [`Limits::max_batch`] events, and its ids are unique, whatever
/// its size (small batches and ones beyond 16 and 50 events).
pub async fn batch_limits_and_duplicate_ids<S: EventStore + Clone + 'static>(store: S) {
    let s = stream("batch-limits");
    for size in [2u64, 16, 17, 51, 300] {
        let mut batch = events("E", 0, size);
        let last = batch.len() - 1;
        batch[last].event_id = batch[last / 2].event_id;
        refuse_append(
            &store,
            &s,
            ExpectedVersion::Any,
            batch,
            &format!("a repeated id in a batch of {size}"),
        )
        .await;
    }
    let max = Limits::default().max_batch as u64;
    refuse_append(
        &store,
        &s,
        ExpectedVersion::Any,
        events("E", 0, max + 1),
        "one event more than the batch limit",
    )
    .await;
    let stored = store
        .append(&s, ExpectedVersion::NoStream, events("E", 0, max))
        .await
        .expect("a batch of exactly the limit");
    assert_eq!(stored.len() as u64, max);
    assert_eq!(store.stream_version(&s).await.expect("version"), max);
}
