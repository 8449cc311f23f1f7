//! Benchmarks `PostgresStore` against hand-written sqlx SQL on the same table shape, on the
//! same server, in the same run.
//!
//! ```text
//! cargo run --release -p es-postgres --example postgres_bench [-- SECONDS_PER_CASE]
//! ```
//!
//! `BENCH_POOL` sets the pool size (default 10), `BENCH_NOTIFY_INTERVAL_MS` the store's
//! [`StoreOptions::notify_interval`]. Uses `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) to create a
//! fresh database `es_pg_bench`, with the store in schema `store` and the hand-written
//! baseline's identical `events` table in schema `raw`.

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

fn payload(i: u64) -> Box<RawValue> {
    to_raw_value(&serde_json::json!({ "amount": i % 100, "reference": format!("ref-{i}") }))
        .unwrap_or_else(|_| unreachable!("a json! value encodes"))
}

fn new_event(i: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_name: "Deposited".into(),
        schema_version: 1,
        payload: payload(i),
        metadata: Metadata::by_user("bench"),
    }
}

struct Row2 {
    case: String,
    ours: f64,
    raw: f64,
    unit: &'static str,
    higher_is_better: bool,
}

const RAW_TABLE: &str = "
CREATE SCHEMA raw;
CREATE TABLE raw.events (
    position        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    version         bigint      NOT NULL,
    event_name      text        NOT NULL,
    schema_version  integer     NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (aggregate_type, aggregate_id, version)
);";

const RAW_INSERT: &str = "INSERT INTO raw.events (event_id, aggregate_type, aggregate_id, version, \
     event_name, schema_version, payload, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

const RAW_INSERT_BATCH: &str = "INSERT INTO raw.events (event_id, aggregate_type, aggregate_id, version, \
     event_name, schema_version, payload, metadata) \
     SELECT u.id, $2, $3, $4 + u.ord, u.name, u.sv, u.payload, u.meta \
     FROM unnest($1::uuid[], $5::text[], $6::int[], $7::jsonb[], $8::jsonb[]) \
          WITH ORDINALITY AS u (id, name, sv, payload, meta, ord)";

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
            .bind(e.schema_version as i32)
            .bind(Json(&*e.payload))
            .bind(Json(&e.metadata))
            .execute(pool)
            .await?;
    } else {
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
            .bind(
                events
                    .iter()
                    .map(|e| e.schema_version as i32)
                    .collect::<Vec<_>>(),
            )
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
                let events: Vec<NewEvent> = (0..batch).map(|i| new_event(n * batch + i)).collect();
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
                    None => raw_append(&pool, &stream, version as i64, &events).await?,
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

/// Median of `runs` timings of `f`, in milliseconds.
async fn median_ms<F, Fut>(runs: usize, mut f: F) -> BoxResult<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = BoxResult<()>>,
{
    f().await?; // warm-up
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let began = Instant::now();
        f().await?;
        times.push(began.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> BoxResult<()> {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
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
    let custom = std::env::var("BENCH_CUSTOM_PLANS").is_ok();
    let pool = PgPoolOptions::new()
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if custom {
                    sqlx::query("SET plan_cache_mode = force_custom_plan")
                        .execute(conn)
                        .await?;
                }
                Ok(())
            })
        })
        .max_connections(
            std::env::var("BENCH_POOL")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(10),
        )
        .connect(&bench_url)
        .await?;
    sqlx::raw_sql(RAW_TABLE).execute(&pool).await?;
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

    let mut rows = Vec::new();
    let mut rate = |case: &str, ours: f64, raw: f64| {
        rows.push(Row2 {
            case: case.into(),
            ours,
            raw,
            unit: "events/s",
            higher_is_better: true,
        });
    };
    for (writers, label) in [(1, "1 writer"), (8, "8 writers")] {
        let raw = append_rate(None, pool.clone(), writers, 1, secs, "raw1").await?;
        let ours = append_rate(Some(store.clone()), pool.clone(), writers, 1, secs, "s1").await?;
        let ours_quiet =
            append_rate(Some(quiet.clone()), pool.clone(), writers, 1, secs, "q1").await?;
        rate(&format!("append 1 event, {label} (NOTIFY on)"), ours, raw);
        rate(
            &format!("append 1 event, {label} (NOTIFY off)"),
            ours_quiet,
            raw,
        );
    }
    for (writers, label) in [(1, "1 writer"), (4, "4 writers")] {
        let raw = append_rate(None, pool.clone(), writers, 100, secs, "raw100").await?;
        let ours = append_rate(
            Some(store.clone()),
            pool.clone(),
            writers,
            100,
            secs,
            "s100",
        )
        .await?;
        rate(&format!("append 100-event batch, {label}"), ours, raw);
    }

    // A 10,000-event stream in each table.
    let long = "long-stream";
    for chunk in 0..100u64 {
        let events: Vec<NewEvent> = (0..100).map(|i| new_event(chunk * 100 + i)).collect();
        raw_append(&pool, long, (chunk * 100) as i64, &events).await?;
        store
            .append(
                &StreamId::new("Account", long),
                ExpectedVersion::Exact(chunk * 100),
                events,
            )
            .await?;
    }
    for table in ["raw.events", "store.events"] {
        sqlx::query(AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
            .execute(&pool)
            .await?;
    }
    let stream = StreamId::new("Account", long);
    let raw_load = median_ms(15, || {
        let pool = pool.clone();
        async move {
            let rows = sqlx::query(
                "SELECT position, event_id, version, event_name, schema_version, payload, metadata, recorded_at \
                 FROM raw.events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY version",
            )
            .bind("Account")
            .bind(long)
            .fetch_all(&pool)
            .await?;
            let mut payloads = Vec::with_capacity(rows.len());
            for row in &rows {
                let _: i64 = row.try_get(0)?;
                let _: Uuid = row.try_get(1)?;
                let _: i64 = row.try_get(2)?;
                let _: String = row.try_get(3)?;
                let _: i32 = row.try_get(4)?;
                payloads.push(row.try_get::<Box<RawValue>, _>(5)?);
                let _: Json<Metadata> = row.try_get(6)?;
                let _: chrono::DateTime<chrono::Utc> = row.try_get(7)?;
            }
            assert_eq!(payloads.len(), 10_000);
            fold(payloads.into_iter())?;
            Ok(())
        }
    })
    .await?;
    let ours_load = median_ms(15, || {
        let (store, stream) = (store.clone(), stream.clone());
        async move {
            let (_, events) = store.load_stream(&stream, None).await?;
            assert_eq!(events.len(), 10_000);
            fold(events.into_iter().map(|e| e.payload))?;
            Ok(())
        }
    })
    .await?;
    rows.push(Row2 {
        case: "load 10,000-event stream, no snapshot".into(),
        ours: ours_load,
        raw: raw_load,
        unit: "ms",
        higher_is_better: false,
    });

    store
        .save_snapshot(Snapshot {
            stream: stream.clone(),
            version: 10_000,
            state_version: 1,
            state: to_raw_value(&serde_json::json!({ "balance": 495_000, "open": true }))?,
            taken_at: chrono::Utc::now(),
        })
        .await?;
    let ours_snap = median_ms(201, || {
        let (store, stream) = (store.clone(), stream.clone());
        async move {
            let (snapshot, events) = store.load_stream(&stream, Some(1)).await?;
            assert!(snapshot.is_some() && events.is_empty());
            Ok(())
        }
    })
    .await?;
    let raw_snap = median_ms(201, || {
        let pool = pool.clone();
        async move {
            let row = sqlx::query(
                "SELECT version, state FROM store.snapshots WHERE aggregate_type = $1 AND aggregate_id = $2",
            )
            .bind("Account")
            .bind(long)
            .fetch_one(&pool)
            .await?;
            let version: i64 = row.try_get(0)?;
            let _ = sqlx::query("SELECT count(*) FROM raw.events WHERE aggregate_type = $1 AND aggregate_id = $2 AND version > $3")
                .bind("Account").bind(long).bind(version).fetch_one(&pool).await?;
            Ok(())
        }
    })
    .await?;
    rows.push(Row2 {
        case: "load 10,000-event stream from snapshot".into(),
        ours: ours_snap,
        raw: raw_snap,
        unit: "ms",
        higher_is_better: false,
    });

    // Full scan of the global log, pages of 1,000.
    let total_ours: i64 = sqlx::query_scalar("SELECT count(*) FROM store.events")
        .fetch_one(&pool)
        .await?;
    let total_raw: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.events")
        .fetch_one(&pool)
        .await?;
    let began = Instant::now();
    let mut n = 0u64;
    let mut scan = store.stream_all(0, 1_000, LogFilter::all());
    while let Some(e) = scan.next().await {
        e?;
        n += 1;
    }
    let ours_scan = n as f64 / began.elapsed().as_secs_f64();
    assert_eq!(n as i64, total_ours);
    let began = Instant::now();
    let (mut after, mut m) = (0i64, 0u64);
    loop {
        let rows = sqlx::query(
            "SELECT position, event_id, aggregate_type, aggregate_id, version, event_name, schema_version, \
             payload, metadata, recorded_at FROM raw.events WHERE position > $1 ORDER BY position LIMIT 1000",
        )
        .bind(after)
        .fetch_all(&pool)
        .await?;
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
    let raw_scan = m as f64 / began.elapsed().as_secs_f64();
    assert_eq!(m as i64, total_raw);
    rows.push(Row2 {
        case: format!(
            "scan global log ({}k / {}k events, pages of 1,000)",
            total_ours / 1000,
            total_raw / 1000
        ),
        ours: ours_scan,
        raw: raw_scan,
        unit: "events/s",
        higher_is_better: true,
    });

    println!("| case | es-postgres | hand-written sqlx | ratio (ours vs hand-written) |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        let ratio = r.ours / r.raw;
        let fmt = |v: f64| {
            if r.unit == "ms" {
                format!("{v:.2} ms")
            } else {
                format!("{v:.0} {}", r.unit)
            }
        };
        let note = if r.higher_is_better {
            "of the rate"
        } else {
            "of the time"
        };
        println!(
            "| {} | {} | {} | {:.2}x {note} |",
            r.case,
            fmt(r.ours),
            fmt(r.raw),
            ratio
        );
    }
    drop(pool);
    sqlx::query("DROP DATABASE IF EXISTS es_pg_bench WITH (FORCE)")
        .execute(&mut admin)
        .await?;
    Ok(())
}
