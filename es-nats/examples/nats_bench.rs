//! Relay throughput against raw pipelined JetStream publishes of the same messages, and
//! end-to-end latency append → JetStream → broker-side consumer, against the local NATS.
//!
//! ```text
//! cargo run -p es-nats --release --example nats_bench
//! ```
//! `BENCH_EVENTS` (default 100,000) events; `NATS_URL` (default nats://127.0.0.1:4222).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use es_core::{Consumer, ExpectedVersion, MemoryStore, RecordedEvent, StreamId, StreamStore};
use es_nats::{JetStreamRelay, JetStreamRelayConfig, JetStreamSource, StreamSettings};
use relay_testing::bench::{self, Arrivals, BATCH};

const IN_FLIGHT: usize = 500;

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

/// End-to-end latency append -> relay -> JetStream -> durable source -> consumer, in rounds.
async fn latency(url: &str, settings: &StreamSettings) -> String {
    let store = MemoryStore::new();
    let relay = JetStreamRelay::new(url, JetStreamRelayConfig::new(settings.clone()))
        .consumer("relay", store.clone())
        .spawn();
    // The stream must exist before the source attaches.
    store
        .append(
            &StreamId::new("Account", "first"),
            ExpectedVersion::Any,
            vec![bench::event(0)],
        )
        .await
        .expect("append");
    relay
        .wait_for(1, Duration::from_secs(30))
        .await
        .expect("relay started");
    let arrivals = Arrivals::default();
    let (log, delivery) = JetStreamSource::new(url, settings.clone()).durable("latency");
    let consumer = Consumer::new("latency", log, delivery, arrivals.clone()).spawn();
    bench::latency_rounds(&store, relay, consumer, &arrivals).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let name = format!("ES_NATS_BENCH_{}", std::process::id());
    let (store, log) = bench::prepare("es-nats", &format!(", {IN_FLIGHT} acks in flight")).await;
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
    let (raw_rate, relay_rate) = (bench::median(&mut raws), bench::median(&mut relays));
    println!(
        "median of {rounds} rounds: relay {relay_rate:.0} ev/s, raw pipelined publishes {raw_rate:.0} ev/s: relay = {:.0}% of raw",
        100.0 * relay_rate / raw_rate
    );
    let latency_stream = settings(&format!("{name}_LATENCY"));
    println!("end-to-end latency append -> JetStream -> durable consumer (one event every 2 ms):");
    let summary = latency(&url, &latency_stream).await;
    println!("  {summary}");
    delete(&url, &latency_stream).await;
}
