//! Concurrency and fault tests of the global order against the real server: many writers with
//! late commits and a live follower, open appends holding followers back (per schema), a
//! contested stream, a connection killed in the middle of an append, racing identical
//! retries, and the announcement an append makes before it draws a position.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use es_core::testing::conformance::{event, events};
use es_core::{
    Error, ExpectedVersion, GlobalLog, GlobalLogExt, LogFilter, StreamId, StreamQuery, StreamStore,
};
use es_postgres::{PostgresStore, StoreOptions};
use futures::StreamExt;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

/// 32 writers on 128 streams, every fifth append held open by `pg_sleep` inside its
/// transaction so that it commits after appends that took higher positions; a live
/// subscription must see every committed event exactly once and in position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_writers_with_late_commits_and_a_live_follower() {
    many_writers_with_late_commits(StoreOptions::new()).await;
}

/// The same with two group-commit lanes: most plain appends leave in groups, one
/// announcement per group.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_writers_in_groups_with_late_commits_and_a_live_follower() {
    many_writers_with_late_commits(StoreOptions::new().group_commit(2)).await;
}

async fn many_writers_with_late_commits(options: StoreOptions) {
    const WRITERS: usize = 32;
    const APPENDS: usize = 15;
    let store =
        common::fresh_store_with(options.poll_interval(Duration::from_millis(200)), 36).await;
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
                seen.push((e.position, e.event_id));
            }
            seen
        })
    };

    let began = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            // (event ids, first position, time committed, slow?)
            let mut done = Vec::new();
            for i in 0..APPENDS {
                let s = StreamId::new("Many", format!("w{w}-s{}", i % 4));
                let batch = events("E", i as u64, 1 + (i % 3) as u64);
                let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
                let slow = (i + w) % 5 == 0;
                let position = if slow {
                    let mut tx = store.begin().await.expect("begin");
                    let recorded = store
                        .append_in(&mut tx, &s, ExpectedVersion::Any, batch)
                        .await
                        .expect("slow append");
                    sqlx::query("SELECT pg_sleep($1)")
                        .bind(0.02 + 0.01 * (w % 8) as f64)
                        .execute(tx.conn())
                        .await
                        .expect("sleep");
                    tx.commit().await.expect("commit");
                    recorded[0].position
                } else {
                    store
                        .append(&s, ExpectedVersion::Any, batch)
                        .await
                        .expect("append")[0]
                        .position
                };
                done.push((ids, position, began.elapsed(), slow));
            }
            done
        }));
    }
    let mut written = HashSet::new();
    let mut log = Vec::new();
    for writer in writers {
        for (ids, position, at, slow) in writer.await.expect("writer") {
            written.extend(ids.iter().copied());
            log.push((position, at, slow));
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
        .expect("follower finishes")
        .expect("follower task");

    // Late commits really happened: some slow append committed after a fast one that had
    // taken a higher position.
    let late = log.iter().filter(|(p, at, slow)| {
        *slow
            && log
                .iter()
                .any(|(q, fast_at, fast_slow)| !fast_slow && q > p && fast_at < at)
    });
    assert!(late.count() > 0, "no late commit happened");

    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "positions strictly increase"
    );
    let seen_ids: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(seen_ids.len(), seen.len(), "no event seen twice");
    let missed = written.difference(&seen_ids).count();
    let extra = seen_ids.difference(&written).count();
    assert_eq!(
        (missed, extra),
        (0, 0),
        "every committed event seen, nothing else ({} written, {} seen)",
        written.len(),
        seen_ids.len()
    );
}

/// A long transaction holds followers back, and they resume exactly where it was; a page
/// that is not full reports how far it scanned, never past the open append.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_append_holds_the_follower_back_without_skipping() {
    let store = common::fresh_store().await;
    let (a, b) = (StreamId::new("T", "a"), StreamId::new("T", "b"));
    let mut tx = store.begin().await.expect("begin");
    let early = store
        .append_in(&mut tx, &a, ExpectedVersion::NoStream, vec![event("E", 1)])
        .await
        .expect("open append");
    let later = store
        .append(&b, ExpectedVersion::NoStream, vec![event("E", 2)])
        .await
        .expect("committed append");
    assert!(later[0].position > early[0].position);
    let page = store
        .read_log(0, 10, &LogFilter::all())
        .await
        .expect("read");
    assert!(
        page.events.is_empty(),
        "nothing past the open append is released"
    );
    assert!(
        page.scanned_to < early[0].position,
        "scanned_to {} must stay below the open append's position {}",
        page.scanned_to,
        early[0].position
    );
    assert_eq!(store.head_position().await.expect("head"), 0);
    tx.commit().await.expect("commit");
    let page = store
        .read_log(page.scanned_to, 10, &LogFilter::all())
        .await
        .expect("read");
    assert_eq!(
        page.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        [early[0].position, later[0].position]
    );
    assert_eq!(
        store.head_position().await.expect("head"),
        later[0].position
    );
}

/// The announcement tag of a schema name, as the migration computes it.
async fn tag_of(store: &PostgresStore, schema: &str) -> i32 {
    sqlx::query_scalar("SELECT 1 + (('x' || left(md5($1), 4))::bit(16)::integer % 255)")
        .bind(schema)
        .fetch_one(store.pool())
        .await
        .expect("compute a tag")
}

/// A migrated store on schema `schema` of the test database.
async fn store_on(schema: &str) -> PostgresStore {
    let store =
        PostgresStore::from_pool_with(common::pool(schema, 4), StoreOptions::new().schema(schema))
            .expect("valid options");
    store.migrate().await.expect("migrate");
    store
}

/// Two schemas whose tags differ, or are equal (`same`), as fresh stores.
async fn two_schemas(same: bool) -> (PostgresStore, PostgresStore) {
    let probe = common::fresh_store().await;
    let first = common::fresh_schema().await;
    let tag = tag_of(&probe, &first).await;
    for attempt in 0..10_000 {
        let candidate = format!("{first}_{attempt}");
        if (tag_of(&probe, &candidate).await == tag) == same {
            let (a, b) = (store_on(&first).await, store_on(&candidate).await);
            let tags: (i32, i32) = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT \"{first}\".es_schema_tag(), \"{candidate}\".es_schema_tag()"
            )))
            .fetch_one(probe.pool())
            .await
            .expect("read the tags");
            assert_eq!(tags.0 == tags.1, same, "the migration's tags: {tags:?}");
            return (a, b);
        }
    }
    panic!("no schema name with the wanted tag");
}

/// The frontier is per schema: an append held open in one schema does not hold back the
/// followers of a schema with another tag, while its own schema's followers wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_append_holds_back_only_its_own_schema() {
    let (a, b) = two_schemas(false).await;
    let s = StreamId::new("T", "s");
    let mut tx = a.begin().await.expect("begin");
    a.append_in(&mut tx, &s, ExpectedVersion::NoStream, vec![event("E", 1)])
        .await
        .expect("open append in a");
    a.append(
        &StreamId::new("T", "later"),
        ExpectedVersion::NoStream,
        vec![event("E", 2)],
    )
    .await
    .expect("committed append in a");
    let in_b = b
        .append(&s, ExpectedVersion::NoStream, vec![event("E", 3)])
        .await
        .expect("append in b");
    assert_eq!(
        b.read_all(0, 10).await.expect("read b").len(),
        1,
        "schema b is not held back by schema a's open append"
    );
    assert_eq!(b.head_position().await.expect("head b"), in_b[0].position);
    assert!(
        a.read_all(0, 10).await.expect("read a").is_empty(),
        "schema a waits for its open append"
    );
    tx.commit().await.expect("commit");
    assert_eq!(a.read_all(0, 10).await.expect("read a").len(), 2);
}

/// Two schemas whose tags collide see each other's announcements: the follower of one may
/// be delayed by the other's open append, and once it commits reads everything, skipping
/// nothing.
///
/// The delay needs a position of b that is not visible at or above a's announced bound: a
/// rolled-back append leaves one (positions 1..=3 committed, 4 rolled back, 5 and 6
/// committed), and a's bound is 1 (its fresh sequence).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn colliding_schema_tags_only_delay() {
    let (a, b) = two_schemas(true).await;
    let s = StreamId::new("T", "s");
    b.append(&s, ExpectedVersion::NoStream, events("E", 0, 3))
        .await
        .expect("history in b");
    let mut undone = b.begin().await.expect("begin");
    b.append_in(
        &mut undone,
        &s,
        ExpectedVersion::Exact(3),
        vec![event("E", 9)],
    )
    .await
    .expect("an append that will roll back");
    undone.rollback().await.expect("rollback");
    let more = b
        .append(&s, ExpectedVersion::Exact(3), events("E", 3, 2))
        .await
        .expect("append in b");
    let mut tx = a.begin().await.expect("begin");
    a.append_in(&mut tx, &s, ExpectedVersion::NoStream, vec![event("E", 1)])
        .await
        .expect("open append in a");
    let held = b.read_all(0, 10).await.expect("read b");
    assert_eq!(
        held.len(),
        3,
        "b's follower is held back at its hole by the colliding open append"
    );
    tx.commit().await.expect("commit");
    let all = b.read_all(0, 10).await.expect("read b");
    assert_eq!(all.len(), 5, "once it commits, nothing of b is skipped");
    assert_eq!(
        all.last().map(|e| e.position),
        more.last().map(|e| e.position)
    );
}

/// 24 tasks append to one stream at the version each last read: exactly one wins each version,
/// every loser learns a newer actual version, and the stream ends gapless.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contested_stream_one_winner_per_version() {
    const TASKS: u64 = 24;
    const WINS: u64 = 6;
    let store = common::fresh_store_with(StoreOptions::new(), 10).await;
    let s = StreamId::new("Contested", "one");
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let (store, s) = (store.clone(), s.clone());
        handles.push(tokio::spawn(async move {
            let (mut wins, mut conflicts) = (Vec::new(), 0u64);
            let mut current = 0;
            while (wins.len() as u64) < WINS {
                match store
                    .append(&s, ExpectedVersion::Exact(current), vec![event("E", task)])
                    .await
                {
                    Ok(recorded) => {
                        assert_eq!(recorded[0].version, current + 1);
                        wins.push(current + 1);
                        current += 1;
                    }
                    Err(Error::Conflict {
                        actual, expected, ..
                    }) => {
                        assert_eq!(expected, ExpectedVersion::Exact(current));
                        assert!(
                            actual > current,
                            "actual {actual} after expecting {current}"
                        );
                        conflicts += 1;
                        // Retry at the version the conflict reported, without reading.
                        current = actual;
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
            }
            (wins, conflicts)
        }));
    }
    let mut all_wins = Vec::new();
    let mut conflicts = 0;
    for h in handles {
        let (wins, c) = h.await.expect("task");
        all_wins.extend(wins);
        conflicts += c;
    }
    all_wins.sort_unstable();
    assert_eq!(
        all_wins,
        (1..=TASKS * WINS).collect::<Vec<_>>(),
        "each version won exactly once"
    );
    assert!(conflicts > 0, "the stream was contested");
    let stored = store
        .read_stream(&s, &StreamQuery::all())
        .await
        .expect("read");
    assert_eq!(
        stored.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=TASKS * WINS).collect::<Vec<_>>()
    );
}

/// An append blocked inside the database is killed with `pg_terminate_backend`: its outcome
/// is reported as unknown (the connection died after the write was sent), nothing of it is
/// stored, and retrying the same events stores them exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_append_leaves_nothing_and_retry_succeeds_once() {
    let store = common::fresh_store().await;
    let s = StreamId::new("Killed", "k");
    // A transaction that has written version 1 and not committed: the victim's insert of
    // version 1 waits on its unique-key entry (in the plain-SQL append, the first attempt).
    let mut blocker = store.begin().await.expect("begin");
    store
        .append_in(&mut blocker, &s, ExpectedVersion::Any, vec![event("B", 0)])
        .await
        .expect("blocker");
    let batch = events("E", 1, 5);
    let victim = {
        let (store, s, batch) = (store.clone(), s.clone(), batch.clone());
        tokio::spawn(async move { store.append(&s, ExpectedVersion::Any, batch).await })
    };
    let pid = waiting_append_pid(&store).await;
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(store.pool())
        .await
        .expect("terminate");
    assert!(killed);
    let result = victim.await.expect("victim task");
    assert!(
        matches!(result, Err(Error::OutcomeUnknown(_))),
        "a write whose connection is killed has an unknown outcome: {result:?}"
    );
    blocker.rollback().await.expect("rollback");

    let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
    let stored: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{}\".events WHERE event_id = ANY($1)",
        store.schema()
    )))
    .bind(&ids)
    .fetch_one(store.pool())
    .await
    .expect("count");
    assert_eq!(stored, 0, "nothing partial");
    assert_eq!(store.stream_version(&s).await.expect("version"), 0);

    let first = store
        .append(&s, ExpectedVersion::Any, batch.clone())
        .await
        .expect("retry");
    assert_eq!(
        first.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let again = store
        .append(&s, ExpectedVersion::Exact(0), batch)
        .await
        .expect("second retry is idempotent");
    assert_eq!(
        again.iter().map(|e| e.position).collect::<Vec<_>>(),
        first.iter().map(|e| e.position).collect::<Vec<_>>()
    );
    assert_eq!(
        store
            .read_stream(&s, &StreamQuery::all())
            .await
            .expect("read")
            .len(),
        5,
        "stored exactly once"
    );
}

/// Identical retries racing each other store the batch once and all return it, with and
/// without an inline projection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_identical_retries_store_once() {
    for store in [
        common::fresh_store().await,
        common::fresh_inline_store().await,
    ] {
        let s = StreamId::new("Retry", "r");
        let batch = events("E", 1, 3);
        let mut handles = Vec::new();
        for _ in 0..8 {
            let (store, s, batch) = (store.clone(), s.clone(), batch.clone());
            handles.push(tokio::spawn(async move {
                store.append(&s, ExpectedVersion::NoStream, batch).await
            }));
        }
        let mut positions = HashSet::new();
        for h in handles {
            let recorded = h.await.expect("task").expect("every retry succeeds");
            positions.insert(
                recorded
                    .iter()
                    .map(|e| (e.position, e.version))
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(
            positions.len(),
            1,
            "all retries return the same stored events ({store:?})"
        );
        assert_eq!(store.stream_version(&s).await.expect("version"), 3);
    }
}

/// The plain-SQL append announces a lower bound of its position (the advisory lock the
/// follower's frontier reads, tagged with the schema) before it draws one: caught while it
/// waits on the unique key, after drawing, its lock is held and the bound is at most the
/// position it commits with.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_sql_append_announces_its_bound_before_drawing() {
    let store = common::fresh_store().await;
    let s = StreamId::new("Announced", "a");
    let mut blocker = store.begin().await.expect("begin");
    store
        .append_in(&mut blocker, &s, ExpectedVersion::Any, vec![event("B", 0)])
        .await
        .expect("blocker");
    let waiting = {
        let (store, s) = (store.clone(), s.clone());
        tokio::spawn(async move {
            store
                .append(&s, ExpectedVersion::Any, vec![event("E", 1)])
                .await
        })
    };
    let pid = waiting_append_pid(&store).await;
    let tag: i32 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT \"{}\".es_schema_tag()",
        store.schema()
    )))
    .fetch_one(store.pool())
    .await
    .expect("tag");
    let bound: Option<i64> = sqlx::query_scalar(
        "SELECT ((classid::bigint & 65535) << 32) | objid::bigint FROM pg_locks \
         WHERE locktype = 'advisory' AND objsubid = 2 AND (classid::bigint >> 16) = (69 << 8) | $2 \
           AND pid = $1 AND granted",
    )
    .bind(pid)
    .bind(tag)
    .fetch_optional(store.pool())
    .await
    .expect("read pg_locks");
    let bound = bound.expect("the waiting append holds its tagged announcement");
    assert!(
        store.read_all(0, 10).await.expect("read").is_empty(),
        "nothing is released while appends are open"
    );
    blocker.rollback().await.expect("rollback");
    let recorded = waiting
        .await
        .expect("task")
        .expect("append after the rollback");
    assert_eq!(recorded[0].version, 1);
    assert!(
        u64::try_from(bound).expect("positive") <= recorded[0].position,
        "bound {bound} must not exceed the position {}",
        recorded[0].position
    );
    let all = store.read_all(0, 10).await.expect("read");
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        [recorded[0].position]
    );
}

/// The backend of an append of this test's store that waits on a lock inside its insert
/// (found by polling `pg_stat_activity` for up to 30 s: no signal exists for it).
async fn waiting_append_pid(store: &PostgresStore) -> i32 {
    let looking = Instant::now();
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1 \
               AND wait_event_type = 'Lock' \
               AND query LIKE '%INSERT INTO%events%' AND pid <> pg_backend_pid()",
        )
        .bind(store.schema())
        .fetch_optional(store.pool())
        .await
        .expect("find the waiting append");
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            looking.elapsed() < Duration::from_secs(30),
            "the append never waited on the unique key"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
