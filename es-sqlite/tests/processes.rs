//! Several processes on one file, and a writer killed with SIGKILL mid-batch.
//!
//! The child processes are this test binary itself, started with `ES_SQLITE_CHILD` naming
//! their role: the `child` test runs that role and does nothing otherwise.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use es_core::{
    Error, ExpectedVersion, GlobalLog, GlobalLogExt, LogFilter, Metadata, NewEvent, RecordedEvent,
    StreamId, StreamQuery, StreamStore,
};
use es_sqlite::SqliteStore;
use futures::StreamExt;
use serde_json::json;

const ROLE: &str = "ES_SQLITE_CHILD";
const DB: &str = "ES_SQLITE_DB";
const ID: &str = "ES_SQLITE_ID";

/// Writer tasks per process, appends per writer, and every how many appends a writer also
/// appends to the stream all processes contend for.
const WRITERS: u64 = 4;
const APPENDS: u64 = 100;
const SHARED_EVERY: u64 = 5;

/// Events per kill-test batch, and the payload bytes of each.
const BATCH: u64 = 2_000;
const PAYLOAD_BYTES: usize = 1_000;

/// The longest a child may run.
const CHILD_PATIENCE: Duration = Duration::from_secs(180);

/// Events one writer-follower process appends.
fn events_per_process() -> u64 {
    let own: u64 = (0..APPENDS).map(|i| 1 + i % 3).sum();
    WRITERS * (own + APPENDS / SHARED_EVERY)
}

fn shared() -> StreamId {
    StreamId::new("Shared", "contested")
}

fn new_event(name: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_name: name.into(),
        schema_version: 1,
        payload: serde_json::value::to_raw_value(&payload).expect("json"),
        metadata: Metadata::by_user("process-test"),
    }
}

/// The role of a child process; nothing when this binary runs as the test suite.
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let path = PathBuf::from(std::env::var(DB).expect("ES_SQLITE_DB"));
    match role.as_str() {
        "writer-follower" => runtime.block_on(writer_follower(&path)),
        "batch-writer" => runtime.block_on(batch_writer(&path)),
        other => panic!("unknown role {other}"),
    }
}

/// Appends from several tasks (to its own streams and to one stream every process contends
/// for at exact versions) while a follower subscribed from 0 collects every event of every
/// process; writes what the follower saw to `<db>.seen-<id>`.
async fn writer_follower(path: &Path) {
    let me = std::env::var(ID).expect("ES_SQLITE_ID");
    let total: usize = std::env::var("ES_SQLITE_TOTAL")
        .expect("ES_SQLITE_TOTAL")
        .parse()
        .expect("a number");
    let store = SqliteStore::open(path).await.expect("open");
    let follower = {
        let mut events = store.subscribe(0, LogFilter::all());
        tokio::spawn(async move {
            let mut seen = Vec::with_capacity(total);
            while seen.len() < total {
                let event = tokio::time::timeout(CHILD_PATIENCE, events.next())
                    .await
                    .unwrap_or_else(|_| panic!("follower saw {} of {total}", seen.len()))
                    .expect("the subscription never ends")
                    .expect("follower read");
                seen.push((event.position, event.event_id));
            }
            seen
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let stream = StreamId::new("Own", format!("{me}-w{w}"));
        let tag = stream.aggregate_id.clone();
        writers.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for i in 0..APPENDS {
                let batch = (0..1 + i % 3)
                    .map(|k| new_event("Own", json!({ "i": i, "k": k })))
                    .collect();
                let started = Instant::now();
                store
                    .append(&stream, ExpectedVersion::Any, batch)
                    .await
                    .expect("append to an own stream");
                slowest = slowest.max(started.elapsed());
                if (i + 1) % SHARED_EVERY == 0 {
                    contested_append(&store, &format!("{tag}-{i}")).await;
                }
            }
            slowest
        }));
    }
    let mut slowest = Duration::ZERO;
    for writer in writers {
        slowest = slowest.max(writer.await.expect("writer"));
    }
    eprintln!("process {me}: slowest append {slowest:?}");
    let seen = follower.await.expect("follower");
    let lines: String = seen
        .iter()
        .map(|(position, id)| format!("{position} {id}\n"))
        .collect();
    std::fs::write(path.with_extension(format!("seen-{me}")), lines).expect("write seen");
}

/// One event on the shared stream at the exact next version, retrying conflicts.
async fn contested_append(store: &SqliteStore, tag: &str) {
    loop {
        let current = store.stream_version(&shared()).await.expect("version");
        match store
            .append(
                &shared(),
                ExpectedVersion::Exact(current),
                vec![new_event("Contested", json!({ "tag": tag }))],
            )
            .await
        {
            Ok(recorded) => {
                assert_eq!(recorded[0].version, current + 1);
                return;
            }
            Err(Error::Conflict { actual, .. }) => assert!(actual > current),
            Err(other) => panic!("contested append: {other}"),
        }
    }
}

/// Appends batches of [`BATCH`] large events, one stream per batch, numbering on from what
/// the file holds; says `begin <n>` before and `committed <n>` after each.
async fn batch_writer(path: &Path) {
    let store = SqliteStore::open(path).await.expect("open after a kill");
    let head = store.head_position().await.expect("head");
    let mut batch = match store
        .read_log(head.saturating_sub(1), 1, &LogFilter::all())
        .await
    {
        Ok(page) => page
            .events
            .last()
            .and_then(|e| e.stream.aggregate_id.parse::<u64>().ok())
            .unwrap_or(0),
        Err(error) => panic!("read the last batch: {error}"),
    };
    let filler = "x".repeat(PAYLOAD_BYTES);
    loop {
        batch += 1;
        let events = (0..BATCH)
            .map(|index| {
                new_event(
                    "Chunk",
                    json!({ "batch": batch, "index": index, "filler": filler }),
                )
            })
            .collect();
        println!("ES:begin {batch}");
        let started = std::time::Instant::now();
        store
            .append(
                &StreamId::new("Batch", batch.to_string()),
                ExpectedVersion::NoStream,
                events,
            )
            .await
            .expect("append a batch");
        println!("ES:committed {batch} {}", started.elapsed().as_micros());
    }
}

/// A child process of this binary in `role`, its stdout lines sent to the returned channel.
fn spawn_child(role: &str, db: &Path, env: &[(&str, String)]) -> (Child, mpsc::Receiver<String>) {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args(["child", "--exact", "--nocapture", "--test-threads", "1"])
        .env(ROLE, role)
        .env(DB, db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn a child process");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        // Reads to the end even when nobody listens, so the child never writes to a
        // closed pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = lines.send(line);
        }
    });
    (child, received)
}

/// Waits for `child` to exit successfully within [`CHILD_PATIENCE`] (killing it if not).
fn wait_success(mut child: Child, what: &str) {
    let started = Instant::now();
    loop {
        match child.try_wait().expect("wait") {
            Some(status) => {
                assert!(status.success(), "{what} failed: {status}");
                return;
            }
            None if started.elapsed() > CHILD_PATIENCE => {
                let _ = child.kill();
                panic!("{what} did not finish in {CHILD_PATIENCE:?}");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The whole log, read the way a follower reads it.
async fn whole_log(store: &SqliteStore) -> Vec<RecordedEvent> {
    store
        .stream_all(0, 1_000, LogFilter::all())
        .map(|e| e.expect("read the log"))
        .collect()
        .await
}

#[test]
fn two_processes_write_concurrently_and_each_follower_sees_every_event() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let store = runtime
        .block_on(SqliteStore::temporary())
        .expect("temporary store");
    let db = store.path().to_owned();
    let total = 2 * events_per_process();
    let children: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|id| {
            let env = [(ID, id.to_owned()), ("ES_SQLITE_TOTAL", total.to_string())];
            (id, spawn_child("writer-follower", &db, &env).0)
        })
        .collect();
    for (id, child) in children {
        wait_success(child, &format!("process {id}"));
    }
    runtime.block_on(async {
        let log = whole_log(&store).await;
        assert_eq!(
            log.len() as u64,
            total,
            "every event of both processes is stored"
        );
        let positions: Vec<u64> = log.iter().map(|e| e.position).collect();
        assert_eq!(
            positions,
            (1..=total).collect::<Vec<_>>(),
            "positions gapless, in order"
        );
        let expected: Vec<String> = log
            .iter()
            .map(|e| format!("{} {}", e.position, e.event_id))
            .collect();
        for id in ["a", "b"] {
            let seen = std::fs::read_to_string(db.with_extension(format!("seen-{id}")))
                .expect("the follower's record");
            let seen: Vec<String> = seen.lines().map(str::to_owned).collect();
            assert_eq!(
                seen, expected,
                "process {id}'s follower saw every event once, in order"
            );
        }
        let contested = store
            .read_stream(&shared(), &StreamQuery::all())
            .await
            .expect("shared stream");
        assert_eq!(
            contested.iter().map(|e| e.version).collect::<Vec<_>>(),
            (1..=2 * WRITERS * (APPENDS / SHARED_EVERY)).collect::<Vec<_>>(),
            "one winner per version of the contested stream, across processes"
        );
        for writer in 0..WRITERS {
            for process in ["a", "b"] {
                let own = StreamId::new("Own", format!("{process}-w{writer}"));
                let versions: Vec<u64> = store
                    .read_stream(&own, &StreamQuery::all())
                    .await
                    .expect("own stream")
                    .iter()
                    .map(|e| e.version)
                    .collect();
                assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
            }
        }
    });
}

/// Checks the file after a kill: it opens, and holds whole batches, gapless.
async fn check_after_kill(db: &Path, acknowledged: u64) -> (u64, u64) {
    let store = SqliteStore::open(db)
        .await
        .expect("the file opens after SIGKILL");
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(store.reader())
        .await
        .expect("integrity check");
    assert_eq!(integrity, "ok");
    let log = whole_log(&store).await;
    let positions: Vec<u64> = log.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "positions increase without gaps"
    );
    let mut batches: BTreeMap<u64, Vec<&RecordedEvent>> = BTreeMap::new();
    for event in &log {
        let batch = event.stream.aggregate_id.parse().expect("a batch number");
        batches.entry(batch).or_default().push(event);
    }
    for (batch, events) in &batches {
        assert_eq!(events.len() as u64, BATCH, "batch {batch} is whole");
        for (index, event) in events.iter().enumerate() {
            let payload: serde_json::Value =
                serde_json::from_str(event.payload.get()).expect("payload");
            assert_eq!(
                event.version,
                index as u64 + 1,
                "batch {batch}: versions gapless"
            );
            assert_eq!(
                payload["index"],
                json!(index),
                "batch {batch}: events in order"
            );
            assert_eq!(payload["batch"], json!(batch));
        }
        assert_eq!(
            events[events.len() - 1].position - events[0].position + 1,
            BATCH,
            "batch {batch} is contiguous in the log"
        );
    }
    let stored: HashSet<u64> = batches.keys().copied().collect();
    assert_eq!(
        stored,
        (1..=stored.len() as u64).collect::<HashSet<_>>(),
        "batches are numbered without holes"
    );
    assert!(
        stored.len() as u64 >= acknowledged,
        "every acknowledged batch survived: {} stored, {acknowledged} acknowledged",
        stored.len()
    );
    (stored.len() as u64, log.len() as u64)
}

/// `<batch> <micros>` of a `committed` line.
fn committed(rest: &str) -> (u64, u64) {
    let mut parts = rest.split(' ').map(|p| p.parse::<u64>().expect("a number"));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn a_writer_killed_mid_batch_leaves_whole_batches_and_a_file_that_opens() {
    const KILLS: usize = 8;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let store = runtime
        .block_on(SqliteStore::temporary())
        .expect("temporary store");
    let db = store.path().to_owned();
    let mut acknowledged = 0;
    let mut in_flight_kills = 0;
    // When to kill, as a fraction of the last batch's duration: early, midway, and around
    // the commit, where SQLite writes the last WAL frames.
    let fractions = [0.05, 0.5, 0.8, 0.9, 0.95, 0.98, 1.0, 1.02];
    let mut last_duration = Duration::from_millis(20);
    for (round, fraction) in fractions.into_iter().enumerate().take(KILLS) {
        let (mut child, lines) = spawn_child("batch-writer", &db, &[]);
        // Let it commit one batch, then kill it a little after it begins another.
        let mut committed_this_round = false;
        let begun;
        let deadline = Instant::now() + CHILD_PATIENCE;
        loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    let _ = child.kill();
                    panic!("round {round}: the writer stopped talking")
                });
            if let Some(rest) = line.strip_prefix("ES:committed ") {
                let (n, micros) = committed(rest);
                acknowledged = acknowledged.max(n);
                last_duration = Duration::from_micros(micros);
                committed_this_round = true;
            } else if let Some(n) = line.strip_prefix("ES:begin ")
                && committed_this_round
            {
                begun = n.parse::<u64>().expect("batch number");
                break;
            }
        }
        std::thread::sleep(last_duration.mul_f64(fraction));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        // Whatever it said before dying counts as acknowledged; if the last thing it said
        // was `begin`, the kill landed while that batch was being appended.
        let mut last = format!("ES:begin {begun}");
        while let Ok(line) = lines.try_recv() {
            if let Some(rest) = line.strip_prefix("ES:committed ") {
                acknowledged = acknowledged.max(committed(rest).0);
            }
            if line.starts_with("ES:") {
                last = line;
            }
        }
        let was_in_flight = last.starts_with("ES:begin ");
        let (batches, events) = runtime.block_on(check_after_kill(&db, acknowledged));
        if was_in_flight {
            in_flight_kills += 1;
        }
        eprintln!(
            "round {round}: killed {:.0?} into batch {begun} (a batch takes {last_duration:.0?}); \
             in flight: {was_in_flight}; {batches} batches, {events} events stored",
            last_duration.mul_f64(fraction)
        );
    }
    assert!(
        in_flight_kills > 0,
        "at least one kill landed while a batch was being appended"
    );
}
