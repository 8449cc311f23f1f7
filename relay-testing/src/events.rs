//! Writers on a source store, and the log read back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use es_core::{
    ExpectedVersion, GlobalLog, GlobalLogExt, Metadata, NewEvent, RecordedEvent, StreamId,
    StreamStore,
};

/// `{process id}_{clock nanoseconds}_{counter}`: a part of a name no other test (or test run)
/// uses.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A small deterministic generator (xorshift), seeded from the clock unless `SEED` is set;
/// the seed is printed so a failure can be replayed.
#[derive(Debug)]
pub struct Rng(u64);

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl Rng {
    /// Seeded from `SEED`, or from the clock.
    pub fn new() -> Self {
        let seed = std::env::var("SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            | 1;
        eprintln!("SEED={seed}");
        Self(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `low..high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low).max(1)
    }
}

/// The aggregate types [`write`] appends to (one with characters brokers must escape).
pub const TYPES: [&str; 3] = ["Account", "Transfer", "Odd type.with*chars>"];

/// One event of writer `writer`'s `n`th append, with metadata and a payload that exercises
/// the JSON round trip.
pub fn new_event(writer: usize, n: usize) -> NewEvent {
    let payload = serde_json::json!({
        "writer": writer,
        "n": n,
        "amount": (n as f64) * 0.1,
        "text": format!("ünïcode \u{1F600} \"quoted\"\nline {n}"),
        "nested": { "list": [1, 2.5, null, true], "empty": {} },
    });
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_name: if n.is_multiple_of(2) {
            "Deposited"
        } else {
            "Withdrawn"
        }
        .to_owned(),
        schema_version: 1 + (n % 3) as u32,
        payload: serde_json::value::to_raw_value(&payload).expect("payload encodes"),
        metadata: Metadata::by_user(format!("user-{writer}"))
            .with_causation_id(uuid::Uuid::now_v7())
            .with_extra("ip", "::1"),
    }
}

/// The stream writer `writer` appends to for its `n`th append.
pub fn stream_of(writer: usize, n: usize) -> StreamId {
    StreamId::new(
        TYPES[(writer + n) % TYPES.len()],
        format!("w{writer}-s{}", n % 7),
    )
}

/// Appends `per_writer` single-event appends from each of `writers` concurrent writers,
/// pausing `pause` after each.
pub async fn write<S>(store: &S, writers: usize, per_writer: usize, pause: Duration)
where
    S: StreamStore + Clone + 'static,
{
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..per_writer {
                    store
                        .append(
                            &stream_of(writer, n),
                            ExpectedVersion::Any,
                            vec![new_event(writer, n)],
                        )
                        .await
                        .expect("append");
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer task");
    }
}

/// Every event of the store's log.
pub async fn log_of<L: GlobalLog>(store: &L) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    loop {
        let after = events.last().map_or(0, |e: &RecordedEvent| e.position);
        let page = store.read_all(after, 10_000).await.expect("read the log");
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

/// A canonical JSON view of a recorded event, for equality (payloads compared as text).
pub fn canonical(event: &RecordedEvent) -> serde_json::Value {
    serde_json::json!({
        "event_id": event.event_id,
        "stream": event.stream,
        "version": event.version,
        "position": event.position,
        "event_name": event.event_name,
        "schema_version": event.schema_version,
        "payload": event.payload.get(),
        "metadata": event.metadata,
        "recorded_at": event.recorded_at,
    })
}
