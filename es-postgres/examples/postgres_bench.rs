//! Benchmarks `PostgresStore` against hand-written sqlx SQL doing the same work on a table of
//! the same shape and size, on the same server, in the same run.
//!
//! ```text
//! cargo run --release -p es-postgres --example postgres_bench [-- SECONDS_PER_CELL [ROUNDS]]
//! ```
//!
//! Uses `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) to create a
//! fresh database `es_pg_bench`, with the store in schema `store` and the hand-written
//! baseline's table in schema `raw`, created `LIKE store.events INCLUDING ALL` and topped up
//! to the store's row count before every append cell. Every case is measured in `ROUNDS`
//! rounds (default 3) whose order of implementations rotates; the table shows the median and
//! the range. `BENCH_POOL` sets the pool size (default 10), `BENCH_NOTIFY_INTERVAL_MS` the
//! store's [`StoreOptions::notify_interval`].
//!
//! The store and the baseline share one pool, which checks a connection only after it sat
//! idle for a second (as [`PostgresStore::connect_with`]'s pools do). The baselines read
//! what the store reads: loads the four columns a replay needs, the snapshot load in one
//! statement, the scan every column a consumer decodes.

use std::future::Future;
use std::time::{Duration, Instant};

use es_core::{
    ExpectedVersion, GlobalLogExt, LogFilter, Metadata, NewEvent, Snapshot, SnapshotStore,
    StreamId, StreamStore,
};
use es_postgres::{PostgresStore, StoreOptions};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::value::{RawValue, to_raw_value};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use uuid::Uuid;

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Deserialize)]
struct Deposited {
    amount: i64,
}

fn payload(i: u64) -> BoxResult<Box<RawValue>> {
    Ok(to_raw_value(
        &serde_json::json!({ "amount": i % 100, "reference": format!("ref-{i}") }),
    )?)
}

fn new_event(i: u64) -> BoxResult<NewEvent> {
    Ok(NewEvent {
        event_id: Uuid::now_v7(),
        event_name: "Deposited".into(),
        schema_version: 1,
        payload: payload(i)?,
        metadata: Metadata::by_user("bench"),
    })
}

const RAW_INSERT: &str = "INSERT INTO raw.events (event_id, aggregate_type, aggregate_id, version, \
     event_name, schema_version, payload, metadata, recorded_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, clock_timestamp())";

const RAW_INSERT_BATCH: &str = "INSERT INTO raw.events (event_id, aggregate_type, aggregate_id, version, \
     event_name, schema_version, payload, metadata, recorded_at) \
     SELECT u.id, $2, $3, $4 + u.ord, u.name, u.sv, u.payload, u.meta, clock_timestamp() \
     FROM unnest($1::uuid[], $5::text[], $6::int[], $7::jsonb[], $8::jsonb[]) \
          WITH ORDINALITY AS u (id, name, sv, payload, meta, ord)";

/// What the store's load reads for a replay: version, name, schema version, payload.
const RAW_LOAD: &str = "SELECT version, event_name, schema_version, payload FROM raw.events \
     WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY version";

/// The snapshot and the events after it, in one statement, as the store's load.
const RAW_SNAPSHOT_LOAD: &str = "WITH snap AS ( \
         SELECT version, state FROM store.snapshots \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND state_version = 1) \
     SELECT 0 AS kind, s.version, NULL::text AS event_name, s.state AS payload FROM snap s \
     UNION ALL \
     SELECT 1, e.version, e.event_name, e.payload FROM raw.events e \
     WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 \
       AND e.version > coalesce((SELECT version FROM snap), 0) \
     ORDER BY kind, version";

/// Every column a consumer of the log decodes.
const RAW_SCAN: &str = "SELECT position, event_id, aggregate_type, aggregate_id, version, event_name, \
     schema_version, payload, metadata, recorded_at FROM raw.events \
     WHERE position > $1 ORDER BY position LIMIT 1000";

async fn raw_append(
    pool: &PgPool,
    stream: &str,
    version: i64,
    events: &[NewEvent],
) -> BoxResult<()> {
    if let [e] = events {
        sqlx::query(RAW_INSERT)
            .bind(e.event_id)
            .bind("Account")
            .bind(stream)
            .bind(version + 1)
            .bind(&e.event_name)
            .bind(i32::try_from(e.schema_version)?)
            .bind(Json(&*e.payload))
            .bind(Json(&e.metadata))
            .execute(pool)
            .await?;
    } else {
        let schema_versions = events
            .iter()
            .map(|e| i32::try_from(e.schema_version))
            .collect::<Result<Vec<_>, _>>()?;
        sqlx::query(RAW_INSERT_BATCH)
            .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
            .bind("Account")
            .bind(stream)
            .bind(version)
            .bind(
                events
                    .iter()
                    .map(|e| e.event_name.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(schema_versions)
            .bind(events.iter().map(|e| Json(&*e.payload)).collect::<Vec<_>>())
            .bind(events.iter().map(|e| Json(&e.metadata)).collect::<Vec<_>>())
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Runs `writers` tasks appending batches of `batch` events for `secs`; returns events/s.
async fn append_rate(
    store: Option<PostgresStore>,
    pool: PgPool,
    writers: usize,
    batch: u64,
    secs: f64,
    tag: &str,
) -> BoxResult<f64> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, pool) = (store.clone(), pool.clone());
        let tag = format!("{tag}-{w}-{}", Uuid::now_v7().simple());
        tasks.push(tokio::spawn(async move {
            let mut events_done = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                // A fresh stream every 50 appends keeps streams realistic in length.
                let stream = format!("{tag}-{}", n / 50);
                let version = (n % 50) * batch;
                let events = (0..batch)
                    .map(|i| new_event(n * batch + i))
                    .collect::<BoxResult<Vec<_>>>()?;
                match &store {
                    Some(store) => {
                        store
                            .append(
                                &StreamId::new("Account", stream),
                                ExpectedVersion::Exact(version),
                                events,
                            )
                            .await?;
                    }
                    None => raw_append(&pool, &stream, i64::try_from(version)?, &events).await?,
                }
                events_done += batch;
                n += 1;
            }
            Ok::<u64, Box<dyn std::error::Error + Send + Sync>>(events_done)
        }));
    }
    let began = Instant::now();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / began.elapsed().as_secs_f64().max(secs))
}

fn fold(payloads: impl Iterator<Item = Box<RawValue>>) -> BoxResult<i64> {
    let mut balance = 0;
    for p in payloads {
        balance += serde_json::from_str::<Deposited>(p.get())?.amount;
    }
    Ok(balance)
}

/// Median of `runs` timings of `f`, in milliseconds (after one warm-up call).
async fn median_ms<F, Fut>(runs: usize, mut f: F) -> BoxResult<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = BoxResult<()>>,
{
    f().await?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let began = Instant::now();
        f().await?;
        times.push(began.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

/// Tops up `raw.events` or `store.events` to the other's row count with filler rows.
async fn equalize(pool: &PgPool) -> BoxResult<()> {
    let count = |table: &'static str| async move {
        sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(pool)
            .await
    };
    let (ours, raw) = (count("store.events").await?, count("raw.events").await?);
    let (table, missing) = if ours > raw {
        ("raw.events", ours - raw)
    } else {
        ("store.events", raw - ours)
    };
    if missing > 0 {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (event_id, aggregate_type, aggregate_id, version, event_name, \
               schema_version, payload, metadata, recorded_at) \
             SELECT gen_random_uuid(), 'Filler', 'filler-' || gen_random_uuid(), 1, 'Deposited', 1, \
                    '{{\"amount\":1}}', '{{\"user_id\":\"bench\"}}', now() \
             FROM generate_series(1, {missing})"
        )))
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// One case: samples of ours and of the baseline (and of a variant of ours), all rates (or
/// all times, `higher_is_better` false).
struct Case {
    name: String,
    unit: &'static str,
    higher_is_better: bool,
    ours: Vec<f64>,
    variant: Option<(&'static str, Vec<f64>)>,
    raw: Vec<f64>,
}

fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn show(samples: &[f64], unit: &str) -> String {
    let fmt = |v: f64| {
        if unit == "ms" {
            format!("{v:.2}")
        } else {
            format!("{v:.0}")
        }
    };
    let lo = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{} {unit} ({}-{})", fmt(median(samples)), fmt(lo), fmt(hi))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> BoxResult<()> {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut admin = PgConnection::connect(&url).await?;
    sqlx::query("DROP DATABASE IF EXISTS es_pg_bench WITH (FORCE)")
        .execute(&mut admin)
        .await?;
    sqlx::query("CREATE DATABASE es_pg_bench")
        .execute(&mut admin)
        .await?;
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
    let bench_url = format!("{base}/es_pg_bench");
    let pool = PgPoolOptions::new()
        .max_connections(
            std::env::var("BENCH_POOL")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(10),
        )
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= Duration::from_secs(1) {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect(&bench_url)
        .await?;
    let mut options = StoreOptions::new().schema("store");
    if let Some(ms) = std::env::var("BENCH_NOTIFY_INTERVAL_MS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        options = options.notify_interval(Duration::from_millis(ms));
    }
    let store = PostgresStore::from_pool_with(pool.clone(), options)?;
    store.migrate().await?;
    let quiet = PostgresStore::from_pool_with(
        pool.clone(),
        StoreOptions::new().schema("store").notify(false),
    )?;
    sqlx::raw_sql("CREATE SCHEMA raw; CREATE TABLE raw.events (LIKE store.events INCLUDING ALL);")
        .execute(&pool)
        .await?;
    let load_avg = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let load_before = load_avg();

    let mut cases = Vec::new();
    for (batch, writers) in [(1u64, 1usize), (1, 8), (100, 1), (100, 4)] {
        let mut case = Case {
            name: if batch == 1 {
                format!("append 1 event, {writers} writer(s)")
            } else {
                format!("append {batch}-event batch, {writers} writer(s)")
            },
            unit: "events/s",
            higher_is_better: true,
            ours: Vec::new(),
            variant: (batch == 1).then(|| ("NOTIFY off", Vec::new())),
            raw: Vec::new(),
        };
        for round in 0..rounds {
            let mut order: Vec<u8> = if batch == 1 {
                vec![0, 1, 2]
            } else {
                vec![0, 1]
            };
            let len = order.len();
            order.rotate_left(round % len);
            for (position, which) in order.into_iter().enumerate() {
                equalize(&pool).await?;
                let tag = format!("r{round}b{batch}w{writers}i{which}");
                let subject = match which {
                    0 => Some(store.clone()),
                    1 => None,
                    _ => Some(quiet.clone()),
                };
                let rate = append_rate(subject, pool.clone(), writers, batch, secs, &tag).await?;
                // Each sample with its place in the round, to see any order effect.
                eprintln!(
                    "{batch} x {writers}: round {round}, place {position}: {} {rate:.0}",
                    ["ours", "hand-written", "ours, NOTIFY off"][usize::from(which)]
                );
                match which {
                    0 => case.ours.push(rate),
                    1 => case.raw.push(rate),
                    _ => {
                        if let Some((_, v)) = &mut case.variant {
                            v.push(rate);
                        }
                    }
                }
            }
        }
        eprintln!("{}: done", case.name);
        cases.push(case);
    }

    // A 10,000-event stream in each table.
    let long = "long-stream";
    for chunk in 0..100u64 {
        let events = (0..100)
            .map(|i| new_event(chunk * 100 + i))
            .collect::<BoxResult<Vec<_>>>()?;
        raw_append(&pool, long, i64::try_from(chunk * 100)?, &events).await?;
        store
            .append(
                &StreamId::new("Account", long),
                ExpectedVersion::Exact(chunk * 100),
                events,
            )
            .await?;
    }
    equalize(&pool).await?;
    for table in ["raw.events", "store.events"] {
        sqlx::query(AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
            .execute(&pool)
            .await?;
    }
    let stream = StreamId::new("Account", long);
    store
        .save_snapshot(Snapshot {
            stream: stream.clone(),
            version: 10_000,
            state_version: 1,
            state: to_raw_value(&serde_json::json!({ "balance": 495_000, "open": true }))?,
            taken_at: chrono::Utc::now(),
        })
        .await?;
    let mut load = Case {
        name: "load 10,000-event stream, no snapshot".into(),
        unit: "ms",
        higher_is_better: false,
        ours: Vec::new(),
        variant: None,
        raw: Vec::new(),
    };
    let mut snap = Case {
        name: "load 10,000-event stream from snapshot".into(),
        unit: "ms",
        higher_is_better: false,
        ours: Vec::new(),
        variant: None,
        raw: Vec::new(),
    };
    let mut scan = Case {
        name: String::new(),
        unit: "events/s",
        higher_is_better: true,
        ours: Vec::new(),
        variant: None,
        raw: Vec::new(),
    };
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM store.events")
        .fetch_one(&pool)
        .await?;
    scan.name = format!(
        "scan of the global log ({}k events, pages of 1,000)",
        total / 1000
    );
    for round in 0..rounds {
        let ours_first = round % 2 == 0;
        for ours in [ours_first, !ours_first] {
            if ours {
                load.ours.push(
                    median_ms(15, || {
                        let (store, stream) = (store.clone(), stream.clone());
                        async move {
                            let (_, events) = store.load_stream(&stream, None).await?;
                            assert_eq!(events.len(), 10_000);
                            fold(events.into_iter().map(|e| e.payload))?;
                            Ok(())
                        }
                    })
                    .await?,
                );
                snap.ours.push(
                    median_ms(201, || {
                        let (store, stream) = (store.clone(), stream.clone());
                        async move {
                            let (snapshot, events) = store.load_stream(&stream, Some(1)).await?;
                            assert!(snapshot.is_some() && events.is_empty());
                            Ok(())
                        }
                    })
                    .await?,
                );
                let began = Instant::now();
                let mut n = 0i64;
                let mut all = store.stream_all(0, 1_000, LogFilter::all());
                while let Some(e) = all.next().await {
                    e?;
                    n += 1;
                }
                assert_eq!(n, total);
                scan.ours.push(n as f64 / began.elapsed().as_secs_f64());
            } else {
                load.raw.push(
                    median_ms(15, || {
                        let pool = pool.clone();
                        async move {
                            let rows = sqlx::query(RAW_LOAD)
                                .bind("Account")
                                .bind(long)
                                .fetch_all(&pool)
                                .await?;
                            let mut payloads = Vec::with_capacity(rows.len());
                            for row in &rows {
                                let _: i64 = row.try_get(0)?;
                                let _: String = row.try_get(1)?;
                                let _: i32 = row.try_get(2)?;
                                payloads.push(row.try_get::<Box<RawValue>, _>(3)?);
                            }
                            assert_eq!(payloads.len(), 10_000);
                            fold(payloads.into_iter())?;
                            Ok(())
                        }
                    })
                    .await?,
                );
                snap.raw.push(
                    median_ms(201, || {
                        let pool = pool.clone();
                        async move {
                            let rows = sqlx::query(RAW_SNAPSHOT_LOAD)
                                .bind("Account")
                                .bind(long)
                                .fetch_all(&pool)
                                .await?;
                            let first = rows.first().ok_or("no snapshot")?;
                            let _: i64 = first.try_get(1)?;
                            let _: Box<RawValue> = first.try_get(3)?;
                            assert_eq!(rows.len(), 1);
                            Ok(())
                        }
                    })
                    .await?,
                );
                let began = Instant::now();
                let (mut after, mut m) = (0i64, 0i64);
                loop {
                    let rows = sqlx::query(RAW_SCAN).bind(after).fetch_all(&pool).await?;
                    let Some(last) = rows.last() else { break };
                    after = last.try_get(0)?;
                    for row in &rows {
                        let _: Uuid = row.try_get(1)?;
                        let _: String = row.try_get(2)?;
                        let _: String = row.try_get(3)?;
                        let _: i64 = row.try_get(4)?;
                        let _: String = row.try_get(5)?;
                        let _: i32 = row.try_get(6)?;
                        let _: Box<RawValue> = row.try_get(7)?;
                        let _: Json<Metadata> = row.try_get(8)?;
                        let _: chrono::DateTime<chrono::Utc> = row.try_get(9)?;
                        m += 1;
                    }
                }
                assert_eq!(m, total);
                scan.raw.push(m as f64 / began.elapsed().as_secs_f64());
            }
        }
    }
    cases.extend([load, snap, scan]);

    println!(
        "{rounds} rounds, {secs} s per append cell, load average before: {load_before}; after: {}\n",
        load_avg()
    );
    println!("| case | es-postgres | hand-written sqlx | ratio (ours vs hand-written) |");
    println!("|---|---:|---:|---:|");
    for case in &cases {
        let note = if case.higher_is_better {
            "of the rate"
        } else {
            "of the time"
        };
        println!(
            "| {} | {} | {} | {:.2}x {note} |",
            case.name,
            show(&case.ours, case.unit),
            show(&case.raw, case.unit),
            median(&case.ours) / median(&case.raw)
        );
        if let Some((what, samples)) = &case.variant {
            println!(
                "| {}, {what} | {} | | {:.2}x {note} |",
                case.name,
                show(samples, case.unit),
                median(samples) / median(&case.raw)
            );
        }
    }
    drop(pool);
    sqlx::query("DROP DATABASE IF EXISTS es_pg_bench WITH (FORCE)")
        .execute(&mut admin)
        .await?;
    Ok(())
}
