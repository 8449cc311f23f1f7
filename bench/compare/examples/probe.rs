//! Diagnostic probe (not part of the benchmark's table): single-event appends through stores
//! configured differently, against the hand-written INSERT, alternating in one run. Used to
//! choose group-commit lanes and to study the notifier.
//!
//! ```text
//! PROBE_WRITERS=1,8,32 PROBE_STORES=off,1,2,4,8 \
//!   CARGO_TARGET_DIR=/work/target-compare cargo run --release --manifest-path bench/compare/Cargo.toml --example probe
//! ```
//!
//! `PROBE_STORES` names store variants: `off` (group commit off), a number (that many
//! lanes), `default`, `quiet` (NOTIFY off), `notify2` / `notify20` (NOTIFY at most every 2 /
//! 20 ms),
//! `ping` (ping on every acquire). `hand` (the INSERT) always runs.

use std::time::{Duration, Instant};

use es_core::{ExpectedVersion, Metadata, NewEvent, StreamId, StreamStore};
use es_postgres::{PostgresStore, StoreOptions};
use serde_json::value::to_raw_value;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Json;
use uuid::Uuid;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const HAND_INSERT: &str = "INSERT INTO hand.events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata, recorded_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())";

fn event(i: u64, meta: &Metadata) -> Res<NewEvent> {
    Ok(NewEvent {
        event_id: Uuid::now_v7(),
        event_name: "MoneyDeposited".into(),
        schema_version: 1,
        payload: to_raw_value(
            &serde_json::json!({"amount": (i % 1000) + 1, "reference": format!("ref-{i}")}),
        )?,
        metadata: meta.clone(),
    })
}

async fn cell(
    store: Option<PostgresStore>,
    hand: &PgPool,
    writers: usize,
    secs: f64,
    tag: &str,
) -> Res<f64> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, hand) = (store.clone(), hand.clone());
        let id = format!("{tag}-w{w}");
        tasks.push(tokio::spawn(async move {
            let meta = Metadata::by_user("bench");
            let stream = StreamId::new("BankAccount", id.clone());
            let mut n = 0u64;
            while Instant::now() < deadline {
                let e = event(n, &meta)?;
                match &store {
                    Some(store) => {
                        store
                            .append(&stream, ExpectedVersion::Exact(n), vec![e])
                            .await?;
                    }
                    None => {
                        sqlx::query(HAND_INSERT)
                            .bind(e.event_id)
                            .bind("BankAccount")
                            .bind(&id)
                            .bind(n as i64 + 1)
                            .bind(&e.event_name)
                            .bind(1i32)
                            .bind(Json(&*e.payload))
                            .bind(Json(&e.metadata))
                            .execute(&hand)
                            .await?;
                    }
                }
                n += 1;
            }
            Ok::<u64, Box<dyn std::error::Error + Send + Sync>>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / secs)
}

/// CPU ticks (user + system) of a process, from /proc.
fn ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which is in parentheses and may contain spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    field(11) + field(12)
}

/// CPU ticks of this process and of every backend of database es_probe.
async fn cpu(observer: &PgPool) -> (u64, u64) {
    let pids: Vec<i32> =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = 'es_probe'")
            .fetch_all(observer)
            .await
            .unwrap_or_default();
    let server = pids.iter().map(|p| ticks(&p.to_string())).sum();
    (ticks("self"), server)
}

/// Counts events (the runtime's and the store's work only).
struct Count(u64);

impl es_core::EventHandler for Count {
    type Event = es_core::AnyEvent;

    async fn handle(
        &mut self,
        _: &mut (),
        _: &es_core::Envelope<es_core::AnyEvent>,
    ) -> Result<(), es_core::BoxError> {
        self.0 += 1;
        Ok(())
    }
}

/// `PROBE_MODE=rebuild`: rebuilds over the log `bench/compare` left in `es_bench.proj`.
async fn rebuild() -> Res<()> {
    let url = "postgres://postgres@127.0.0.1:5432/es_bench";
    let runs: usize = std::env::var("PROBE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    for ahead in [true, false] {
        let store = PostgresStore::connect_with(
            url,
            StoreOptions::new()
                .schema("proj")
                .read_ahead(ahead)
                .max_connections(4),
        )
        .await?;
        for _ in 0..runs {
            let mut consumer = es_core::Consumer::new(
                "probe",
                store.clone(),
                es_core::AtLeastOnce::new(es_core::LocalCheckpoints::new()),
                Count(0),
            );
            let began = Instant::now();
            let progress = consumer.rebuild(|_| {}).await?;
            println!(
                "read-ahead {ahead}: {} events in {:.2} s: {:.0} events/s",
                progress.done,
                began.elapsed().as_secs_f64(),
                progress.done as f64 / began.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    if std::env::var("PROBE_MODE").as_deref() == Ok("rebuild") {
        return rebuild().await;
    }
    let admin_url = "postgres://postgres@127.0.0.1:5432/postgres";
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await?;
    sqlx::query("DROP DATABASE IF EXISTS es_probe WITH (FORCE)")
        .execute(&admin)
        .await?;
    sqlx::query("CREATE DATABASE es_probe")
        .execute(&admin)
        .await?;
    admin.close().await;
    let url = "postgres://postgres@127.0.0.1:5432/es_probe";
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let pool_size: u32 = env("PROBE_POOL", "9").parse()?;
    let base = || {
        StoreOptions::new()
            .schema("ours")
            .max_connections(pool_size)
    };
    let mut stores: Vec<(String, Option<PostgresStore>)> = Vec::new();
    for name in env("PROBE_STORES", "default,off,1,2,4,8").split(',') {
        let options = match name {
            "default" => base(),
            "off" => base().group_commit(0),
            "quiet" => base().notify(false),
            "notify2" => base().notify_interval(Duration::from_millis(2)),
            "notify20" => base().notify_interval(Duration::from_millis(20)),
            "ping" => base().ping_after_idle(Duration::ZERO),
            lanes => base().group_commit(lanes.parse()?),
        };
        stores.push((
            name.to_owned(),
            Some(PostgresStore::connect_with(url, options).await?),
        ));
    }
    stores.insert(0, ("hand".to_owned(), None));
    let hand = PgPoolOptions::new()
        .max_connections(pool_size)
        .test_before_acquire(false)
        .connect(url)
        .await?;
    sqlx::query("CREATE SCHEMA hand").execute(&hand).await?;
    sqlx::query("CREATE TABLE hand.events (LIKE ours.events INCLUDING ALL)")
        .execute(&hand)
        .await?;
    let secs: f64 = env("PROBE_SECONDS", "2").parse()?;
    let rounds: usize = env("PROBE_ROUNDS", "3").parse()?;
    for writers in env("PROBE_WRITERS", "1,8,32").split(',') {
        let writers: usize = writers.parse()?;
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); stores.len()];
        let mut cpu_per_op: Vec<(f64, f64)> = vec![(0.0, 0.0); stores.len()];
        for round in 0..rounds {
            let mut order: Vec<usize> = (0..stores.len()).collect();
            order.rotate_left(round % stores.len());
            for k in order {
                let before = cpu(&hand).await;
                let rate = cell(
                    stores[k].1.clone(),
                    &hand,
                    writers,
                    secs,
                    &format!("r{round}w{writers}k{k}"),
                )
                .await?;
                let after = cpu(&hand).await;
                let ops = rate * secs;
                // 100 ticks per second: microseconds of CPU per append.
                cpu_per_op[k].0 += (after.0 - before.0) as f64 * 1e4 / ops / rounds as f64;
                cpu_per_op[k].1 +=
                    (after.1.saturating_sub(before.1)) as f64 * 1e4 / ops / rounds as f64;
                eprintln!("{writers}w {}: {rate:.0}/s", stores[k].0);
                samples[k].push(rate);
            }
        }
        let med = |v: &Vec<f64>| {
            let mut v = v.clone();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let hand_rate = med(&samples[0]);
        println!(
            "## {writers} writer(s), {secs} s cells, {rounds} rounds, pool {pool_size}, load {}",
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
        for (((name, _), v), (client, server)) in stores.iter().zip(&samples).zip(&cpu_per_op) {
            println!(
                "{name:>8}: median {:>6.0}/s ({:.2}x hand) cpu/op client {client:.0} µs server {server:.0} µs; samples {:?}",
                med(v),
                med(v) / hand_rate,
                v.iter().map(|x| x.round()).collect::<Vec<_>>()
            );
        }
    }
    Ok(())
}
