//! The brokers the ledger's log is relayed to (Redis Streams, NATS JetStream): `ledger relay`
//! publishes the store's log exactly once, and `serve --read-from` builds the in-memory read
//! models from a broker instead of the store, with the same handler.
//!
//! A broker name (`--broker-name`, default `events`) keeps several ledgers apart: on Redis
//! the keys `{name}:$all` (whole log) and `{name}:{AggregateType}`; on NATS the stream
//! `{NAME}` (upper case) on the subjects `{name}.>`.

use std::sync::Arc;
use std::time::Duration;

use es_core::{ConsumerHandle, Error, GlobalLog, Leases};
use es_nats::{JetStreamRelay, JetStreamRelayConfig, JetStreamSource, StreamSettings};
use es_redis::{Keys, Layout, RedisLog, RedisRelay, RedisRelayConfig};

use crate::read_models::ReadSide;
use crate::read_models::memory::MemoryViews;

/// A broker, from its URL: `redis://` or `rediss://` for Redis, `nats://` for NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// Redis Streams at this URL.
    Redis(String),
    /// NATS JetStream at this URL.
    Nats(String),
}

impl std::str::FromStr for Broker {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        match url.split_once("://").map(|(scheme, _)| scheme) {
            Some("redis" | "rediss") => Ok(Self::Redis(url.to_owned())),
            Some("nats") => Ok(Self::Nats(url.to_owned())),
            _ => Err("a broker URL starts with redis://, rediss:// or nats://".into()),
        }
    }
}

impl Broker {
    /// The name of the relay's consumer (and lease) on the store.
    pub fn relay_name(&self) -> &'static str {
        match self {
            Self::Redis(_) => "ledger-relay-redis",
            Self::Nats(_) => "ledger-relay-nats",
        }
    }

    /// Spawns the relay of `log` to this broker, under the single-active lease of its name
    /// from `leases` (another relay of the same store waits).
    pub fn relay<L: GlobalLog + 'static>(
        &self,
        log: L,
        leases: Arc<dyn Leases>,
        name: &str,
    ) -> Result<ConsumerHandle, Error> {
        let poll = Duration::from_millis(250);
        Ok(match self {
            Self::Redis(url) => {
                let config = RedisRelayConfig::new(keys(name)).layout(Layout::Both);
                let relay = RedisRelay::new(url.as_str(), config)?;
                relay
                    .consumer(self.relay_name(), log)
                    .lease(leases, poll)
                    .spawn()
            }
            Self::Nats(url) => {
                let config = JetStreamRelayConfig::new(stream(name));
                let relay = JetStreamRelay::new(url.as_str(), config);
                relay
                    .consumer(self.relay_name(), log)
                    .lease(leases, poll)
                    .spawn()
            }
        })
    }

    /// The read models in memory, replayed from the broker and kept live from it.
    pub async fn read_side(&self, name: &str) -> Result<Box<dyn ReadSide>, Error> {
        Ok(match self {
            Self::Redis(url) => {
                Box::new(MemoryViews::open(RedisLog::new(url.as_str(), &keys(name))?).await?)
            }
            Self::Nats(url) => {
                let source = JetStreamSource::new(url.as_str(), stream(name));
                Box::new(MemoryViews::open(source.durable("ledger-views").0).await?)
            }
        })
    }
}

fn keys(name: &str) -> Keys {
    Keys::new(format!("{name}:"))
}

fn stream(name: &str) -> StreamSettings {
    StreamSettings::new(name.to_uppercase(), name)
}
