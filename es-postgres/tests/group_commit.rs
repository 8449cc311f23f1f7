//! Group commit: appends that queue while the store's lanes are busy are sent as one
//! statement, and each keeps its own outcome (written, a conflict, an idempotent retry, a
//! duplicate id), a member whose caller went away is never sent, a group refused by a unique
//! key falls back to lone appends, and concurrent writers sharing groups lose and double
//! nothing.
//!
//! A group is formed deterministically: with one lane, an append that waits on a row another
//! transaction holds keeps the lane busy while the members queue; releasing that row lets the
//! lane go, and everything queued leaves as one group.

mod common;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use es_core::testing::conformance::{event, events};
use es_core::{
    Error, ExpectedVersion, GlobalLog, GlobalLogExt, LogFilter, NewEvent, RecordedEvent, StreamId,
    StreamQuery, StreamStore,
};
use es_postgres::{PgTx, PostgresStore, StoreOptions};
use futures::StreamExt;
use uuid::Uuid;

type Append = Pin<Box<dyn Future<Output = Result<Vec<RecordedEvent>, Error>> + Send>>;

/// `store.append(stream, expected, events)` as an owned future.
fn append(
    store: &PostgresStore,
    stream: StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Append {
    let store = store.clone();
    Box::pin(async move { store.append(&stream, expected, events).await })
}

/// Holds the store's one lane: a transaction of `direct` holds version 1 of a stream, and an
/// append of `store` to that stream waits on it (inside its insert, lane taken).
struct BusyLane {
    blocker: PgTx,
    waiting: tokio::task::JoinHandle<Result<Vec<RecordedEvent>, Error>>,
}

async fn busy_lane(store: &PostgresStore, direct: &PostgresStore) -> BusyLane {
    let stream = StreamId::new("Lane", "held");
    let mut blocker = direct.begin().await.expect("begin");
    direct
        .append_in(
            &mut blocker,
            &stream,
            ExpectedVersion::Any,
            vec![event("B", 0)],
        )
        .await
        .expect("blocker");
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(&stream, ExpectedVersion::Any, vec![event("W", 1)])
                .await
        })
    };
    wait_for_lock_wait(store.schema()).await;
    BusyLane { blocker, waiting }
}

impl BusyLane {
    /// Rolls the blocker back: the waiting append writes version 1 and frees the lane.
    async fn release(self) {
        self.blocker.rollback().await.expect("rollback");
        let written = self
            .waiting
            .await
            .expect("task")
            .expect("the waiting append");
        assert_eq!(written[0].version, 1);
    }
}

/// Waits until a backend of this test's pool waits on a lock inside an insert (polling
/// `pg_stat_activity` for up to 30 s: no signal exists for it).
async fn wait_for_lock_wait(application_name: &str) {
    let observer = common::pool("es_pg_test_observer", 1);
    let looking = Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1 \
               AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO%events%'",
        )
        .bind(application_name)
        .fetch_one(&observer)
        .await
        .expect("read pg_stat_activity");
        if waiting > 0 {
            return;
        }
        assert!(
            looking.elapsed() < Duration::from_secs(30),
            "the append never waited on the held row"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `append` once: it checks its input and joins the queue (the lane is busy), then
/// waits for its group.
async fn queued(mut append: Append) -> Append {
    assert!(
        futures::poll!(append.as_mut()).is_pending(),
        "the append must queue while the lane is busy"
    );
    append
}

fn s(id: &str) -> StreamId {
    StreamId::new("Group", id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_group_keeps_each_members_outcome() {
    let store = common::fresh_store_with(StoreOptions::new().group_commit(1), 8).await;
    let direct = common::reopen(&store, StoreOptions::new().group_commit(0), 4);
    // B exists at version 1; C's first append will be retried; D holds the event id X.
    direct
        .append(&s("b"), ExpectedVersion::NoStream, vec![event("E", 0)])
        .await
        .expect("b");
    let c_events = events("E", 10, 2);
    let c_first = direct
        .append(&s("c"), ExpectedVersion::NoStream, c_events.clone())
        .await
        .expect("c");
    let x = event("E", 20);
    direct
        .append(&s("d"), ExpectedVersion::NoStream, vec![x.clone()])
        .await
        .expect("d");
    let mut x_other = event("E", 21);
    x_other.event_id = x.event_id;

    let lane = busy_lane(&store, &direct).await;
    let a = queued(append(
        &store,
        s("a"),
        ExpectedVersion::NoStream,
        vec![event("E", 1)],
    ))
    .await;
    let b = queued(append(
        &store,
        s("b"),
        ExpectedVersion::Exact(0),
        vec![event("E", 2)],
    ))
    .await;
    let c = queued(append(
        &store,
        s("c"),
        ExpectedVersion::Exact(0),
        c_events.clone(),
    ))
    .await;
    let d = queued(append(
        &store,
        s("d2"),
        ExpectedVersion::NoStream,
        vec![x_other],
    ))
    .await;
    let e = queued(append(
        &store,
        s("e"),
        ExpectedVersion::NoStream,
        events("E", 3, 3),
    ))
    .await;
    let gone = queued(append(
        &store,
        s("f"),
        ExpectedVersion::NoStream,
        vec![event("E", 9)],
    ))
    .await;
    drop(gone);
    lane.release().await;

    let (a, b, c, d, e) = tokio::join!(a, b, c, d, e);
    let a = a.expect("a is written");
    let e = e.expect("e is written");
    assert_eq!(a.iter().map(|r| r.version).collect::<Vec<_>>(), [1]);
    assert_eq!(e.iter().map(|r| r.version).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        a[0].recorded_at, e[0].recorded_at,
        "a and e were written by one statement"
    );
    assert!(
        e.iter().all(|r| r.recorded_at == a[0].recorded_at),
        "one statement, one time"
    );
    match b {
        Err(Error::Conflict {
            stream,
            expected: ExpectedVersion::Exact(0),
            actual: 1,
        }) => assert_eq!(stream, s("b")),
        other => panic!("b conflicts with the stored version 1: {other:?}"),
    }
    let c = c.expect("an identical retry returns the stored events");
    assert_eq!(
        c.iter()
            .map(|r| (r.event_id, r.position))
            .collect::<Vec<_>>(),
        c_first
            .iter()
            .map(|r| (r.event_id, r.position))
            .collect::<Vec<_>>(),
        "c is returned as first stored"
    );
    match d {
        Err(Error::DuplicateEventId { event_id, stream }) => {
            assert_eq!((event_id, stream), (x.event_id, s("d")));
        }
        other => panic!("d reuses an id stored with other content: {other:?}"),
    }
    assert_eq!(
        store.stream_version(&s("f")).await.expect("version"),
        0,
        "a member dropped before its group formed is never sent"
    );
    for (stream, version) in [("a", 1), ("b", 1), ("c", 2), ("d", 1), ("d2", 0), ("e", 3)] {
        assert_eq!(
            direct.stream_version(&s(stream)).await.expect("version"),
            version,
            "{stream}"
        );
    }
    // The log holds each written event once, in position order.
    let log = direct.read_all(0, 100).await.expect("read");
    let ids: Vec<Uuid> = log.iter().map(|r| r.event_id).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "no event twice"
    );
    for written in a.iter().chain(&e) {
        assert!(ids.contains(&written.event_id));
    }
    assert!(log.windows(2).all(|w| w[0].position < w[1].position));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_refused_by_a_unique_key_appends_each_member_alone() {
    let store = common::fresh_store_with(StoreOptions::new().group_commit(1), 8).await;
    let direct = common::reopen(&store, StoreOptions::new().group_commit(0), 4);
    // Two members carry the same new event id for different streams: the group's insert
    // fails on the unique id, writing nothing, and each member then appends alone.
    let y = event("E", 1);
    let lane = busy_lane(&store, &direct).await;
    let first = queued(append(
        &store,
        s("y1"),
        ExpectedVersion::NoStream,
        vec![y.clone()],
    ))
    .await;
    let second = queued(append(
        &store,
        s("y2"),
        ExpectedVersion::NoStream,
        vec![y.clone()],
    ))
    .await;
    let other = queued(append(
        &store,
        s("z"),
        ExpectedVersion::NoStream,
        events("E", 2, 2),
    ))
    .await;
    lane.release().await;
    let (first, second, other) = tokio::join!(first, second, other);
    assert_eq!(other.expect("an unrelated member is written").len(), 2);
    let outcomes = [&first, &second];
    let written: Vec<&Vec<RecordedEvent>> =
        outcomes.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        written.len(),
        1,
        "exactly one of the two is written: {outcomes:?}"
    );
    let loser = outcomes
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("one is refused");
    assert!(
        matches!(loser, Error::DuplicateEventId { event_id, .. } if *event_id == y.event_id),
        "the other reuses the id in another stream: {loser:?}"
    );
    let versions = (
        direct.stream_version(&s("y1")).await.expect("version"),
        direct.stream_version(&s("y2")).await.expect("version"),
    );
    assert!(
        versions == (1, 0) || versions == (0, 1),
        "the id is stored once: {versions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_sharing_groups_lose_and_double_nothing() {
    const WRITERS: usize = 16;
    const APPENDS: u64 = 25;
    let store = common::fresh_store_with(
        StoreOptions::new()
            .group_commit(1)
            .poll_interval(Duration::from_millis(100)),
        12,
    )
    .await;
    let start = store.head_position().await.expect("head");
    let follower = {
        let mut sub = store.subscribe(start, LogFilter::all());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(item) = sub.next().await {
                let e = item.expect("subscription read");
                if e.stream.aggregate_type == "End" {
                    break;
                }
                seen.push(e);
            }
            seen
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let stream = StreamId::new("Writer", format!("w{w}"));
            let mut acknowledged: Vec<RecordedEvent> = Vec::new();
            for i in 0..APPENDS {
                // Every writer appends at its known version; some also retry an append
                // (the same events), which must return what was stored the first time.
                let batch: Vec<NewEvent> = events("E", i, 1 + i % 2);
                let expected = ExpectedVersion::Exact(acknowledged.len() as u64);
                let recorded = store
                    .append(&stream, expected, batch.clone())
                    .await
                    .expect("append");
                if i % 5 == 0 {
                    let again = store
                        .append(&stream, expected, batch)
                        .await
                        .expect("identical retry");
                    assert_eq!(
                        again.iter().map(|r| r.position).collect::<Vec<_>>(),
                        recorded.iter().map(|r| r.position).collect::<Vec<_>>()
                    );
                }
                acknowledged.extend(recorded);
            }
            acknowledged
        }));
    }
    let mut acknowledged: HashMap<Uuid, u64> = HashMap::new();
    let mut times: HashMap<chrono::DateTime<chrono::Utc>, HashSet<String>> = HashMap::new();
    for writer in writers {
        for r in writer.await.expect("writer") {
            times
                .entry(r.recorded_at)
                .or_default()
                .insert(r.stream.aggregate_id.clone());
            assert!(acknowledged.insert(r.event_id, r.position).is_none());
        }
    }
    store
        .append(
            &StreamId::new("End", "end"),
            ExpectedVersion::NoStream,
            vec![event("End", 0)],
        )
        .await
        .expect("end marker");
    let seen = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .expect("the follower finishes")
        .expect("follower task");
    assert!(
        times.values().any(|writers| writers.len() > 1),
        "some appends of different writers shared a statement"
    );
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    let seen_ids: HashMap<Uuid, u64> = seen.iter().map(|e| (e.event_id, e.position)).collect();
    assert_eq!(seen_ids.len(), seen.len(), "no event seen twice");
    assert_eq!(
        seen_ids, acknowledged,
        "the follower saw exactly the acknowledged events, at their positions"
    );
    for w in 0..WRITERS {
        let stream = StreamId::new("Writer", format!("w{w}"));
        let versions: Vec<u64> = store
            .read_stream(&stream, &StreamQuery::all())
            .await
            .expect("read")
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    }
}

/// A runtime shut down with appends queued for a group: the queue is handed back (a leader
/// spawned on a closing runtime is dropped at once and must not start another), nothing
/// hangs or overflows, and nothing is half written.
#[test]
fn a_runtime_shut_down_with_a_queue_hands_the_queue_back() {
    let outer = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("outer runtime");
    let (store, direct, blocker) = outer.block_on(async {
        let store = common::fresh_store_with(StoreOptions::new().group_commit(1), 8).await;
        let direct = common::reopen(&store, StoreOptions::new().group_commit(0), 4);
        let mut blocker = direct.begin().await.expect("begin");
        direct
            .append_in(
                &mut blocker,
                &StreamId::new("Lane", "held"),
                ExpectedVersion::Any,
                vec![event("B", 0)],
            )
            .await
            .expect("blocker");
        (store, direct, blocker)
    });
    let inner = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("inner runtime");
    let (lane, members) = inner.block_on(async {
        let lane = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .append(
                        &StreamId::new("Lane", "held"),
                        ExpectedVersion::Any,
                        vec![event("W", 1)],
                    )
                    .await
            }
        });
        wait_for_lock_wait(store.schema()).await;
        let mut members = Vec::new();
        for i in 0..3 {
            members.push(
                queued(append(
                    &store,
                    s(&format!("q{i}")),
                    ExpectedVersion::NoStream,
                    events("E", i * 10, 2),
                ))
                .await,
            );
        }
        (lane, members)
    });
    // Everything queued belongs to the inner runtime, which goes away now.
    drop(members);
    drop(lane);
    drop(inner);
    outer.block_on(async {
        blocker.rollback().await.expect("rollback");
        for i in 0..3 {
            let version = direct
                .stream_version(&s(&format!("q{i}")))
                .await
                .expect("version");
            assert!(version == 0 || version == 2, "whole or nothing: {version}");
        }
        // The store still works from the other runtime, alone and in groups.
        let written = store
            .append(&s("after"), ExpectedVersion::NoStream, events("E", 100, 2))
            .await
            .expect("append after the shutdown");
        assert_eq!(written.len(), 2);
    });
}
