//! Torture and fault tests of the PostgreSQL store: many concurrent writers against live
//! followers, and every connection of the database killed mid-run.
//!
//! Each test runs in a database of its own (see `common`). The server itself is never
//! restarted (other tests use it concurrently): "restart" is simulated by terminating every
//! backend of the test database.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestDb, from_a_killed_connection};
use es_core::{
    CheckpointStore, Error, ExpectedVersion, GlobalLog, GlobalLogExt, LogFilter, Metadata,
    NewEvent, RecordedEvent, StreamId, StreamQuery, StreamStore,
};
use es_postgres::{PostgresStore, StoreOptions};
use futures::StreamExt;
use uuid::Uuid;

fn event(writer: usize, seq: u64) -> NewEvent {
    let payload = serde_json::value::to_raw_value(&serde_json::json!({
        "writer": writer,
        "seq": seq,
        "reference": format!("w{writer}-{seq}"),
    }))
    .expect("encode payload");
    NewEvent {
        event_id: Uuid::now_v7(),
        event_name: "Tortured".into(),
        schema_version: 1,
        payload,
        metadata: Metadata::by_user(format!("writer-{writer}")),
    }
}

/// What a follower saw: (position, event id) in delivery order.
type Seen = Vec<(u64, Uuid)>;

/// What a follower ends with: what it saw, the errors of killed connections it met, and any
/// other error (which ends it).
struct Followed {
    seen: Seen,
    killed: Vec<String>,
    other: Vec<String>,
}

impl Followed {
    fn new() -> Self {
        Self {
            seen: Vec::new(),
            killed: Vec::new(),
            other: Vec::new(),
        }
    }

    /// Records `error`; whether the follower may go on.
    fn met(&mut self, error: &Error, tolerate_kills: bool) -> bool {
        if tolerate_kills && from_a_killed_connection(error) {
            self.killed.push(format!("{error:?}"));
            true
        } else {
            self.other.push(format!("{error:?}"));
            false
        }
    }
}

/// The follower saw exactly the acknowledged events, each once, in strictly increasing
/// position order, and at the positions the appends returned.
fn check_follower(name: &str, seen: &Seen, acknowledged: &HashMap<Uuid, u64>) {
    for pair in seen.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "{name}: position {} delivered after {}",
            pair[1].0,
            pair[0].0
        );
    }
    let ids: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(
        ids.len(),
        seen.len(),
        "{name}: an event was delivered twice"
    );
    let missing = acknowledged.keys().filter(|id| !ids.contains(id)).count();
    let extra = ids
        .iter()
        .filter(|id| !acknowledged.contains_key(id))
        .count();
    assert!(
        missing == 0 && extra == 0,
        "{name}: {missing} acknowledged events never delivered, {extra} delivered events never acknowledged"
    );
    for (position, id) in seen {
        assert_eq!(
            acknowledged.get(id),
            Some(position),
            "{name}: {id} delivered at another position than its append returned"
        );
    }
}

/// Every stream's versions are 1..=n without a gap, and the store holds exactly the
/// acknowledged events.
async fn check_streams(
    store: &PostgresStore,
    streams: &[StreamId],
    acknowledged: &HashMap<Uuid, u64>,
) {
    let mut stored = HashSet::new();
    for stream in streams {
        let events = store
            .read_stream(stream, &StreamQuery::all())
            .await
            .expect("read stream");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.version, i as u64 + 1, "{stream}: versions have a gap");
            assert!(stored.insert(e.event_id), "{stream}: duplicate event id");
        }
    }
    assert_eq!(
        stored.len(),
        acknowledged.len(),
        "stored and acknowledged counts differ"
    );
    assert!(
        stored.iter().all(|id| acknowledged.contains_key(id)),
        "stored ids differ from acknowledged ids"
    );
}

fn acknowledge(acknowledged: &mut HashMap<Uuid, u64>, recorded: &[RecordedEvent]) {
    for e in recorded {
        assert!(
            acknowledged.insert(e.event_id, e.position).is_none(),
            "{} acknowledged twice",
            e.event_id
        );
    }
}

/// Waits until `expected` holds a count (the writers are done) and `seen` reached it.
fn done(expected: &AtomicU64, seen: usize) -> bool {
    let target = expected.load(Ordering::SeqCst);
    target != u64::MAX && seen as u64 >= target
}

/// A follower that pages the log from a checkpoint it saves in the store after each page,
/// continuing after `scanned_to` and waiting on the store's wake-up signal when caught up.
/// Under `tolerate_kills`, an error from a killed connection makes it "restart": it forgets
/// everything after its durable checkpoint and resumes from the checkpoint loaded back. Any
/// other error, or any error at all without `tolerate_kills`, is recorded and fails the test.
async fn keyset_follower(
    store: PostgresStore,
    name: &'static str,
    expected: Arc<AtomicU64>,
    deadline: Instant,
    tolerate_kills: bool,
) -> Followed {
    let mut wakeup = store.wakeup();
    let mut followed = Followed::new();
    let mut after = 0u64;
    while !done(&expected, followed.seen.len()) {
        assert!(
            Instant::now() < deadline,
            "{name}: timed out with {} events seen",
            followed.seen.len()
        );
        let result = match store.read_log(after, 1_000, &LogFilter::all()).await {
            Ok(page) => {
                let empty = page.events.is_empty();
                followed
                    .seen
                    .extend(page.events.iter().map(|e| (e.position, e.event_id)));
                after = page.scanned_to;
                let saved = store.save_checkpoint(name, after).await;
                if saved.is_ok() && empty {
                    wakeup.wait().await;
                }
                saved
            }
            Err(e) => Err(e),
        };
        if let Err(error) = result {
            if !followed.met(&error, tolerate_kills) {
                return followed;
            }
            // Restart from the durable checkpoint, once the database answers again.
            let checkpoint = loop {
                match store.load_checkpoint(name).await {
                    Ok(c) => break c.unwrap_or(0),
                    Err(e) => {
                        if !followed.met(&e, tolerate_kills) {
                            return followed;
                        }
                    }
                }
            };
            followed.seen.retain(|(p, _)| *p <= checkpoint);
            after = checkpoint;
        }
    }
    followed
}

/// A follower on `GlobalLogExt::subscribe`: errors are yielded as items and the subscription
/// carries on from the last position it delivered. Errors other than those of a killed
/// connection (all of them without `tolerate_kills`) are recorded and end it.
async fn subscription_follower(
    store: PostgresStore,
    name: &'static str,
    expected: Arc<AtomicU64>,
    deadline: Instant,
    tolerate_kills: bool,
) -> Followed {
    let mut sub = store.subscribe(0, LogFilter::all());
    let mut followed = Followed::new();
    while !done(&expected, followed.seen.len()) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.min(Duration::from_millis(200)), sub.next()).await {
            Ok(Some(Ok(e))) => followed.seen.push((e.position, e.event_id)),
            Ok(Some(Err(e))) => {
                if !followed.met(&e, tolerate_kills) {
                    return followed;
                }
            }
            Ok(None) => panic!("{name}: subscription ended"),
            Err(_) => assert!(
                Instant::now() < deadline,
                "{name}: timed out with {} events seen",
                followed.seen.len()
            ),
        }
    }
    followed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_writers_and_two_live_followers_see_everything_exactly_once() {
    let db = TestDb::create().await;
    let store = db.store(StoreOptions::new().max_connections(24)).await;
    let started = Instant::now();
    // Only against hanging: how fast is for the benchmarks.
    let deadline = started + Duration::from_secs(300);

    const WRITERS: usize = 64;
    const BATCHES: usize = 80;
    const BATCH: usize = 50;
    const HOT: usize = 8;
    // u64::MAX until the writers are done; then the number of events acknowledged.
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let sub = tokio::spawn(subscription_follower(
        store.clone(),
        "subscription",
        expected.clone(),
        deadline,
        false,
    ));
    let poll = tokio::spawn(keyset_follower(
        store.clone(),
        "keyset",
        expected.clone(),
        deadline,
        false,
    ));

    // Each writer appends batches at exact versions to its own stream, and single events with
    // `Any` to one of a few hot streams shared by everyone (racing on the same versions).
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let own = StreamId::new("Torture", format!("w{w}"));
            let hot = StreamId::new("Torture", format!("hot{}", w % HOT));
            let mut recorded_all = Vec::new();
            let mut version = 0u64;
            let mut seq = 0u64;
            for b in 0..BATCHES {
                let batch: Vec<NewEvent> = (0..BATCH)
                    .map(|_| {
                        seq += 1;
                        event(w, seq)
                    })
                    .collect();
                let recorded = store
                    .append(&own, ExpectedVersion::Exact(version), batch)
                    .await
                    .expect("append batch");
                assert_eq!(recorded.len(), BATCH);
                version += recorded.len() as u64;
                recorded_all.extend(recorded);
                if b % 4 == 0 {
                    seq += 1;
                    let recorded = store
                        .append(&hot, ExpectedVersion::Any, vec![event(w, seq)])
                        .await
                        .expect("append to a hot stream");
                    recorded_all.extend(recorded);
                }
            }
            recorded_all
        }));
    }
    let mut acknowledged = HashMap::new();
    for writer in writers {
        acknowledge(&mut acknowledged, &writer.await.expect("writer task"));
    }
    let total = acknowledged.len() as u64;
    assert_eq!(
        total,
        (WRITERS * BATCHES * BATCH + WRITERS * BATCHES.div_ceil(4)) as u64,
        "every append was acknowledged with all its events"
    );
    let write_secs = started.elapsed().as_secs_f64();
    expected.store(total, Ordering::SeqCst);

    let sub = sub.await.expect("subscription follower");
    let poll = poll.await.expect("keyset follower");
    for (name, followed) in [("subscription", &sub), ("keyset", &poll)] {
        assert!(
            followed.killed.is_empty() && followed.other.is_empty(),
            "{name}: errors without any fault: {:?} {:?}",
            followed.killed,
            followed.other
        );
        check_follower(name, &followed.seen, &acknowledged);
    }

    let mut streams: Vec<StreamId> = (0..WRITERS)
        .map(|w| StreamId::new("Torture", format!("w{w}")))
        .collect();
    streams.extend((0..HOT).map(|h| StreamId::new("Torture", format!("hot{h}"))));
    check_streams(&store, &streams, &acknowledged).await;
    eprintln!(
        "{total} events by {WRITERS} writers in {write_secs:.1} s; followers done at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store.pool().close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_connection_mid_run_loses_and_duplicates_nothing() {
    let db = Arc::new(TestDb::create().await);
    let store = db.store(StoreOptions::new().max_connections(20)).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);

    const WRITERS: usize = 16;
    const BATCH: usize = 20;
    /// Kills that must land (terminate at least one backend) while the writers run.
    const KILLS: u64 = 6;
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let sub = tokio::spawn(subscription_follower(
        store.clone(),
        "subscription",
        expected.clone(),
        deadline,
        true,
    ));
    let poll = tokio::spawn(keyset_follower(
        store.clone(),
        "keyset",
        expected.clone(),
        deadline,
        true,
    ));

    // The writers go on until KILLS kills have landed; the killer kills again only after the
    // writers acknowledged as many appends as there are writers since the last kill, so that
    // each kill lands in the middle of the run whatever the machine's speed.
    let kills_landed = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(AtomicU64::new(0));
    let writer_errors = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, kills_landed, progress, errors) = (
            store.clone(),
            kills_landed.clone(),
            progress.clone(),
            writer_errors.clone(),
        );
        writers.push(tokio::spawn(async move {
            let stream = StreamId::new("Fault", format!("w{w}"));
            let mut recorded_all = Vec::new();
            let mut version = 0u64;
            let mut seq = 0u64;
            while kills_landed.load(Ordering::SeqCst) < KILLS {
                assert!(
                    Instant::now() < deadline,
                    "writer {w}: the kills never landed"
                );
                let batch: Vec<NewEvent> = (0..BATCH)
                    .map(|_| {
                        seq += 1;
                        event(w, seq)
                    })
                    .collect();
                // Retry the SAME events (same ids) at the same expected version until it
                // succeeds: if an attempt committed before its connection died, the retry
                // returns the stored events instead of appending them again. Only the errors
                // of a killed connection are retried.
                let mut attempts = 0;
                let recorded = loop {
                    attempts += 1;
                    match store
                        .append(&stream, ExpectedVersion::Exact(version), batch.clone())
                        .await
                    {
                        Ok(recorded) => break recorded,
                        Err(e) if from_a_killed_connection(&e) && attempts < 100 => {
                            errors.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Err(e) => panic!("writer {w}, attempt {attempts}: {e:?}"),
                    }
                };
                assert_eq!(recorded.len(), BATCH);
                for (r, e) in recorded.iter().zip(&batch) {
                    assert_eq!(r.event_id, e.event_id, "writer {w}: recorded other events");
                }
                version += BATCH as u64;
                recorded_all.extend(recorded);
                progress.fetch_add(1, Ordering::SeqCst);
            }
            recorded_all
        }));
    }

    let killer = {
        let (db, kills_landed, progress) = (db.clone(), kills_landed.clone(), progress.clone());
        tokio::spawn(async move {
            let mut kills = Vec::new();
            let mut last = 0;
            while kills_landed.load(Ordering::SeqCst) < KILLS {
                assert!(Instant::now() < deadline, "kills so far: {kills:?}");
                let now = progress.load(Ordering::SeqCst);
                if now < last + WRITERS as u64 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                last = now;
                let killed = db.kill_connections().await;
                kills.push(killed);
                if killed > 0 {
                    kills_landed.fetch_add(1, Ordering::SeqCst);
                }
            }
            kills
        })
    };

    let mut acknowledged = HashMap::new();
    let mut per_writer = Vec::new();
    for writer in writers {
        let recorded = writer.await.expect("writer task");
        per_writer.push(recorded.len());
        acknowledge(&mut acknowledged, &recorded);
    }
    let kills = killer.await.expect("killer task");
    let total = acknowledged.len() as u64;
    expected.store(total, Ordering::SeqCst);

    let sub = sub.await.expect("subscription follower");
    let poll = poll.await.expect("keyset follower");
    assert!(
        writer_errors.load(Ordering::SeqCst) > 0,
        "no writer saw an error although connections were killed {kills:?}"
    );
    for (name, followed) in [("subscription", &sub), ("keyset", &poll)] {
        assert!(
            followed.other.is_empty(),
            "{name}: errors a killed connection does not explain: {:?}",
            followed.other
        );
        check_follower(name, &followed.seen, &acknowledged);
    }
    let streams: Vec<StreamId> = (0..WRITERS)
        .map(|w| StreamId::new("Fault", format!("w{w}")))
        .collect();
    check_streams(&store, &streams, &acknowledged).await;

    // Each writer's stream holds exactly its acknowledged batches: no retry appended a batch
    // again under new versions.
    for (w, count) in per_writer.iter().enumerate() {
        let stream = StreamId::new("Fault", format!("w{w}"));
        assert_eq!(
            store.stream_version(&stream).await.expect("version"),
            *count as u64,
            "writer {w}"
        );
    }
    let idle = db.idle_in_transaction().await;
    assert!(
        idle.is_empty(),
        "backends left inside a transaction: {idle:?}"
    );
    eprintln!(
        "{total} events acknowledged; kills {kills:?}; writer errors {}; subscription errors {}; \
         keyset restarts {}; {:.1} s",
        writer_errors.load(Ordering::SeqCst),
        sub.killed.len(),
        poll.killed.len(),
        started.elapsed().as_secs_f64()
    );
    store.pool().close().await;
    match Arc::try_unwrap(db) {
        Ok(db) => db.drop_now().await,
        Err(_) => panic!("the killer still holds the test database"),
    }
}
