//! The es-redis side of the tests: the local Redis, unique keys, what a stream holds, and
//! the [`Broker`] the shared scenarios run against. The rest comes from `relay-testing`.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use es_core::{AtLeastOnce, CheckpointStore, GlobalLog, RecordedEvent};
use es_redis::{
    Keys, Layout, RedisCheckpoints, RedisLog, RedisOptions, RedisRelay, RedisRelayConfig,
};
use redis::Value;
pub use relay_testing::scenarios::{self, Broker, Fault};
pub use relay_testing::*;

/// The Redis the tests use (`REDIS_URL`, default the local one).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A connection for checks, panicking loudly when Redis is unreachable: a test never passes
/// by skipping.
pub async fn admin() -> redis::aio::MultiplexedConnection {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).expect("REDIS_URL is a valid URL");
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(60)));
    match client
        .get_multiplexed_async_connection_with_config(&config)
        .await
    {
        Ok(connection) => connection,
        Err(e) => panic!(
            "Redis is not reachable at {url} ({e}): these tests need it (`.ci/run` starts it)"
        ),
    }
}

/// A key prefix no other test (or test run) uses.
pub fn unique_prefix(test: &str) -> String {
    format!("es-redis-test:{test}:{}:", unique_suffix())
}

/// Deletes every key under `prefix`.
pub async fn cleanup(prefix: &str) {
    let mut connection = admin().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .exec_async(&mut connection)
            .await
            .expect("DEL");
    }
}

/// The whole of a Redis stream, decoded field by field (independently of the crate's codec).
pub async fn stream_entries(key: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut connection = admin().await;
    let mut entries: Vec<(String, Vec<(String, String)>)> = Vec::new();
    loop {
        let start = entries
            .last()
            .map_or("-".to_owned(), |(id, _)| format!("({id}"));
        let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(key)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(2_000)
            .query_async(&mut connection)
            .await
            .expect("XRANGE");
        if page.is_empty() {
            return entries;
        }
        entries.extend(page);
    }
}

/// Asserts that the whole-log stream `key` holds exactly `log`, in order, field for field.
pub async fn assert_stream_holds(key: &str, log: &[RecordedEvent]) {
    let entries = stream_entries(key).await;
    let positions: Vec<u64> = entries
        .iter()
        .map(|(id, _)| {
            id.trim_end_matches("-0")
                .parse()
                .expect("id is {position}-0")
        })
        .collect();
    assert_positions(key, &positions, log);
    for ((id, fields), event) in entries.iter().zip(log) {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(f, _)| f == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("entry {id} has no field {name}"))
        };
        assert_eq!(get("event_id"), event.event_id.to_string(), "entry {id}");
        assert_eq!(
            get("aggregate_type"),
            event.stream.aggregate_type,
            "entry {id}"
        );
        assert_eq!(get("aggregate_id"), event.stream.aggregate_id, "entry {id}");
        assert_eq!(get("version"), event.version.to_string(), "entry {id}");
        assert_eq!(get("position"), event.position.to_string(), "entry {id}");
        assert_eq!(get("payload"), event.payload.get(), "entry {id}");
    }
}

/// Kills (`CLIENT KILL ID`) every connection named `name`; how many there were. Targeted by
/// name rather than `CLIENT KILL TYPE normal`, which would also cut the connections of other
/// tests running at the same time.
pub async fn kill_clients(name: &str) -> usize {
    let mut connection = admin().await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut connection)
        .await
        .expect("CLIENT LIST");
    let ids: Vec<String> = list
        .lines()
        .filter(|line| line.split(' ').any(|kv| kv == format!("name={name}")))
        .filter_map(|line| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix("id=").map(str::to_owned))
        })
        .collect();
    for id in &ids {
        let _: Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut connection)
            .await
            .unwrap_or(Value::Nil);
    }
    ids.len()
}

/// Waits until the connection named `name` is blocked in a command (`CLIENT LIST` flag `b`),
/// as a blocking `XREAD` is once it has nothing more to return.
pub async fn wait_until_blocked(name: &str) {
    let mut connection = admin().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut connection)
            .await
            .expect("CLIENT LIST");
        let blocked = list.lines().any(|line| {
            let mut fields = line.split(' ');
            let named = fields.clone().any(|kv| kv == format!("name={name}"));
            named && fields.any(|kv| kv.strip_prefix("flags=").is_some_and(|f| f.contains('b')))
        });
        if blocked {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection named {name} never blocked: {list}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Redis under test, with the relay configuration the test gives.
#[derive(Debug, Clone)]
pub struct RedisBroker {
    /// What the relays write, and where (`config.keys`).
    pub config: RedisRelayConfig,
    options: RedisOptions,
}

impl RedisBroker {
    /// Fresh keys for `test`, written by relays with `config` (its keys replaced); panics
    /// when Redis is unreachable.
    pub async fn new(test: &str, config: RedisRelayConfig) -> Self {
        let _ = admin().await;
        Self::with_keys(Keys::new(unique_prefix(test)), config)
    }

    /// [`RedisBroker::new`] with the fault tests' relay: both layouts, small chunks and
    /// batches (many script calls and pipelines, so faults land between them).
    pub async fn for_faults(test: &str) -> Self {
        Self::new(test, Self::faults_config()).await
    }

    fn faults_config() -> RedisRelayConfig {
        RedisRelayConfig {
            chunk_size: 25,
            batch_size: 200,
            ..RedisRelayConfig::default().layout(Layout::Both)
        }
    }

    fn with_keys(keys: Keys, config: RedisRelayConfig) -> Self {
        Self {
            config: RedisRelayConfig { keys, ..config },
            options: RedisOptions::new(redis_url()),
        }
    }

    /// The keys the relays write.
    pub fn keys(&self) -> &Keys {
        &self.config.keys
    }

    fn checkpoints(&self) -> RedisCheckpoints {
        RedisCheckpoints::new(redis_url(), self.keys()).expect("checkpoints")
    }
}

impl Broker for RedisBroker {
    type Relay = RedisRelay;
    type Log = RedisLog;
    type Delivery = AtLeastOnce<RedisCheckpoints>;

    const NAME: &'static str = "Redis";
    const REFUSED: &'static str = "connection refused";

    fn relay<L: GlobalLog>(
        &self,
        name: &str,
        log: L,
    ) -> es_core::Consumer<RedisRelay, L, RedisRelay> {
        RedisRelay::new(self.options.clone(), self.config.clone())
            .expect("relay")
            .consumer(name, log)
    }

    async fn last_published(&self) -> u64 {
        RedisRelay::new(self.options.clone(), self.config.clone())
            .expect("relay")
            .last_published()
            .await
            .expect("read the broker")
    }

    /// The whole-log stream and every per-type stream, as the layout writes them.
    async fn assert_holds(&self, log: &[RecordedEvent]) {
        if self.config.layout != Layout::PerType {
            assert_stream_holds(&self.keys().all(), log).await;
        }
        if self.config.layout != Layout::All {
            for aggregate_type in TYPES {
                let of_type: Vec<_> = log
                    .iter()
                    .filter(|e| e.stream.aggregate_type == aggregate_type)
                    .cloned()
                    .collect();
                assert_stream_holds(&self.keys().per_type(aggregate_type), &of_type).await;
            }
        }
    }

    async fn held(&self) -> usize {
        stream_entries(&self.keys().all()).await.len()
    }

    /// Deletes the whole-log stream (a restart without persistence).
    async fn lose_data(&self) {
        redis::cmd("DEL")
            .arg(self.keys().all())
            .exec_async(&mut admin().await)
            .await
            .expect("DEL");
    }

    fn consumer_source(&self, _name: &str) -> (RedisLog, AtLeastOnce<RedisCheckpoints>) {
        let log = RedisLog::new(redis_url(), self.keys()).expect("source");
        let delivery = self
            .checkpoints()
            .delivery()
            .with_interval(Duration::from_millis(20));
        (log, delivery)
    }

    /// The last-delivered id of the consumer's group.
    async fn checkpoint(&self, name: &str) -> Option<u64> {
        self.checkpoints()
            .load_checkpoint(name)
            .await
            .expect("read the group")
    }

    async fn cleanup(&self) {
        cleanup(self.keys().prefix()).await;
    }

    fn to_arg(&self) -> String {
        self.keys().prefix().to_owned()
    }

    fn from_arg(arg: &str) -> Self {
        Self::with_keys(Keys::new(arg), Self::faults_config())
    }

    fn address(&self) -> SocketAddr {
        "127.0.0.1:6379".parse().expect("addr")
    }

    /// Through the proxy, the relays' connections carry a name of their own, for
    /// [`Broker::kill_relay_connections`].
    fn through(&self, port: u16) -> Self {
        let name = format!("es-redis-test-{}", unique_suffix());
        Self {
            options: RedisOptions::new(self.url_through(port)).client_name(name),
            ..self.clone()
        }
    }

    fn url_through(&self, port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }

    /// Connections closed by the server (CLIENT KILL) and by the network, and the server
    /// unreachable for a while, twice each.
    fn faults(&self) -> Vec<Fault> {
        let outage = Fault::Outage(Duration::from_millis(300));
        vec![
            Fault::Kill,
            Fault::Drop,
            outage,
            Fault::Kill,
            Fault::Drop,
            outage,
        ]
    }

    async fn kill_relay_connections(&self) -> usize {
        kill_clients(
            self.options
                .client_name
                .as_deref()
                .expect("a proxied broker"),
        )
        .await
    }
}
