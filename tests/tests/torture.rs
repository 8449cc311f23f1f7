//! Torture and fault tests of the PostgreSQL store: many concurrent writers against live
//! followers, and every connection of the database killed mid-run.
//!
//! Each test creates its own database `es_torture_<time>_<uuid>` on the server named by
//! `DATABASE_URL` (default: the local server) and drops it at the end. An unreachable server
//! fails the tests: nothing here skips. The server itself is never restarted (other tests use
//! it concurrently): "restart" is simulated by terminating every backend of the test database.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use es_core::{Error, EventStore, ExpectedVersion, Metadata, NewEvent, StreamId, StreamQuery};
use es_postgres::{PostgresStore, StoreOptions, SubscriptionOptions};
use futures::StreamExt;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use uuid::Uuid;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn url_for(db: &str) -> String {
    let url = admin_url();
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b.to_owned(), Some(q.to_owned())),
        None => (url, None),
    };
    let scheme_end = base.find("//").map_or(0, |i| i + 2);
    let base = match base[scheme_end..].find('/') {
        Some(i) => base[..scheme_end + i].to_owned(),
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

async fn admin() -> PgConnection {
    let url = admin_url();
    PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be reachable at {url} for these tests: {e}"))
}

/// A fresh database, dropped by [`TestDb::drop_now`] (and stale ones from crashed runs older
/// than 15 minutes are dropped when the next one is created).
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    async fn create() -> Self {
        let mut conn = admin().await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname LIKE 'es\\_torture\\_%'",
        )
        .fetch_all(&mut conn)
        .await
        .expect("list torture databases");
        for name in stale {
            let stamp = name
                .trim_start_matches("es_torture_")
                .split('_')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            if now.saturating_sub(stamp) > 15 * 60 {
                let _ = sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        }
        let name = format!("es_torture_{now}_{}", Uuid::now_v7().simple());
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let url = url_for(&name);
        Self { name, url }
    }

    /// Terminates every backend connected to this database; returns how many.
    async fn kill_connections(&self) -> i64 {
        let mut conn = admin().await;
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()) t",
        )
        .bind(&self.name)
        .fetch_one(&mut conn)
        .await
        .expect("terminate backends");
        killed
    }

    async fn drop_now(self) {
        let mut conn = admin().await;
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await
        .expect("drop the test database");
    }
}

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

/// Every follower saw every written id exactly once, in strictly increasing position order.
fn check_follower(name: &str, seen: &Seen, written: &HashSet<Uuid>) {
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
    let missing = written.difference(&ids).count();
    let extra = ids.difference(written).count();
    assert!(
        missing == 0 && extra == 0,
        "{name}: {missing} written events never delivered, {extra} delivered events never written"
    );
}

/// Every stream's versions are 1..=n without a gap, and the store holds exactly `written`.
async fn check_streams(store: &PostgresStore, streams: &[StreamId], written: &HashSet<Uuid>) {
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
        written.len(),
        "stored and written counts differ"
    );
    assert!(stored == *written, "stored ids differ from written ids");
}

/// A follower that polls `read_all` by keyset from a checkpoint it saves in the store after
/// each page. On an error it "restarts": it forgets everything after its durable checkpoint
/// and resumes from the checkpoint loaded back from the store.
async fn keyset_follower(
    store: PostgresStore,
    name: &'static str,
    expected: Arc<AtomicU64>,
    deadline: Instant,
) -> (Seen, u32) {
    let mut seen: Seen = Vec::new();
    let mut after = 0u64;
    let mut restarts = 0u32;
    loop {
        let target = expected.load(Ordering::SeqCst);
        if target != u64::MAX && seen.len() as u64 >= target {
            return (seen, restarts);
        }
        assert!(
            Instant::now() < deadline,
            "{name}: timed out with {} events seen",
            seen.len()
        );
        let page = match store.read_all(after, 1_000).await {
            Ok(page) => page,
            Err(_) => {
                restarts += 1;
                // Restart from the durable checkpoint (retrying until the database answers).
                let checkpoint = loop {
                    match store.load_checkpoint(name).await {
                        Ok(c) => break c.unwrap_or(0),
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                };
                seen.retain(|(p, _)| *p <= checkpoint);
                after = checkpoint;
                continue;
            }
        };
        if page.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        seen.extend(page.iter().map(|e| (e.position, e.event_id)));
        after = page.last().map_or(after, |e| e.position);
        if store.save_checkpoint(name, after).await.is_err() {
            // The checkpoint did not become durable: the next read error (or this page, now
            // beyond the checkpoint) is handled by the restart above on the next failure. To
            // keep the model simple, restart now.
            restarts += 1;
            let checkpoint = loop {
                match store.load_checkpoint(name).await {
                    Ok(c) => break c.unwrap_or(0),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            seen.retain(|(p, _)| *p <= checkpoint);
            after = checkpoint;
        }
    }
}

/// A follower on `PostgresStore::subscribe`: errors are yielded as items and the subscription
/// carries on from the last position it delivered.
async fn subscription_follower(
    store: PostgresStore,
    name: &'static str,
    expected: Arc<AtomicU64>,
    deadline: Instant,
) -> (Seen, u32) {
    let mut sub = store.subscribe_with(
        0,
        SubscriptionOptions {
            batch_size: 1_000,
            poll_interval: Duration::from_millis(100),
        },
    );
    let mut seen: Seen = Vec::new();
    let mut errors = 0u32;
    loop {
        let target = expected.load(Ordering::SeqCst);
        if target != u64::MAX && seen.len() as u64 >= target {
            return (seen, errors);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.min(Duration::from_millis(200)), sub.next()).await {
            Ok(Some(Ok(e))) => seen.push((e.position, e.event_id)),
            Ok(Some(Err(_))) => errors += 1,
            Ok(None) => panic!("{name}: subscription ended"),
            Err(_) => assert!(
                Instant::now() < deadline,
                "{name}: timed out with {} events seen",
                seen.len()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_writers_and_two_live_followers_see_everything_exactly_once() {
    let db = TestDb::create().await;
    let store = PostgresStore::connect_with(&db.url, StoreOptions::new().max_connections(24))
        .await
        .expect("connect and migrate");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);

    const WRITERS: usize = 64;
    const BATCHES: usize = 80;
    const BATCH: usize = 50;
    const HOT: usize = 8;
    // u64::MAX until the writers are done; then the number of events written.
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let sub = tokio::spawn(subscription_follower(
        store.clone(),
        "subscription",
        expected.clone(),
        deadline,
    ));
    let poll = tokio::spawn(keyset_follower(
        store.clone(),
        "keyset",
        expected.clone(),
        deadline,
    ));

    // Each writer appends batches at exact versions to its own stream, and single events with
    // `Any` to one of a few hot streams shared by everyone (racing on the same versions).
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let own = StreamId::new("Torture", format!("w{w}"));
            let hot = StreamId::new("Torture", format!("hot{}", w % HOT));
            let mut ids = Vec::new();
            let mut version = 0u64;
            let mut seq = 0u64;
            for b in 0..BATCHES {
                let batch: Vec<NewEvent> = (0..BATCH)
                    .map(|_| {
                        seq += 1;
                        event(w, seq)
                    })
                    .collect();
                ids.extend(batch.iter().map(|e| e.event_id));
                let recorded = store
                    .append(&own, ExpectedVersion::Exact(version), batch)
                    .await
                    .expect("append batch");
                version += recorded.len() as u64;
                if b % 4 == 0 {
                    seq += 1;
                    let single = event(w, seq);
                    ids.push(single.event_id);
                    store
                        .append(&hot, ExpectedVersion::Any, vec![single])
                        .await
                        .expect("append to a hot stream");
                }
            }
            ids
        }));
    }
    let mut written = HashSet::new();
    for writer in writers {
        written.extend(writer.await.expect("writer task"));
    }
    let total = written.len() as u64;
    assert_eq!(
        total,
        (WRITERS * BATCHES * BATCH + WRITERS * BATCHES.div_ceil(4)) as u64
    );
    let write_secs = started.elapsed().as_secs_f64();
    expected.store(total, Ordering::SeqCst);

    let (sub_seen, _) = sub.await.expect("subscription follower");
    let (poll_seen, _) = poll.await.expect("keyset follower");
    check_follower("subscription", &sub_seen, &written);
    check_follower("keyset", &poll_seen, &written);

    let mut streams: Vec<StreamId> = (0..WRITERS)
        .map(|w| StreamId::new("Torture", format!("w{w}")))
        .collect();
    streams.extend((0..HOT).map(|h| StreamId::new("Torture", format!("hot{h}"))));
    check_streams(&store, &streams, &written).await;
    eprintln!(
        "{total} events by {WRITERS} writers in {write_secs:.1} s; followers done at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store.pool().close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_connection_mid_run_loses_and_duplicates_nothing() {
    let db = TestDb::create().await;
    let store = PostgresStore::connect_with(&db.url, StoreOptions::new().max_connections(20))
        .await
        .expect("connect and migrate");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);

    const WRITERS: usize = 16;
    const BATCHES: usize = 60;
    const BATCH: usize = 20;
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let sub = tokio::spawn(subscription_follower(
        store.clone(),
        "subscription",
        expected.clone(),
        deadline,
    ));
    let poll = tokio::spawn(keyset_follower(
        store.clone(),
        "keyset",
        expected.clone(),
        deadline,
    ));

    let writing = Arc::new(AtomicBool::new(true));
    let writer_errors = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let errors = writer_errors.clone();
        writers.push(tokio::spawn(async move {
            let stream = StreamId::new("Fault", format!("w{w}"));
            let mut ids = Vec::new();
            let mut version = 0u64;
            let mut seq = 0u64;
            for _ in 0..BATCHES {
                let batch: Vec<NewEvent> = (0..BATCH)
                    .map(|_| {
                        seq += 1;
                        event(w, seq)
                    })
                    .collect();
                ids.extend(batch.iter().map(|e| e.event_id));
                // Retry the SAME events (same ids) at the same expected version until it
                // succeeds: if an attempt committed before its connection died, the retry
                // returns the stored events instead of appending them again.
                let mut attempts = 0;
                let recorded = loop {
                    attempts += 1;
                    match store
                        .append(&stream, ExpectedVersion::Exact(version), batch.clone())
                        .await
                    {
                        Ok(recorded) => break recorded,
                        Err(Error::Conflict { .. }) => {
                            panic!("writer {w}: conflict on its own stream after a retry")
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::SeqCst);
                            assert!(attempts < 400, "writer {w}: still failing: {e}");
                            tokio::time::sleep(Duration::from_millis(25)).await;
                        }
                    }
                };
                assert_eq!(recorded.len(), BATCH);
                for (r, e) in recorded.iter().zip(&batch) {
                    assert_eq!(r.event_id, e.event_id, "writer {w}: recorded other events");
                }
                version += BATCH as u64;
                // Spread the run out so that the kills land in the middle of it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ids
        }));
    }

    // Kill every connection of the test database several times while the writers run.
    let killer = {
        let writing = writing.clone();
        let name = db.name.clone();
        let url = db.url.clone();
        tokio::spawn(async move {
            let db = TestDb { name, url };
            let mut kills = Vec::new();
            tokio::time::sleep(Duration::from_millis(400)).await;
            while writing.load(Ordering::SeqCst) && kills.len() < 5 {
                kills.push(db.kill_connections().await);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            kills
        })
    };

    let mut written = HashSet::new();
    for writer in writers {
        written.extend(writer.await.expect("writer task"));
    }
    writing.store(false, Ordering::SeqCst);
    let kills = killer.await.expect("killer task");
    let total = written.len() as u64;
    assert_eq!(total, (WRITERS * BATCHES * BATCH) as u64);
    expected.store(total, Ordering::SeqCst);

    let (sub_seen, sub_errors) = sub.await.expect("subscription follower");
    let (poll_seen, poll_restarts) = poll.await.expect("keyset follower");
    assert!(
        kills.len() >= 3 && kills.iter().filter(|k| **k > 0).count() >= 3,
        "connections were killed only {kills:?} times: the writers finished too early"
    );
    assert!(
        writer_errors.load(Ordering::SeqCst) > 0,
        "no writer saw an error although connections were killed {kills:?}"
    );
    check_follower("subscription", &sub_seen, &written);
    check_follower("keyset", &poll_seen, &written);
    let streams: Vec<StreamId> = (0..WRITERS)
        .map(|w| StreamId::new("Fault", format!("w{w}")))
        .collect();
    check_streams(&store, &streams, &written).await;

    // The store holds each id exactly once (the unique key would refuse a second copy; this
    // checks that no retry appended the batch again under new versions either).
    let mut per_stream: BTreeMap<String, usize> = BTreeMap::new();
    let all = store.read_all(0, usize::MAX >> 1).await.expect("read all");
    let mut ids: HashMap<Uuid, u64> = HashMap::new();
    for e in &all {
        *per_stream.entry(e.stream.aggregate_id.clone()).or_default() += 1;
        assert!(ids.insert(e.event_id, e.position).is_none(), "duplicate id");
    }
    assert!(
        per_stream.values().all(|n| *n == BATCHES * BATCH),
        "{per_stream:?}"
    );
    eprintln!(
        "{total} events; kills {kills:?}; writer errors {}; subscription errors {sub_errors}; \
         keyset restarts {poll_restarts}; {:.1} s",
        writer_errors.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    );
    store.pool().close().await;
    db.drop_now().await;
}
