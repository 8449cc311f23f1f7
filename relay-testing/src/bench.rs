//! What the relay benchmarks share: the events, the store they fill, the cost of the
//! consumer runtime alone, and the end-to-end latency from an append to a broker-side
//! consumer.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use es_core::{
    AnyEvent, AtLeastOnce, BoxError, Consumer, ConsumerHandle, Envelope, EventHandler,
    ExpectedVersion, GlobalLog, LocalCheckpoints, MemoryStore, Metadata, NewEvent, RecordedEvent,
    StreamId, StreamStore,
};

use crate::events::log_of;

/// Events read and relayed per batch.
pub const BATCH: usize = 1_000;

/// The `n`th benchmark event: a deposit with a ~72-byte JSON payload.
pub fn event(n: usize) -> NewEvent {
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

/// A benchmark's store: `BENCH_EVENTS` events (default 100,000) appended by [`fill`], and
/// its log. Prints what `bench` measures (`details`: its settings) and the rate of the
/// consumer runtime alone over that log ([`runtime_only`]).
pub async fn prepare(bench: &str, details: &str) -> (MemoryStore, Vec<RecordedEvent>) {
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let store = MemoryStore::new();
    fill(&store, events).await;
    let log = log_of(&store).await;
    println!(
        "{bench} bench: {events} events (~{} bytes of payload each), batches of {BATCH}{details}",
        log.first().map_or(0, |e| e.payload.get().len())
    );
    println!(
        "consumer runtime alone (no-op handler over the memory log): {:.0} ev/s",
        runtime_only(&store).await
    );
    (store, log)
}

/// Appends `events` events to `store`, 100 per append, alternating two aggregate types.
pub async fn fill(store: &MemoryStore, events: usize) {
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

/// The middle value of `values` (sorted in place).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Does nothing: the cost of the consumer runtime itself (reading the memory log, batching).
struct Nothing;

impl EventHandler for Nothing {
    type Event = AnyEvent;
    async fn handle(&mut self, _: &mut (), _: &Envelope<AnyEvent>) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Events per second of a consumer with a no-op handler over `store`, in batches of
/// [`BATCH`]: what the runtime costs before any broker.
pub async fn runtime_only(store: &MemoryStore) -> f64 {
    let mut consumer = Consumer::new(
        "nothing",
        store.clone(),
        AtLeastOnce::new(LocalCheckpoints::new()),
        Nothing,
    )
    .batch_size(BATCH);
    let began = Instant::now();
    let progress = consumer.catch_up().await.expect("runtime");
    progress.done as f64 / began.elapsed().as_secs_f64()
}

/// A handler that records when each position reached it; clones share the record.
#[derive(Clone, Default)]
pub struct Arrivals(Arc<Mutex<HashMap<u64, Instant>>>);

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

/// Quantiles of the end-to-end latency of one round.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// The median.
    pub p50: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The slowest event.
    pub max: Duration,
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.2?}, p99 {:.2?}, max {:.2?}",
            self.p50, self.p99, self.max
        )
    }
}

/// Between two appends of [`latency`].
pub const SPACING: Duration = Duration::from_millis(2);

/// One round of end-to-end latency: appends one warm-up event and waits until `consumer`
/// (whose handler is `arrivals`, on the other side of the broker from `store`) handled it,
/// so that every connection and script is in place; then appends `events` single events,
/// one every [`SPACING`], and measures for each the time from the append call to its
/// handling. A stall of the machine of S ms delays about S / 2 ms events in a row, so with
/// 2,000 events one stall over 40 ms sets the p99 (compare rounds, not single figures).
pub async fn latency(
    store: &MemoryStore,
    consumer: &ConsumerHandle,
    arrivals: &Arrivals,
    events: usize,
) -> Latency {
    let stream = |n: usize| StreamId::new("Account", format!("l-{}", n % 50));
    let warm_up = store
        .append(&stream(0), ExpectedVersion::Any, vec![event(0)])
        .await
        .expect("append");
    consumer
        .wait_for(warm_up[0].position, Duration::from_secs(60))
        .await
        .expect("the consumer handles the warm-up event");
    let mut appended = HashMap::new();
    for n in 0..events {
        let began = Instant::now();
        let recorded = store
            .append(&stream(n), ExpectedVersion::Any, vec![event(n)])
            .await
            .expect("append");
        appended.insert(recorded[0].position, began);
        tokio::time::sleep(SPACING).await;
    }
    let head = store.head_position().await.expect("head");
    consumer
        .wait_for(head, Duration::from_secs(60))
        .await
        .expect("consumer caught up");
    let arrivals = arrivals.0.lock().expect("lock");
    let mut latencies: Vec<Duration> = appended
        .iter()
        .map(|(position, began)| arrivals[position].duration_since(*began))
        .collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Latency {
        p50: at(0.5),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// Rounds of [`latency_rounds`].
pub const ROUNDS: usize = 5;

/// Events per round of [`latency_rounds`].
pub const LATENCY_EVENTS: usize = 2_000;

/// Runs [`ROUNDS`] rounds of [`latency`] of [`LATENCY_EVENTS`] events each over `relay`
/// (relaying `store`) and `consumer` (whose handler is `arrivals`), printing each round; then
/// stops both and returns the summary line: the median p50 and p99 of the rounds, the range
/// of the p99, and the slowest event overall.
pub async fn latency_rounds(
    store: &MemoryStore,
    relay: ConsumerHandle,
    consumer: ConsumerHandle,
    arrivals: &Arrivals,
) -> String {
    let (rounds, events) = (ROUNDS, LATENCY_EVENTS);
    let mut all = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let latency = latency(store, &consumer, arrivals, events).await;
        println!("  latency round {round}: {latency}");
        all.push(latency);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    let mut p50: Vec<f64> = all.iter().map(|l| ms(l.p50)).collect();
    let mut p99: Vec<f64> = all.iter().map(|l| ms(l.p99)).collect();
    let max = all.iter().map(|l| ms(l.max)).fold(0.0, f64::max);
    relay.shutdown().await.expect("the relay stops");
    consumer.shutdown().await.expect("the consumer stops");
    let (p99_low, p99_high) = p99.iter().fold((f64::MAX, 0.0_f64), |(low, high), v| {
        (low.min(*v), high.max(*v))
    });
    format!(
        "median of {rounds} rounds of {events} events: p50 {:.2} ms, p99 {:.2} ms (rounds {p99_low:.2}-{p99_high:.2} ms), max {max:.1} ms",
        median(&mut p50),
        median(&mut p99),
    )
}
