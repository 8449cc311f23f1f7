//! The es-nats side of the tests: the local NATS, unique streams, what a stream holds, and
//! the [`Broker`] the shared scenarios run against. The rest comes from `relay-testing`.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use es_core::{GlobalLog, RecordedEvent};
use es_nats::{
    DurableSettings, JetStreamDelivery, JetStreamLog, JetStreamRelay, JetStreamRelayConfig,
    JetStreamSource, NatsOptions, StreamSettings,
};
use futures::StreamExt;
pub use relay_testing::scenarios::{self, Broker, Fault};
pub use relay_testing::*;

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

/// Stream settings with a name and subject prefix no other test (or test run) uses.
pub fn unique_stream(test: &str) -> StreamSettings {
    let name = format!("ES_NATS_TEST_{test}_{}", unique_suffix()).replace(['-', ':'], "_");
    StreamSettings::new(name.clone(), name.to_lowercase())
}

/// Deletes the stream and its parked-events bucket.
pub async fn cleanup(settings: &StreamSettings) {
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
    assert_positions(&format!("stream {}", settings.name), &positions, log);
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

/// NATS under test: a fresh stream, written by relays with the configuration the test gives.
#[derive(Debug, Clone)]
pub struct NatsBroker {
    /// What the relays write, and where (`config.stream`).
    pub config: JetStreamRelayConfig,
    options: NatsOptions,
}

impl NatsBroker {
    /// A fresh stream for `test`, written by relays with `config` (its stream replaced);
    /// panics when NATS is unreachable.
    pub async fn new(test: &str, config: JetStreamRelayConfig) -> Self {
        let _ = admin().await;
        Self::with_stream(unique_stream(test), config)
    }

    /// [`NatsBroker::new`] with the fault tests' relay: batches of 200, 64 acknowledgements
    /// in flight.
    pub async fn for_faults(test: &str) -> Self {
        Self::new(test, Self::faults_config()).await
    }

    fn faults_config() -> JetStreamRelayConfig {
        JetStreamRelayConfig {
            batch_size: 200,
            max_in_flight: 64,
            ..JetStreamRelayConfig::default()
        }
    }

    fn with_stream(stream: StreamSettings, config: JetStreamRelayConfig) -> Self {
        Self {
            config: JetStreamRelayConfig { stream, ..config },
            options: NatsOptions::new(nats_url()),
        }
    }

    /// The stream the relays write.
    pub fn settings(&self) -> &StreamSettings {
        &self.config.stream
    }

    fn new_relay(&self) -> JetStreamRelay {
        JetStreamRelay::new(self.options.clone(), self.config.clone())
    }
}

impl Broker for NatsBroker {
    type Relay = JetStreamRelay;
    type Log = JetStreamLog;
    type Delivery = JetStreamDelivery;

    const NAME: &'static str = "NATS";
    const REFUSED: &'static str = "cannot connect to NATS";

    fn relay<L: GlobalLog>(
        &self,
        name: &str,
        log: L,
    ) -> es_core::Consumer<JetStreamRelay, L, JetStreamRelay> {
        self.new_relay().consumer(name, log)
    }

    async fn last_published(&self) -> u64 {
        self.new_relay()
            .last_published()
            .await
            .expect("read the broker")
    }

    async fn assert_holds(&self, log: &[RecordedEvent]) {
        assert_stream_holds(self.settings(), log).await;
    }

    async fn held(&self) -> usize {
        messages(self.settings()).await.len()
    }

    /// Deletes the stream (as a server that lost its storage would).
    async fn lose_data(&self) {
        admin()
            .await
            .delete_stream(&self.settings().name)
            .await
            .expect("delete the stream");
    }

    fn consumer_source(&self, name: &str) -> (JetStreamLog, JetStreamDelivery) {
        JetStreamSource::new(nats_url(), self.settings().clone()).durable_with(
            name,
            DurableSettings {
                ack_wait: Duration::from_secs(2),
                ..DurableSettings::default()
            },
        )
    }

    /// The durable consumer's ack floor: a stream sequence, which is the position in these
    /// tests (one relay, from an empty stream).
    async fn checkpoint(&self, name: &str) -> Option<u64> {
        let floor = admin()
            .await
            .get_stream(&self.settings().name)
            .await
            .expect("stream")
            .consumer_info(name)
            .await
            .expect("the durable consumer exists")
            .ack_floor
            .stream_sequence;
        Some(floor)
    }

    async fn cleanup(&self) {
        cleanup(self.settings()).await;
    }

    fn to_arg(&self) -> String {
        self.settings().name.clone()
    }

    fn from_arg(arg: &str) -> Self {
        Self::with_stream(
            StreamSettings::new(arg, arg.to_lowercase()),
            Self::faults_config(),
        )
    }

    fn address(&self) -> SocketAddr {
        "127.0.0.1:4222".parse().expect("addr")
    }

    /// Through the proxy, requests time out after 2 s, so a long outage makes publishes
    /// time out.
    fn through(&self, port: u16) -> Self {
        let mut options = NatsOptions::new(self.url_through(port));
        options.request_timeout = Duration::from_secs(2);
        Self {
            options,
            ..self.clone()
        }
    }

    fn url_through(&self, port: u16) -> String {
        format!("nats://127.0.0.1:{port}")
    }

    /// Connections dropped by the network and the server unreachable for a while, in turn;
    /// the last outage lasts longer than the request timeout (2 s), so publishes time out.
    fn faults(&self) -> Vec<Fault> {
        let outage = Fault::Outage(Duration::from_millis(400));
        vec![
            Fault::Drop,
            outage,
            Fault::Drop,
            outage,
            Fault::Drop,
            Fault::Outage(Duration::from_millis(3_000)),
        ]
    }
}
