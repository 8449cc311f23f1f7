//! Relay throughput against raw pipelined XADD of the same entries, and end-to-end latency
//! append → Redis → broker-side consumer, against the local Redis.
//!
//! ```text
//! cargo run -p es-redis --release --example redis_bench
//! ```
//! `BENCH_EVENTS` (default 100,000) events; `REDIS_URL` (default redis://127.0.0.1:6379).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use es_core::{
    AnyEvent, BoxError, Consumer, Envelope, EventHandler, ExpectedVersion, GlobalLog, GlobalLogExt,
    LocalCheckpoints, MemoryStore, Metadata, NewEvent, RecordedEvent, StreamId, StreamStore,
};
use es_redis::{Keys, Layout, RedisLog, RedisRelay, RedisRelayConfig};

const BATCH: usize = 1_000;

fn event(n: usize) -> NewEvent {
    let payload = serde_json::json!({
        "account": format!("acc-{}", n % 1_000),
        "amount": (n % 10_000) as i64,
        "currency": "EUR",
        "reference": format!("transfer-{n}"),
    });
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_name: "MoneyDeposited".into(),
        schema_version: 1,
        payload: serde_json::value::to_raw_value(&payload).expect("payload"),
        metadata: Metadata::by_user("bench"),
    }
}

async fn fill(store: &MemoryStore, events: usize) {
    for chunk in 0..events.div_ceil(100) {
        let batch: Vec<NewEvent> = (chunk * 100..((chunk + 1) * 100).min(events))
            .map(event)
            .collect();
        let stream = StreamId::new(["Account", "Transfer"][chunk % 2], format!("s-{chunk}"));
        store
            .append(&stream, ExpectedVersion::Any, batch)
            .await
            .expect("append");
    }
}

async fn all_events(store: &MemoryStore) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    loop {
        let after = events.last().map_or(0, |e: &RecordedEvent| e.position);
        let page = store.read_all(after, 10_000).await.expect("read");
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

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

/// Raw pipelined XADD of the same entries (ids, fields) the relay writes, one pipeline per
/// batch: what a hand-written publisher does, without the relay's checks.
async fn raw(url: &str, key: &str, events: &[RecordedEvent]) -> f64 {
    let mut c = connection(url).await;
    let began = Instant::now();
    let mut previous = 0;
    for batch in events.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for e in batch {
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
            previous = e.position;
        }
        pipe.exec_async(&mut c).await.expect("raw XADD");
    }
    events.len() as f64 / began.elapsed().as_secs_f64()
}

/// Raw pipelined writes of what the relay writes with `Layout::Both` and PUBLISH: XADD to the
/// whole-log stream, XADD to the per-type stream, PUBLISH of the JSON.
async fn raw_both(url: &str, prefix: &str, events: &[RecordedEvent]) -> f64 {
    let mut c = connection(url).await;
    let began = Instant::now();
    let mut previous = 0;
    for batch in events.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for e in batch {
            for key in [
                format!("{prefix}$all"),
                format!("{prefix}{}", e.stream.aggregate_type),
            ] {
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
            pipe.cmd("PUBLISH")
                .arg(format!("{prefix}pub:{}", e.stream.aggregate_type))
                .arg(es_redis::publish_message(e).expect("json"))
                .ignore();
            previous = e.position;
        }
        pipe.exec_async(&mut c).await.expect("raw XADD");
    }
    events.len() as f64 / began.elapsed().as_secs_f64()
}

async fn relay(url: &str, config: RedisRelayConfig, store: &MemoryStore) -> f64 {
    let relay = RedisRelay::new(url, config).expect("relay");
    let mut consumer = relay.consumer("bench", store.clone());
    let began = Instant::now();
    let progress = consumer.catch_up().await.expect("relay");
    progress.done as f64 / began.elapsed().as_secs_f64()
}

/// Does nothing: the cost of the consumer runtime itself (reading the memory log, batching).
struct Nothing;

impl EventHandler for Nothing {
    type Event = AnyEvent;
    async fn handle(&mut self, _: &mut (), _: &Envelope<AnyEvent>) -> Result<(), BoxError> {
        Ok(())
    }
}

async fn runtime_only(store: &MemoryStore) -> f64 {
    let mut consumer = Consumer::new(
        "nothing",
        store.clone(),
        es_core::AtLeastOnce::new(LocalCheckpoints::new()),
        Nothing,
    )
    .batch_size(BATCH);
    let began = Instant::now();
    let progress = consumer.catch_up().await.expect("runtime");
    progress.done as f64 / began.elapsed().as_secs_f64()
}

/// Records when each position reached the broker-side consumer.
struct Arrivals(Arc<Mutex<HashMap<u64, Instant>>>);

impl EventHandler for Arrivals {
    type Event = AnyEvent;
    async fn handle(&mut self, _: &mut (), e: &Envelope<AnyEvent>) -> Result<(), BoxError> {
        self.0
            .lock()
            .expect("lock")
            .insert(e.position(), Instant::now());
        Ok(())
    }
}

async fn latency(url: &str, prefix: &str, events: usize) -> (Duration, Duration, Duration) {
    let keys = Keys::new(prefix);
    let store = MemoryStore::new();
    let relay = RedisRelay::new(url, RedisRelayConfig::new(keys.clone()))
        .expect("relay")
        .consumer("relay", store.clone())
        .spawn();
    let arrivals = Arc::new(Mutex::new(HashMap::new()));
    let consumer = Consumer::new(
        "latency",
        RedisLog::new(url, &keys).expect("source"),
        es_core::AtLeastOnce::new(LocalCheckpoints::new()),
        Arrivals(arrivals.clone()),
    )
    .spawn();
    let mut appended = HashMap::new();
    for n in 0..events {
        let began = Instant::now();
        let recorded = store
            .append(
                &StreamId::new("Account", format!("l-{}", n % 50)),
                ExpectedVersion::Any,
                vec![event(n)],
            )
            .await
            .expect("append");
        appended.insert(recorded[0].position, began);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let head = store.head_position().await.expect("head");
    consumer
        .wait_for(head, Duration::from_secs(60))
        .await
        .expect("consumer caught up");
    relay.shutdown().await.expect("relay");
    consumer.shutdown().await.expect("consumer");
    let arrivals = arrivals.lock().expect("lock");
    let mut latencies: Vec<Duration> = appended
        .iter()
        .map(|(position, began)| arrivals[position].duration_since(*began))
        .collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), at(1.0))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let prefix = format!("es-redis-bench:{}:", std::process::id());
    let store = MemoryStore::new();
    fill(&store, events).await;
    let log = all_events(&store).await;
    println!(
        "es-redis bench: {events} events (~{} bytes of payload each), batches of {BATCH}",
        log[0].payload.get().len()
    );

    println!(
        "consumer runtime alone (no-op handler over the memory log): {:.0} ev/s",
        runtime_only(&store).await
    );
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
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (raw_rate, all, raw_both_rate, both) = (
        median(&mut raws),
        median(&mut alls),
        median(&mut raw_boths),
        median(&mut boths),
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
    let (p50, p99, max) = latency(&url, &format!("{prefix}latency:"), 2_000).await;
    println!(
        "end-to-end latency append -> Redis -> consumer (2,000 events, one every 2 ms): p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    cleanup(&url, &prefix).await;
}
