//! Reading ahead for consumers far behind the head: the pages a cursor serves are exactly the
//! pages fresh reads give, for every filter; a cursor never goes past the frontier it was
//! started with (events appended later come from a fresh read); an unreadable row inside a
//! range read ahead is reported as a fresh read reports it, and a consumer parks it and
//! handles everything else once.

mod common;

use std::collections::HashSet;

use es_core::testing::conformance::event;
use es_core::{
    AnyEvent, AtLeastOnce, BoxError, Consumer, Envelope, Error, EventHandler, ExpectedVersion,
    GlobalLog, LocalCheckpoints, LogFilter, LogPage, NewEvent, RecordedEvent, StreamId,
    StreamStore,
};
use es_postgres::{PostgresStore, StoreOptions};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

/// 3,000 events: types A and B, names x, y and z, in 60 streams, appended 50 at a time.
async fn seed(store: &PostgresStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    for s in 0..60u64 {
        let kind = if s % 3 == 0 { "B" } else { "A" };
        let batch: Vec<NewEvent> = (0..50u64)
            .map(|i| event(["x", "y", "z"][((s + i) % 3) as usize], s * 100 + i))
            .collect();
        all.extend(
            store
                .append(
                    &StreamId::new(kind, format!("s{s}")),
                    ExpectedVersion::NoStream,
                    batch,
                )
                .await
                .expect("seed"),
        );
    }
    all
}

/// Every page of `filter` from 0 with pages of `limit`, until a page is not full.
async fn pages(store: &PostgresStore, filter: &LogFilter, limit: usize) -> Vec<LogPage> {
    let mut out: Vec<LogPage> = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_log(after, limit, filter).await.expect("read");
        assert!(page.scanned_to >= after);
        assert!(
            page.events
                .iter()
                .all(|e| e.position > after && e.position <= page.scanned_to)
        );
        let full = page.events.len() == limit;
        after = page.scanned_to;
        out.push(page);
        if !full {
            return out;
        }
    }
}

fn ids(pages: &[LogPage]) -> Vec<Uuid> {
    pages
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.event_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_read_ahead_equal_fresh_reads_for_every_filter() {
    let store = common::fresh_store_with(StoreOptions::new().read_ahead(true), 8).await;
    let fresh = common::reopen(&store, StoreOptions::new().read_ahead(false), 4);
    let all = seed(&store).await;
    let middle = all[1_200].position;
    let filters = [
        LogFilter::all(),
        LogFilter::all().aggregate_types(["A"]),
        LogFilter::all().event_names(["x", "z"]),
        LogFilter::all().aggregate_types(["B"]).event_names(["y"]),
        LogFilter::all().recorded_from(all[500].recorded_at),
        LogFilter::all().before(middle),
    ];
    for filter in &filters {
        for limit in [7, 100] {
            let ahead = pages(&store, filter, limit).await;
            let plain = pages(&fresh, filter, limit).await;
            assert_eq!(ids(&ahead), ids(&plain), "{filter:?}, pages of {limit}");
            let expected: Vec<Uuid> = all
                .iter()
                .filter(|e| filter.matches(e))
                .map(|e| e.event_id)
                .collect();
            assert_eq!(ids(&ahead), expected, "{filter:?}, pages of {limit}");
            // Full pages end where fresh reads end them.
            for (a, p) in ahead.iter().zip(&plain) {
                if a.events.len() == limit {
                    assert_eq!(a.scanned_to, p.scanned_to, "{filter:?}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_stops_at_its_frontier_and_later_events_come_from_a_fresh_read() {
    let store = common::fresh_store_with(StoreOptions::new().read_ahead(true), 8).await;
    let all = seed(&store).await;
    let head = all.last().map(|e| e.position).expect("seeded");
    let limit = 100;
    let first = store
        .read_log(0, limit, &LogFilter::all())
        .await
        .expect("read");
    assert_eq!(first.events.len(), limit);
    // Appended after the cursor started: above its frontier.
    let later = store
        .append(
            &StreamId::new("A", "later"),
            ExpectedVersion::NoStream,
            vec![event("x", 1), event("y", 2)],
        )
        .await
        .expect("later");
    let mut after = first.scanned_to;
    let mut seen: Vec<RecordedEvent> = first.events;
    let mut stopped_at_frontier = false;
    let wanted = all.len() + later.len();
    for _ in 0..100 {
        let page = store
            .read_log(after, limit, &LogFilter::all())
            .await
            .expect("read");
        if page.events.len() < limit && page.scanned_to == head {
            stopped_at_frontier = true;
        }
        after = page.scanned_to;
        seen.extend(page.events);
        if seen.len() >= wanted {
            break;
        }
    }
    assert!(
        stopped_at_frontier,
        "the read-ahead range ended at the frontier it was started with"
    );
    let seen_positions: Vec<u64> = seen.iter().map(|e| e.position).collect();
    let expected: Vec<u64> = all.iter().chain(&later).map(|e| e.position).collect();
    assert_eq!(
        (
            seen.len(),
            seen_positions
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
        ),
        (expected.len(), None),
        "every event once, in order, the later ones too (length, first difference)"
    );
}

/// Counts what it handles.
#[derive(Default)]
struct Seen(Vec<u64>);

impl EventHandler for Seen {
    type Event = AnyEvent;

    async fn handle(&mut self, _: &mut (), e: &Envelope<AnyEvent>) -> Result<(), BoxError> {
        self.0.push(e.record.position);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_row_read_ahead_is_parked_and_everything_else_is_handled_once() {
    let store = common::fresh_store_with(StoreOptions::new().read_ahead(true), 8).await;
    let all = seed(&store).await;
    let bad = all[2_200].position;
    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query("SET LOCAL es.allow_event_changes = 'on'")
        .execute(&mut *tx)
        .await
        .expect("allow");
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE \"{}\".events SET metadata = '{{\"user_id\": 5}}' WHERE position = $1",
        store.schema()
    )))
    .bind(i64::try_from(bad).expect("position"))
    .execute(&mut *tx)
    .await
    .expect("break the row's metadata");
    tx.commit().await.expect("commit");

    let mut consumer = Consumer::new(
        "reader",
        store.clone(),
        AtLeastOnce::new(LocalCheckpoints::new()),
        Seen::default(),
    )
    .batch_size(100);
    let progress = consumer.rebuild(|_| {}).await.expect("rebuild");
    assert_eq!(progress.done, all.len() as u64 - 1);
    let handled = &consumer.handler().0;
    assert_eq!(
        handled.len(),
        handled.iter().collect::<HashSet<_>>().len(),
        "nothing handled twice"
    );
    let expected: Vec<u64> = all
        .iter()
        .map(|e| e.position)
        .filter(|p| *p != bad)
        .collect();
    assert_eq!(*handled, expected, "everything but the bad row, in order");
    let parked = consumer.parked().await.expect("parked");
    assert_eq!(
        parked.iter().map(|p| p.position).collect::<Vec<_>>(),
        [bad],
        "the bad row is parked"
    );
    // A fresh read reports it as the same error a read ahead ran into.
    let err = store
        .read_log(bad - 1, 10, &LogFilter::all())
        .await
        .expect_err("bad row");
    assert!(matches!(err, Error::BadRow { position: Some(p), .. } if p == bad));
}
