//! The global log: pages and `scanned_to`, filters applied in the store, the head, followers
//! and subscriptions that never skip ([`GlobalLog`] and [`GlobalLogExt`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;

use super::*;
use crate::log::{GlobalLogExt, LogPage};

/// Appends `count` single events alternating between two streams; returns them as recorded,
/// in log order.
async fn interleaved<S: EventStore>(store: &S, count: u64) -> Vec<RecordedEvent> {
    let (a, b) = (stream("log-a"), stream("log-b"));
    let mut recorded = Vec::new();
    for i in 0..count {
        let s = if i % 3 == 2 { &b } else { &a };
        recorded.extend(
            store
                .append(s, ExpectedVersion::Any, vec![event("E", i)])
                .await
                .expect("append"),
        );
    }
    recorded
}

/// After a quiet moment, a page that is not full has looked at least as far as the head, and
/// the next event appended lands beyond it: a reader continuing after `scanned_to` skips
/// nothing.
async fn assert_frontier<S: EventStore>(store: &S, page: &LogPage, what: &str) {
    let head = store.head_position().await.expect("head");
    assert!(
        page.scanned_to >= head,
        "{what}: a page that is not full, read with no append in flight, scanned to {} below the head {head}",
        page.scanned_to
    );
    let next = store
        .append(
            &stream("frontier"),
            ExpectedVersion::NoStream,
            vec![event("Frontier", 0)],
        )
        .await
        .expect("append after");
    assert!(
        next[0].position > page.scanned_to,
        "{what}: an event appended later took position {} at or below scanned_to {}",
        next[0].position,
        page.scanned_to
    );
}

/// The global log pages in exactly the sizes asked, in position order across streams; a full
/// page ends at its last event, and the last page reaches the head.
pub async fn read_log_pages_have_exact_sizes<S: EventStore + Clone + 'static>(store: S) {
    let appended = interleaved(&store, 15).await;
    assert!(
        appended.windows(2).all(|w| w[0].position < w[1].position),
        "positions increase in commit order"
    );
    let mut after = 0;
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let last_page = loop {
        let page = store
            .read_log(after, 4, &LogFilter::all())
            .await
            .expect("read_log");
        sizes.push(page.events.len());
        if page.events.len() < 4 {
            seen.extend(page.events.iter().cloned());
            break page;
        }
        assert_eq!(
            page.scanned_to, page.events[3].position,
            "a full page scanned exactly to its last event"
        );
        after = page.scanned_to;
        seen.extend(page.events);
    };
    assert_eq!(sizes, [4, 4, 4, 3]);
    assert_eq!(seen.len(), appended.len());
    for (got, want) in seen.iter().zip(&appended) {
        assert_same_record(got, want, "read_log");
    }
    let all = store.read_all(0, 100).await.expect("read_all");
    assert_eq!(ids(&all), ids(&appended));
    assert_frontier(&store, &last_page, "the last page").await;
}

/// A read with limit 0 returns nothing and `scanned_to == after`; a read after the head returns
/// nothing, never goes back, and does not hide what is appended later.
pub async fn read_log_with_limit_zero_or_past_the_head_is_empty<S: EventStore + Clone + 'static>(
    store: S,
) {
    let empty = store
        .read_log(0, 10, &LogFilter::all())
        .await
        .expect("read_log");
    assert!(empty.events.is_empty());
    assert_eq!(empty.scanned_to, 0, "an empty log is scanned to 0");
    let appended = interleaved(&store, 6).await;
    let head = store.head_position().await.expect("head");
    assert_eq!(head, appended[5].position);
    for after in [0, appended[2].position, head, head + 1, head + 1000] {
        let page = store
            .read_log(after, 0, &LogFilter::all())
            .await
            .expect("read_log");
        assert!(page.events.is_empty(), "limit 0 returns no events");
        assert_eq!(
            page.scanned_to, after,
            "limit 0 scans nothing after {after}"
        );
    }
    let at_head = store
        .read_log(head, 10, &LogFilter::all())
        .await
        .expect("read_log");
    assert!(at_head.events.is_empty());
    assert_frontier(&store, &at_head, "a read at the head").await;
    let head = store.head_position().await.expect("head");
    for after in [head + 1, head + 1000] {
        let page = store
            .read_log(after, 10, &LogFilter::all())
            .await
            .expect("read_log");
        assert!(page.events.is_empty(), "nothing after the head");
        assert_eq!(
            page.scanned_to, after,
            "a read past the head stays where it was asked"
        );
    }
}

/// `stream_all` from the middle of the log yields exactly the events after that position.
pub async fn stream_all_from_the_middle_yields_exactly_the_rest<S: EventStore + Clone + 'static>(
    store: S,
) {
    let s = stream("scan");
    let mut appended = Vec::new();
    for i in 0..7 {
        appended.extend(
            store
                .append(&s, ExpectedVersion::Any, events("E", i * 10, 10))
                .await
                .expect("append"),
        );
    }
    let collect = |after: u64| {
        store
            .stream_all(after, 16, LogFilter::all())
            .map(|e| e.expect("scan"))
            .collect::<Vec<RecordedEvent>>()
    };
    assert_eq!(ids(&collect(0).await), ids(&appended));
    for cut in [0, 15, 29, 68, 69] {
        assert_eq!(
            ids(&collect(appended[cut].position).await),
            ids(&appended[cut + 1..]),
            "after the event at index {cut}"
        );
    }
    let filtered: Vec<RecordedEvent> = store
        .stream_all(
            appended[9].position,
            3,
            LogFilter::all().event_names(["Nothing"]),
        )
        .map(|e| e.expect("scan"))
        .collect()
        .await;
    assert!(filtered.is_empty());
}

/// What an independent reader of the appended events expects a filter to select.
fn expected(appended: &[RecordedEvent], keep: impl Fn(&RecordedEvent) -> bool) -> Vec<Uuid> {
    appended
        .iter()
        .filter(|e| keep(e))
        .map(|e| e.event_id)
        .collect()
}

/// Reads everything a filter selects in pages of `limit`, checking `scanned_to` on each page.
async fn read_filtered<S: EventStore>(
    store: &S,
    filter: &LogFilter,
    limit: usize,
    what: &str,
) -> (Vec<RecordedEvent>, LogPage) {
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = store
            .read_log(after, limit, filter)
            .await
            .expect("read_log");
        assert!(page.events.len() <= limit);
        assert!(
            page.events.iter().all(|e| e.position > after),
            "{what}: an event at or before {after}"
        );
        if page.events.len() == limit {
            assert_eq!(
                Some(page.scanned_to),
                page.events.last().map(|e| e.position),
                "{what}: a full page scanned exactly to its last event"
            );
        } else {
            assert!(
                page.scanned_to >= page.events.last().map_or(after, |e| e.position),
                "{what}: a page scanned at least to its last event"
            );
        }
        seen.extend(page.events.iter().cloned());
        if page.events.len() < limit {
            return (seen, page);
        }
        after = page.scanned_to;
    }
}

/// Filters on aggregate types, event names, recorded time and position select exactly the
/// matching events, page by page, and `scanned_to` lets a sparse reader move on without ever
/// passing an event that could still match.
pub async fn filters_select_in_the_store_and_pin_scanned_to<S: EventStore + Clone + 'static>(
    store: S,
) {
    let (ta, tb) = (
        format!("FilterA{}", Uuid::now_v7().simple()),
        format!("FilterB{}", Uuid::now_v7().simple()),
    );
    let names = ["Opened", "Moved", "Closed"];
    let mut appended = Vec::new();
    for i in 0..12u64 {
        let t = if i % 4 == 3 { &tb } else { &ta };
        let s = StreamId::new(t.as_str(), format!("s{}", i % 2));
        appended.extend(
            store
                .append(
                    &s,
                    ExpectedVersion::Any,
                    vec![event(names[(i % 3) as usize], i)],
                )
                .await
                .expect("append"),
        );
    }
    // A second wave recorded strictly later, for the time filter.
    let first_wave_end = appended.last().map(|e| e.recorded_at).expect("appended");
    let second = loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let s = StreamId::new(ta.as_str(), "late");
        let recorded = store
            .append(&s, ExpectedVersion::Any, events("Moved", 100, 3))
            .await
            .expect("append");
        appended.extend(recorded.iter().cloned());
        if recorded[0].recorded_at > first_wave_end {
            break recorded;
        }
    };
    // The reference of what exists, checked against what the appends returned.
    let log = read_log_all(&store, 0, &LogFilter::all()).await;
    assert_eq!(ids(&log), ids(&appended));
    let since = second[0].recorded_at;
    let cut = log[5].position;
    let cases: Vec<(&str, LogFilter, Vec<Uuid>)> = vec![
        (
            "type A",
            LogFilter::all().aggregate_types([ta.as_str()]),
            expected(&log, |e| e.stream.aggregate_type == ta),
        ),
        (
            "types A and B",
            LogFilter::all().aggregate_types([ta.as_str(), tb.as_str()]),
            expected(&log, |_| true),
        ),
        (
            "name Moved",
            LogFilter::all().event_names(["Moved"]),
            expected(&log, |e| e.event_name == "Moved"),
        ),
        (
            "type B, names Moved or Closed",
            LogFilter::all()
                .aggregate_types([tb.as_str()])
                .event_names(["Moved", "Closed"]),
            expected(&log, |e| {
                e.stream.aggregate_type == tb
                    && ["Moved", "Closed"].contains(&e.event_name.as_str())
            }),
        ),
        (
            "recorded from the second wave",
            LogFilter::all().recorded_from(since),
            expected(&log, |e| e.recorded_at >= since),
        ),
        (
            "before the sixth event",
            LogFilter::all().before(cut),
            expected(&log, |e| e.position < cut),
        ),
        (
            "type A before the sixth event, name Opened",
            LogFilter::all()
                .aggregate_types([ta.as_str()])
                .event_names(["Opened"])
                .before(cut),
            expected(&log, |e| {
                e.stream.aggregate_type == ta && e.event_name == "Opened" && e.position < cut
            }),
        ),
        (
            "an unknown type",
            LogFilter::all().aggregate_types(["NoSuchType"]),
            Vec::new(),
        ),
    ];
    for (what, filter, want) in cases {
        for limit in [1, 2, 5, 1000] {
            let (seen, last) = read_filtered(&store, &filter, limit, what).await;
            assert_eq!(ids(&seen), want, "{what}, pages of {limit}");
            match filter.before_position {
                Some(before) => assert_eq!(
                    last.scanned_to,
                    before - 1,
                    "{what}: a read bounded by position {before} scans exactly to the position before it"
                ),
                None => {
                    let head = store.head_position().await.expect("head");
                    assert!(
                        last.scanned_to >= head,
                        "{what}, pages of {limit}: the last page scanned to {} below the head {head}",
                        last.scanned_to
                    );
                }
            }
        }
    }
    // A sparse reader that has seen nothing moves on, and still gets the next match.
    let sparse = LogFilter::all().aggregate_types(["SparseType"]);
    let page = store.read_log(0, 10, &sparse).await.expect("read_log");
    assert!(page.events.is_empty());
    assert_frontier(&store, &page, "a sparse read").await;
    let matching = store
        .append(
            &StreamId::new("SparseType", "x"),
            ExpectedVersion::Any,
            vec![event("E", 0)],
        )
        .await
        .expect("append");
    let next = store
        .read_log(page.scanned_to, 10, &sparse)
        .await
        .expect("read_log");
    assert_eq!(
        ids(&next.events),
        ids(&matching),
        "the next match is not skipped"
    );
}

/// An empty list of types or names selects nothing, yet the reader still moves on.
pub async fn empty_filter_lists_select_nothing_and_skip_nothing<S: EventStore + Clone + 'static>(
    store: S,
) {
    interleaved(&store, 5).await;
    let none_of: [LogFilter; 3] = [
        LogFilter::all().event_names(Vec::<String>::new()),
        LogFilter::all().aggregate_types(Vec::<String>::new()),
        LogFilter::all()
            .aggregate_types(Vec::<String>::new())
            .event_names(["E"]),
    ];
    for filter in none_of {
        let page = store.read_log(0, 10, &filter).await.expect("read_log");
        assert!(page.events.is_empty(), "{filter:?} selects nothing");
        assert_frontier(&store, &page, "an empty list").await;
    }
}

/// The head is the position of the last readable event, and refused or retried appends leave
/// it alone.
pub async fn head_position_tracks_the_log<S: EventStore + Clone + 'static>(store: S) {
    assert_eq!(store.head_position().await.expect("head"), 0);
    let s = stream("head");
    let batch = events("E", 1, 3);
    let recorded = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("append");
    let head = store.head_position().await.expect("head");
    assert_eq!(head, recorded[2].position);
    assert!(
        store
            .append(&s, ExpectedVersion::NoStream, events("E", 4, 1))
            .await
            .is_err()
    );
    let mut invalid = event("E", 5);
    invalid.schema_version = 0;
    assert!(
        store
            .append(&s, ExpectedVersion::Any, vec![invalid])
            .await
            .is_err()
    );
    store
        .append(&s, ExpectedVersion::Any, batch)
        .await
        .expect("retry");
    assert_eq!(store.head_position().await.expect("head"), head);
    let more = store
        .append(
            &stream("head-2"),
            ExpectedVersion::NoStream,
            events("E", 1, 1),
        )
        .await
        .expect("append");
    assert_eq!(store.head_position().await.expect("head"), more[0].position);
}

/// While appends are in flight, the head never names a position whose event cannot be read
/// yet, and never goes back.
pub async fn head_never_passes_an_unreadable_event<S: EventStore + Clone + 'static>(store: S) {
    const WRITERS: u64 = 6;
    const APPENDS: u64 = 20;
    let done = Arc::new(AtomicBool::new(false));
    let checker = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut last = 0;
            let mut checks = 0u64;
            while !done.load(Ordering::Acquire) {
                let head = store.head_position().await.expect("head");
                assert!(head >= last, "the head went back from {last} to {head}");
                if head > last {
                    let page = store
                        .read_log(head - 1, 1, &LogFilter::all())
                        .await
                        .expect("read_log");
                    assert_eq!(
                        page.events.first().map(|e| e.position),
                        Some(head),
                        "the head {head} names an event that is readable"
                    );
                    checks += 1;
                }
                last = head;
                tokio::task::yield_now().await;
            }
            checks
        })
    };
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let s = StreamId::new("HeadRace", format!("w{writer}"));
            let mut last = 0;
            for i in 0..APPENDS {
                let size = 1 + (i * 7 + writer) % 50;
                let recorded = store
                    .append(&s, ExpectedVersion::Any, events("E", i, size))
                    .await
                    .expect("append");
                last = recorded.last().map_or(last, |e| e.position);
            }
            last
        }));
    }
    let mut highest = 0;
    for writer in writers {
        highest = highest.max(writer.await.expect("writer panicked"));
    }
    done.store(true, Ordering::Release);
    let checks = checker.await.expect("checker panicked");
    eprintln!("head checked {checks} times while appends were in flight");
    assert_eq!(store.head_position().await.expect("head"), highest);
}

/// Concurrent writers on many streams: every acknowledged event is in the log once, positions
/// are unique and increasing, and each stream's versions are gapless in log order.
pub async fn concurrent_writers_keep_the_global_log_complete<S: EventStore + Clone + 'static>(
    store: S,
) {
    const WRITERS: u64 = 16;
    const APPENDS: u64 = 20;
    let mut handles = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..APPENDS {
                let s = StreamId::new("Concurrent", format!("w{writer}-s{}", i % 3));
                let recorded = store
                    .append(&s, ExpectedVersion::Any, events("E", i, 1 + i % 3))
                    .await
                    .expect("append");
                acknowledged.extend(recorded);
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for handle in handles {
        acknowledged.extend(handle.await.expect("writer panicked"));
    }
    let log: Vec<RecordedEvent> = store
        .stream_all(0, 97, LogFilter::all())
        .map(|e| e.expect("scan"))
        .collect()
        .await;
    assert_eq!(
        log.len(),
        acknowledged.len(),
        "every acknowledged event once, nothing else"
    );
    let mut by_position = acknowledged.clone();
    by_position.sort_by_key(|e| e.position);
    for (got, want) in log.iter().zip(&by_position) {
        assert_same_record(got, want, "the log holds what the appends acknowledged");
    }
    assert!(log.windows(2).all(|w| w[0].position < w[1].position));
    let mut per_stream: std::collections::HashMap<&StreamId, Vec<u64>> = Default::default();
    for e in &log {
        per_stream.entry(&e.stream).or_default().push(e.version);
    }
    assert_eq!(per_stream.len(), (WRITERS * 3) as usize);
    for (s, v) in per_stream {
        assert_eq!(
            v,
            (1..=v.len() as u64).collect::<Vec<_>>(),
            "{s} has gapless versions in log order"
        );
    }
}

/// A follower reading the global log while writers append sees every event exactly once, in
/// position order, never skipping one that committed late. It waits on the store's wake-up
/// signal, and continues after `scanned_to`.
pub async fn follower_during_concurrent_writes_sees_every_event_once<
    S: EventStore + Clone + 'static,
>(
    store: S,
) {
    const WRITERS: u64 = 8;
    const APPENDS: u64 = 25;
    let start = store.head_position().await.expect("head");
    let total_expected = WRITERS * (APPENDS + APPENDS / 2);
    let follower = {
        let store = store.clone();
        let mut wakeup = store.wakeup();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = start;
            while (seen.len() as u64) < total_expected {
                let page = store
                    .read_log(after, 7, &LogFilter::all())
                    .await
                    .expect("read_log");
                assert!(page.scanned_to >= after, "scanned_to never goes back");
                after = page.scanned_to;
                if page.events.is_empty() {
                    within("the follower waiting for appends", wakeup.wait()).await;
                }
                seen.extend(page.events.into_iter().map(|e| (e.position, e.event_id)));
            }
            seen
        })
    };
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..APPENDS {
                let s = StreamId::new("Followed", format!("w{writer}"));
                let recorded = store
                    .append(&s, ExpectedVersion::Any, events("E", i, 1 + i % 2))
                    .await
                    .expect("append");
                acknowledged.extend(ids(&recorded));
                tokio::task::yield_now().await;
            }
            acknowledged
        }));
    }
    let mut written = HashSet::new();
    for writer in writers {
        written.extend(writer.await.expect("writer panicked"));
    }
    let seen = within("the follower", follower)
        .await
        .expect("follower panicked");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "follower sees positions in order"
    );
    let seen_ids: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(seen_ids.len(), seen.len(), "no event seen twice");
    assert_eq!(
        seen_ids, written,
        "every acknowledged event seen, nothing else"
    );
}

/// A filtered subscription, started before concurrent writers of two types, yields exactly
/// the matching events, in position order, live as they commit.
pub async fn filtered_subscription_never_skips<S: EventStore + Clone + 'static>(store: S) {
    const WRITERS: u64 = 4;
    const APPENDS: u64 = 30;
    let wanted = format!("Wanted{}", Uuid::now_v7().simple());
    let subscription = store.subscribe(0, LogFilter::all().aggregate_types([wanted.as_str()]));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (store, wanted) = (store.clone(), wanted.clone());
        writers.push(tokio::spawn(async move {
            let mut matching = Vec::new();
            for i in 0..APPENDS {
                let t = if (i + writer) % 3 == 0 {
                    wanted.as_str()
                } else {
                    "Unwanted"
                };
                let s = StreamId::new(t, format!("w{writer}"));
                let recorded = store
                    .append(&s, ExpectedVersion::Any, events("E", i, 1 + i % 4))
                    .await
                    .expect("append");
                if t == wanted {
                    matching.extend(recorded);
                }
            }
            matching
        }));
    }
    let mut matching = Vec::new();
    for writer in writers {
        matching.extend(writer.await.expect("writer panicked"));
    }
    matching.sort_by_key(|e| e.position);
    let got: Vec<RecordedEvent> = within(
        "the filtered subscription",
        subscription
            .take(matching.len())
            .map(|e| e.expect("subscription item"))
            .collect(),
    )
    .await;
    assert_eq!(ids(&got), ids(&matching));
    let stored = read_log_all(
        &store,
        0,
        &LogFilter::all().aggregate_types([wanted.as_str()]),
    )
    .await;
    assert_eq!(ids(&stored), ids(&matching), "nothing else matches");
}

/// A subscription that saved its position, stopped, and resumed (in another process) from the
/// saved checkpoint yields exactly the events after it, stored and live, once each.
pub async fn subscription_resumes_from_a_saved_position<S: EventStore + Clone + 'static>(
    store: S,
    other: S,
) {
    let name = format!("subscriber-{}", Uuid::now_v7());
    let first = interleaved(&store, 10).await;
    let mut subscription = store.subscribe(0, LogFilter::all());
    let mut handled = Vec::new();
    for _ in 0..6 {
        let e = within("the first subscription", subscription.next())
            .await
            .expect("the subscription does not end")
            .expect("an event");
        handled.push(e);
    }
    store
        .save_checkpoint(&name, handled[5].position)
        .await
        .expect("save_checkpoint");
    drop(subscription);
    let second = interleaved(&store, 4).await;
    let saved = other
        .load_checkpoint(&name)
        .await
        .expect("load_checkpoint")
        .expect("saved");
    assert_eq!(saved, first[5].position);
    let mut resumed = other.subscribe(saved, LogFilter::all());
    let mut rest = Vec::new();
    for _ in 0..8 {
        rest.push(
            within("the resumed subscription", resumed.next())
                .await
                .expect("the subscription does not end")
                .expect("an event"),
        );
    }
    let live = interleaved(&store, 3).await;
    for _ in 0..3 {
        rest.push(
            within("the resumed subscription, live", resumed.next())
                .await
                .expect("the subscription does not end")
                .expect("an event"),
        );
    }
    let want: Vec<Uuid> = ids(&first[6..])
        .into_iter()
        .chain(ids(&second))
        .chain(ids(&live))
        .collect();
    assert_eq!(
        ids(&rest),
        want,
        "exactly the events after the saved position"
    );
    assert_eq!(ids(&handled), ids(&first[..6]));
}
