//! Relay throughput against raw pipelined JetStream publishes of the same messages, and
//! end-to-end latency append → JetStream → broker-side consumer, against the local NATS.
//!
//! ```text
//! cargo run -p es-nats --release --example nats_bench
//! ```
//! `BENCH_EVENTS` (default 100,000) events; `NATS_URL` (default nats://127.0.0.1:4222).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use es_core::{
    AnyEvent, BoxError, Consumer, Envelope, EventHandler, ExpectedVersion, GlobalLog, GlobalLogExt,
    LocalCheckpoints, MemoryStore, Metadata, NewEvent, RecordedEvent, StreamId, StreamStore,
};
use es_nats::{JetStreamRelay, JetStreamRelayConfig, JetStreamSource, StreamSettings};

const BATCH: usize = 1_000;
const IN_FLIGHT: usize = 500;

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

async fn js(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(url)
        .await
        .unwrap_or_else(|e| panic!("NATS is not reachable at {url}: {e}"));
    async_nats::jetstream::ContextBuilder::new()
        .max_ack_inflight(10_000)
        .backpressure_on_inflight(true)
        .build(client)
}

fn settings(name: &str) -> StreamSettings {
    StreamSettings::new(name, name.to_lowercase())
}

async fn create(url: &str, settings: &StreamSettings) {
    let js = js(url).await;
    let _ = js.delete_stream(&settings.name).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: settings.name.clone(),
        subjects: vec![settings.subjects()],
        duplicate_window: settings.duplicate_window,
        description: Some("es-nats: the global log of an es-core store".into()),
        ..Default::default()
    })
    .await
    .expect("create the stream");
}

async fn delete(url: &str, settings: &StreamSettings) {
    let _ = js(url).await.delete_stream(&settings.name).await;
}

/// Raw pipelined publishes of the same messages (subject, headers, body) the relay sends,
/// acknowledgements awaited with the same bound in flight, without the relay's
/// expected-sequence check and state.
async fn raw(url: &str, settings: &StreamSettings, events: &[RecordedEvent]) -> f64 {
    let js = js(url).await;
    let began = Instant::now();
    let mut pending = VecDeque::new();
    let mut previous = 0;
    for e in events {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", e.event_id.to_string().as_str());
        headers.insert("Es-Position", e.position.to_string().as_str());
        headers.insert("Es-Previous", previous.to_string().as_str());
        headers.insert("Es-Version", e.version.to_string().as_str());
        headers.insert("Es-Event-Name", e.event_name.as_str());
        headers.insert("Es-Schema-Version", e.schema_version.to_string().as_str());
        if let Some(id) = e.metadata.correlation_id {
            headers.insert("Es-Correlation-Id", id.to_string().as_str());
        }
        headers.insert("Es-Aggregate-Type", e.stream.aggregate_type.as_str());
        headers.insert("Es-Aggregate-Id", e.stream.aggregate_id.as_str());
        headers.insert(
            "Es-Recorded-At",
            e.recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                .as_str(),
        );
        let envelope = serde_json::json!({
            "aggregate_type": e.stream.aggregate_type,
            "aggregate_id": e.stream.aggregate_id,
            "event_name": e.event_name,
            "metadata": e.metadata,
        });
        headers.insert("Es-Envelope", envelope.to_string().as_str());
        let subject = es_nats::event_subject(
            &settings.subject_prefix,
            &e.stream.aggregate_type,
            &e.stream.aggregate_id,
        );
        let message = PublishMessage::build()
            .headers(headers)
            .payload(e.payload.get().to_owned().into());
        pending.push_back(js.send_publish(subject, message).await.expect("publish"));
        if pending.len() >= IN_FLIGHT {
            pending.pop_front().expect("pending").await.expect("ack");
        }
        previous = e.position;
    }
    for ack in pending {
        ack.await.expect("ack");
    }
    events.len() as f64 / began.elapsed().as_secs_f64()
}

async fn relay(url: &str, settings: &StreamSettings, store: &MemoryStore) -> f64 {
    let relay = JetStreamRelay::new(
        url,
        JetStreamRelayConfig {
            batch_size: BATCH,
            max_in_flight: IN_FLIGHT,
            ..JetStreamRelayConfig::new(settings.clone())
        },
    );
    let mut consumer = relay.consumer("bench", store.clone());
    let began = Instant::now();
    let progress = consumer.catch_up().await.expect("relay");
    progress.done as f64 / began.elapsed().as_secs_f64()
}

async fn latency(
    url: &str,
    settings: &StreamSettings,
    events: usize,
) -> (Duration, Duration, Duration) {
    let store = MemoryStore::new();
    let relay = JetStreamRelay::new(url, JetStreamRelayConfig::new(settings.clone()))
        .consumer("relay", store.clone())
        .spawn();
    // The stream must exist before the source attaches.
    store
        .append(
            &StreamId::new("Account", "first"),
            ExpectedVersion::Any,
            vec![event(0)],
        )
        .await
        .expect("append");
    relay
        .wait_for(1, Duration::from_secs(30))
        .await
        .expect("relay started");
    let arrivals = Arc::new(Mutex::new(HashMap::new()));
    let (log, delivery) = JetStreamSource::new(url, settings.clone()).durable("latency");
    let consumer = Consumer::new("latency", log, delivery, Arrivals(arrivals.clone())).spawn();
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
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let name = format!("ES_NATS_BENCH_{}", std::process::id());
    let store = MemoryStore::new();
    fill(&store, events).await;
    let log = all_events(&store).await;
    println!(
        "es-nats bench: {events} events (~{} bytes of payload each), batches of {BATCH}, {IN_FLIGHT} acks in flight",
        log[0].payload.get().len()
    );
    println!(
        "consumer runtime alone (no-op handler over the memory log): {:.0} ev/s",
        runtime_only(&store).await
    );
    let rounds = 5;
    let (mut raws, mut relays) = (vec![], vec![]);
    for round in 0..rounds {
        let raw_stream = settings(&format!("{name}_RAW{round}"));
        create(&url, &raw_stream).await;
        raws.push(raw(&url, &raw_stream, &log).await);
        delete(&url, &raw_stream).await;
        let relay_stream = settings(&format!("{name}_RELAY{round}"));
        relays.push(relay(&url, &relay_stream, &store).await);
        delete(&url, &relay_stream).await;
        println!(
            "round {round}: raw publishes {:.0} | relay {:.0} (ev/s)",
            raws[round], relays[round]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (raw_rate, relay_rate) = (median(&mut raws), median(&mut relays));
    println!(
        "median of {rounds} rounds: relay {relay_rate:.0} ev/s, raw pipelined publishes {raw_rate:.0} ev/s: relay = {:.0}% of raw",
        100.0 * relay_rate / raw_rate
    );
    let latency_stream = settings(&format!("{name}_LATENCY"));
    let (p50, p99, max) = latency(&url, &latency_stream, 2_000).await;
    println!(
        "end-to-end latency append -> JetStream -> durable consumer (2,000 events, one every 2 ms): p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    delete(&url, &latency_stream).await;
}
