//! Relay throughput against raw pipelined XADD of the same entries, and end-to-end latency
//! append → Redis → broker-side consumer, against the local Redis.
//!
//! ```text
//! cargo run -p es-redis --release --example redis_bench
//! ```
//! `BENCH_EVENTS` (default 100,000) events; `REDIS_URL` (default redis://127.0.0.1:6379).

use std::time::Instant;

use es_core::{AtLeastOnce, Consumer, LocalCheckpoints, MemoryStore, RecordedEvent};
use es_redis::{Keys, Layout, RedisLog, RedisRelay, RedisRelayConfig};
use relay_testing::bench::{self, Arrivals, BATCH};

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis is not reachable at {url}: {e}"))
}

async fn cleanup(url: &str, prefix: &str) {
    let mut c = connection(url).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .exec_async(&mut c)
            .await
            .expect("DEL");
    }
}

/// Adds to `pipe` the XADD of `e` to `key` with the entry id and fields the relay writes.
fn xadd(pipe: &mut redis::Pipeline, key: &str, e: &RecordedEvent, previous: u64) {
    pipe.cmd("XADD")
        .arg(key)
        .arg(format!("{}-0", e.position))
        .arg("event_id")
        .arg(e.event_id.to_string())
        .arg("aggregate_type")
        .arg(&e.stream.aggregate_type)
        .arg("aggregate_id")
        .arg(&e.stream.aggregate_id)
        .arg("version")
        .arg(e.version)
        .arg("event_name")
        .arg(&e.event_name)
        .arg("schema_version")
        .arg(e.schema_version)
        .arg("payload")
        .arg(e.payload.get())
        .arg("metadata")
        .arg(serde_json::to_string(&e.metadata).expect("metadata"))
        .arg("recorded_at")
        .arg(
            e.recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        )
        .arg("position")
        .arg(e.position)
        .arg("previous")
        .arg(previous)
        .ignore();
}

/// Events per second of hand-written pipelines over `events`, one per batch, with what
/// `add` adds for each event (given the position published before it).
async fn pipelined(
    url: &str,
    events: &[RecordedEvent],
    mut add: impl FnMut(&mut redis::Pipeline, &RecordedEvent, u64),
) -> f64 {
    let mut c = connection(url).await;
    let began = Instant::now();
    let mut previous = 0;
    for batch in events.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for e in batch {
            add(&mut pipe, e, previous);
            previous = e.position;
        }
        pipe.exec_async(&mut c).await.expect("raw XADD");
    }
    events.len() as f64 / began.elapsed().as_secs_f64()
}

/// Raw pipelined XADD of the same entries (ids, fields) the relay writes, one pipeline per
/// batch: what a hand-written publisher does, without the relay's checks.
async fn raw(url: &str, key: &str, events: &[RecordedEvent]) -> f64 {
    pipelined(url, events, |pipe, e, previous| {
        xadd(pipe, key, e, previous)
    })
    .await
}

/// Raw pipelined writes of what the relay writes with `Layout::Both` and PUBLISH: XADD to the
/// whole-log stream, XADD to the per-type stream, PUBLISH of the JSON.
async fn raw_both(url: &str, prefix: &str, events: &[RecordedEvent]) -> f64 {
    let all = format!("{prefix}$all");
    pipelined(url, events, |pipe, e, previous| {
        xadd(pipe, &all, e, previous);
        let of_type = format!("{prefix}{}", e.stream.aggregate_type);
        xadd(pipe, &of_type, e, previous);
        pipe.cmd("PUBLISH")
            .arg(format!("{prefix}pub:{}", e.stream.aggregate_type))
            .arg(es_redis::publish_message(e).expect("json"))
            .ignore();
    })
    .await
}

async fn relay(url: &str, config: RedisRelayConfig, store: &MemoryStore) -> f64 {
    let relay = RedisRelay::new(url, config).expect("relay");
    let mut consumer = relay.consumer("bench", store.clone());
    let began = Instant::now();
    let progress = consumer.catch_up().await.expect("relay");
    progress.done as f64 / began.elapsed().as_secs_f64()
}

/// End-to-end latency append -> relay -> Redis -> `RedisLog` -> consumer, in rounds.
async fn latency(url: &str, prefix: &str) -> String {
    let keys = Keys::new(prefix);
    let store = MemoryStore::new();
    let relay = RedisRelay::new(url, RedisRelayConfig::new(keys.clone()))
        .expect("relay")
        .consumer("relay", store.clone())
        .spawn();
    let arrivals = Arrivals::default();
    let consumer = Consumer::new(
        "latency",
        RedisLog::new(url, &keys).expect("source"),
        AtLeastOnce::new(LocalCheckpoints::new()),
        arrivals.clone(),
    )
    .spawn();
    bench::latency_rounds(&store, relay, consumer, &arrivals).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("es-redis-bench:{}:", std::process::id());
    let (store, log) = bench::prepare("es-redis", "").await;
    let rounds = 5;
    let (mut raws, mut alls, mut raw_boths, mut boths) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        raws.push(raw(&url, &format!("{prefix}raw{round}"), &log).await);
        cleanup(&url, &prefix).await;
        alls.push(
            relay(
                &url,
                RedisRelayConfig {
                    batch_size: BATCH,
                    ..RedisRelayConfig::new(Keys::new(format!("{prefix}all{round}:")))
                },
                &store,
            )
            .await,
        );
        cleanup(&url, &prefix).await;
        raw_boths.push(raw_both(&url, &format!("{prefix}rawboth{round}:"), &log).await);
        cleanup(&url, &prefix).await;
        boths.push(
            relay(
                &url,
                RedisRelayConfig {
                    batch_size: BATCH,
                    ..RedisRelayConfig::new(Keys::new(format!("{prefix}both{round}:")))
                        .layout(Layout::Both)
                        .publish(format!("{prefix}both{round}:pub:"))
                },
                &store,
            )
            .await,
        );
        cleanup(&url, &prefix).await;
        println!(
            "round {round}: raw XADD {:.0} | relay whole-log {:.0} | raw XADD x2 + PUBLISH {:.0} | relay both + PUBLISH {:.0} (ev/s)",
            raws[round], alls[round], raw_boths[round], boths[round]
        );
    }
    let (raw_rate, all, raw_both_rate, both) = (
        bench::median(&mut raws),
        bench::median(&mut alls),
        bench::median(&mut raw_boths),
        bench::median(&mut boths),
    );
    println!("median of {rounds} rounds:");
    println!(
        "  whole-log stream: relay {all:.0} ev/s, raw pipelined XADD {raw_rate:.0} ev/s: relay = {:.0}% of raw",
        100.0 * all / raw_rate
    );
    println!(
        "  both layouts + PUBLISH: relay {both:.0} ev/s, raw pipelined XADD x2 + PUBLISH {raw_both_rate:.0} ev/s: relay = {:.0}% of raw",
        100.0 * both / raw_both_rate
    );
    println!("end-to-end latency append -> Redis -> consumer (one event every 2 ms):");
    let summary = latency(&url, &format!("{prefix}latency:")).await;
    println!("  {summary}");
    cleanup(&url, &prefix).await;
}
