//! Shared by the es-nats tests: the local NATS, unique stream names, events, a TCP proxy that
//! refuses and drops connections on demand, and a log mirrored to a file for child processes.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use es_core::{
    Error, ExpectedVersion, GlobalLog, GlobalLogExt, LogFilter, LogPage, MemoryStore, Metadata,
    NewEvent, RecordedEvent, StreamId, StreamStore, Wakeup,
};
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The NATS the tests use (`NATS_URL`, default the local one).
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A JetStream context for checks, panicking loudly when NATS is unreachable: a test never
/// passes by skipping.
pub async fn admin() -> async_nats::jetstream::Context {
    let url = nats_url();
    match async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url.as_str())
        .await
    {
        Ok(client) => async_nats::jetstream::new(client),
        Err(e) => panic!(
            "NATS is not reachable at {url} ({e}): these tests need it with JetStream (`.ci/run` starts it)"
        ),
    }
}

/// A name no other test (or test run) uses.
pub fn unique_prefix(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "ES_NATS_TEST_{test}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Stream settings with a name and subject prefix no other test (or test run) uses.
pub fn unique_stream(test: &str) -> es_nats::StreamSettings {
    let name = unique_prefix(test).replace(['-', ':'], "_");
    es_nats::StreamSettings::new(name.clone(), name.to_lowercase())
}

/// Deletes the stream and its parked-events bucket.
pub async fn cleanup(settings: &es_nats::StreamSettings) {
    let js = admin().await;
    let _ = js.delete_stream(&settings.name).await;
    let _ = js.delete_stream(settings.parked_stream()).await;
}

/// Every message of the stream, in sequence order: (sequence, subject, headers, payload).
pub async fn messages(
    settings: &es_nats::StreamSettings,
) -> Vec<(u64, String, async_nats::HeaderMap, Vec<u8>)> {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    let js = admin().await;
    let mut stream = js
        .get_stream(&settings.name)
        .await
        .expect("the stream exists");
    let total = stream.info().await.expect("info").state.messages;
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..pull::Config::default()
        })
        .await
        .expect("an ephemeral consumer");
    let mut all = Vec::new();
    while (all.len() as u64) < total {
        let mut batch = consumer
            .fetch()
            .max_messages(2_000)
            .messages()
            .await
            .expect("fetch");
        while let Some(message) = batch.next().await {
            let message = message.expect("message");
            let sequence = message.info().expect("info").stream_sequence;
            all.push((
                sequence,
                message.subject.to_string(),
                message.headers.clone().unwrap_or_default(),
                message.payload.to_vec(),
            ));
        }
    }
    all
}

/// Asserts that the stream holds exactly `log`, in order, one message per event, with the
/// documented subject, id, headers and body.
pub async fn assert_stream_holds(settings: &es_nats::StreamSettings, log: &[RecordedEvent]) {
    let messages = messages(settings).await;
    let header = |headers: &async_nats::HeaderMap, name: &str| {
        headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    let positions: Vec<u64> = messages
        .iter()
        .map(|(_, _, h, _)| header(h, "Es-Position").parse().expect("Es-Position"))
        .collect();
    let expected: Vec<u64> = log.iter().map(|e| e.position).collect();
    if positions != expected {
        let mut seen = std::collections::HashSet::new();
        let duplicates: Vec<_> = positions.iter().filter(|p| !seen.insert(**p)).collect();
        let missing: Vec<_> = expected
            .iter()
            .filter(|p| !seen.contains(*p))
            .take(20)
            .collect();
        panic!(
            "stream {} holds {} messages, the log {}; duplicates {duplicates:?}; missing (first 20) {missing:?}",
            settings.name,
            positions.len(),
            expected.len()
        );
    }
    let mut previous = 0;
    for ((sequence, subject, headers, payload), event) in messages.iter().zip(log) {
        assert_eq!(
            subject,
            &es_nats::event_subject(
                &settings.subject_prefix,
                &event.stream.aggregate_type,
                &event.stream.aggregate_id
            ),
            "message {sequence}"
        );
        assert_eq!(
            header(headers, "Nats-Msg-Id"),
            event.event_id.to_string(),
            "message {sequence}"
        );
        assert_eq!(header(headers, "Es-Version"), event.version.to_string());
        assert_eq!(header(headers, "Es-Event-Name"), event.event_name);
        assert_eq!(
            header(headers, "Es-Schema-Version"),
            event.schema_version.to_string()
        );
        assert_eq!(
            header(headers, "Es-Correlation-Id"),
            event
                .metadata
                .correlation_id
                .map(|c| c.to_string())
                .unwrap_or_default()
        );
        assert_eq!(header(headers, "Es-Previous"), previous.to_string());
        assert_eq!(payload.as_slice(), event.payload.get().as_bytes());
        previous = event.position;
    }
}

/// A small deterministic generator (xorshift), seeded from the clock unless `SEED` is set;
/// the seed is printed so a failure can be replayed.
pub struct Rng(u64);

impl Rng {
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

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `low..high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low).max(1)
    }
}

const TYPES: [&str; 3] = ["Account", "Transfer", "Odd type.with*chars>"];

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

/// A TCP proxy in front of a server, which can refuse connections (nothing listens on its
/// port) and drop the ones it carries.
pub struct Proxy {
    pub port: u16,
    target: SocketAddr,
    listener: Mutex<Option<JoinHandle<()>>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// A proxy to `target` on a free port, closed: connections to it are refused.
    pub async fn closed(target: SocketAddr) -> Self {
        let probe = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let port = probe.local_addr().expect("local addr").port();
        drop(probe);
        Self {
            port,
            target,
            listener: Mutex::new(None),
            connections: Arc::default(),
        }
    }

    /// Starts accepting connections and forwarding them.
    pub async fn open(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the proxy port again");
        let target = self.target;
        let connections = self.connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let connection = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections.lock().expect("lock").push(connection);
            }
        });
        *self.listener.lock().expect("lock") = Some(task);
    }

    /// Stops accepting: new connections are refused.
    pub fn close(&self) {
        if let Some(task) = self.listener.lock().expect("lock").take() {
            task.abort();
        }
    }

    /// Drops every connection it carries (both sides see the connection close).
    pub fn drop_connections(&self) {
        for connection in self.connections.lock().expect("lock").drain(..) {
            connection.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.close();
        self.drop_connections();
    }
}

/// Mirrors the store's log into a file, one JSON event per line in position order, so that a
/// child process can relay it (a child cannot read this process's memory).
pub fn mirror_to_file(store: &MemoryStore, path: &Path) -> JoinHandle<()> {
    let mut file = std::fs::File::create(path).expect("create the mirror file");
    let mut events = store.subscribe(0, LogFilter::all());
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let event = event.expect("the memory log never fails");
            let mut line = serde_json::to_vec(&event).expect("event encodes");
            line.push(b'\n');
            file.write_all(&line).expect("write the mirror");
        }
    })
}

/// The log as mirrored by [`mirror_to_file`]: complete lines only, read as the file grows.
#[derive(Clone)]
pub struct FileLog {
    path: PathBuf,
    state: Arc<Mutex<(Vec<RecordedEvent>, u64)>>,
}

impl FileLog {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            state: Arc::default(),
        }
    }

    fn refresh(&self) -> Result<(), Error> {
        use std::io::{Seek, SeekFrom};
        let mut state = self.state.lock().expect("lock");
        let mut file = std::fs::File::open(&self.path).map_err(Error::backend)?;
        file.seek(SeekFrom::Start(state.1))
            .map_err(Error::backend)?;
        let mut reader = std::io::BufReader::new(file);
        let mut line = String::new();
        loop {
            line.clear();
            let read = reader.read_line(&mut line).map_err(Error::backend)?;
            if read == 0 || !line.ends_with('\n') {
                return Ok(());
            }
            let event: RecordedEvent = serde_json::from_str(&line).map_err(Error::backend)?;
            state.0.push(event);
            state.1 += read as u64;
        }
    }
}

impl GlobalLog for FileLog {
    async fn read_log(
        &self,
        after: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogPage, Error> {
        self.refresh()?;
        let state = self.state.lock().expect("lock");
        let events: Vec<RecordedEvent> = state
            .0
            .iter()
            .filter(|e| e.position > after && filter.matches(e))
            .take(limit)
            .cloned()
            .collect();
        let scanned_to = events.last().map_or(after, |e| e.position);
        Ok(LogPage { events, scanned_to })
    }

    async fn head_position(&self) -> Result<u64, Error> {
        self.refresh()?;
        Ok(self
            .state
            .lock()
            .expect("lock")
            .0
            .last()
            .map_or(0, |e| e.position))
    }

    fn wakeup(&self) -> Wakeup {
        Wakeup::polling(Duration::from_millis(20))
    }
}

/// The PostgreSQL the PostgreSQL-backed variants use (`DATABASE_URL`, default the local one).
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A PostgreSQL store on schema `schema` (created and migrated if needed), panicking loudly
/// when PostgreSQL is unreachable.
pub async fn postgres_store(schema: &str) -> es_postgres::PostgresStore {
    let url = database_url();
    match es_postgres::PostgresStore::connect_with(
        &url,
        es_postgres::StoreOptions::new().schema(schema),
    )
    .await
    {
        Ok(store) => store,
        Err(e) => panic!("PostgreSQL is not reachable at {url} ({e}): these tests need it"),
    }
}

/// Drops a test schema.
pub async fn drop_schema(store: &es_postgres::PostgresStore, schema: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(store.pool())
    .await
    .expect("drop the test schema");
}
