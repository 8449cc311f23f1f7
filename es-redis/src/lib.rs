//! # es-redis
//!
//! The global log of an es-core store published to Redis Streams, exactly once and in
//! position order, and read back by consumers on other machines with the same handler code.
//!
//! - [`RedisRelay`]: a consumer of the global log ([`es_core::Consumer`]) whose handler writes
//!   each event to Redis and whose checkpoint is what Redis holds. Streams: one per aggregate
//!   type (`events:{AggregateType}`), one for the whole log (`events:$all`), or both
//!   ([`Layout`]); optional `PUBLISH events:{AggregateType}` with the JSON the system this
//!   replaces sent ([`publish_message`]); optional `MAXLEN ~` trimming.
//! - [`RedisLog`] and [`RedisCheckpoints`]: the other side. `RedisLog` is a
//!   [`GlobalLog`](es_core::GlobalLog) over the whole-log stream; `RedisCheckpoints` keeps
//!   each consumer's checkpoint as a consumer group's last-delivered id and its parked
//!   events in a hash. A projection built with
//!   `Consumer::new(name, RedisLog, AtLeastOnce::new(RedisCheckpoints), handler)` runs
//!   unchanged against the broker instead of the store.
//!
//! ## An entry
//!
//! Entry id `{position}-0`; fields ([`FIELDS`]): `event_id`, `aggregate_type`, `aggregate_id`,
//! `version`, `event_name`, `schema_version`, `payload` (the stored JSON, as stored),
//! `metadata` (JSON: `correlation_id`, `causation_id`, `user_id`, `extra`), `recorded_at`
//! (RFC 3339, nanoseconds, UTC) and `position`.
//!
//! ## What "exactly once" means here
//!
//! Redis holds each committed event once, in position order, with no gap: the stream's
//! entries are a prefix of the log (of the events the relay takes).
//!
//! - **Ids from positions.** An entry's id is its global position. Redis refuses an id not
//!   above the stream's last one, so an event can never be written twice, whatever crashes,
//!   retries or second relays do.
//! - **The broker decides where to resume.** On start and after every failure the relay
//!   reads the stream's last id (`XINFO STREAM`'s `last-generated-id`) and resumes after it;
//!   no checkpoint of its own can lag behind what was published.
//! - **No gap.** Each chunk is written by one Lua script (atomic in Redis) that skips what
//!   the stream already holds and writes an event only if the event before it is the
//!   stream's last: if Redis holds anything else (data lost by a restart, another writer),
//!   the script refuses (`ESGAP`), the relay reads the stream again and resumes from what it
//!   finds. With [`Layout::Both`] the whole-log and per-type entries (and the PUBLISH) of an
//!   event are written by the same script, so a crash never leaves one without the other;
//!   the resume point is the whole-log stream.
//!
//! Where it stops:
//!
//! - **Persistence.** "Holds" means "holds in memory" unless Redis persists: a restart of a
//!   Redis without persistence loses the streams (the relay then publishes the whole log
//!   again, and broker-side consumers, whose checkpoints were lost with the groups, start
//!   over), and with RDB snapshots or `appendfsync everysec` a crash loses the last second
//!   or snapshot interval the same way (the relay writes it again on its next batch: the
//!   script notices that the stream is behind). Only `appendonly yes` with
//!   `appendfsync always` makes an acknowledged write survive a crash of Redis. The Redis
//!   these tests run against has no persistence at all (`save ""`, `appendonly no`).
//! - **Retention.** With `MAXLEN ~ n`, entries beyond the last ~n are gone; a broker-side
//!   consumer that falls further behind gets [`es_core::Error::Invalid`] from
//!   [`RedisLog`] naming the positions it would skip, instead of skipping them.
//! - **Deleting the stream** (`DEL`, or a flush) makes the relay publish everything again.
//! - **Live PUBLISH** is at most once, as Redis pub/sub is: a subscriber that is not
//!   connected when an event is first written never gets its message (it can read the
//!   stream). It is sent once per event, by the script that first writes the entry.
//! - **Broker-side consumers** are at least once (checkpoint saved after handling, at most
//!   once a second and when caught up): their handlers must treat a repeat as a no-op, as
//!   every [`es_core::AtLeastOnce`] handler does.
//! - **Cluster.** The scripts touch several keys; on Redis Cluster every key must hash to one
//!   slot (a prefix with a hash tag, e.g. `{events}:`). Only single-node Redis is tested.
//!
//! ## Running
//!
//! ```text
//! relay:     RedisRelay::new(url, RedisRelayConfig::default())?.consumer("redis-relay", store).spawn()
//! consumer:  Consumer::new("balances", RedisLog::new(url, &Keys::default())?,
//!                          RedisCheckpoints::new(url, &Keys::default())?.delivery(), handler).spawn()
//! ```
//!
//! Several relays may run at once without harm (the script skips what another already
//! wrote), but only one does useful work: give the relay's consumer a lease
//! ([`Consumer::lease`](es_core::Consumer::lease)) to keep the others waiting. `RedisLog` is
//! read by position, so it also serves views rebuilt at every start
//! (`AtLeastOnce::new(LocalCheckpoints::new())`) and partitioned consumers.
//!
//! ## Failures
//!
//! The relay connects on first use: started while Redis is down, it reports the error
//! (`cannot connect to Redis at redis://…: connection refused`) in its
//! [`Status::last_error`](es_core::Status::last_error) with state `Retrying`, and retries
//! with backoff (100 ms doubling to 5 s) for as long as it takes. A connection that breaks
//! mid-run is dropped and made again; the batch in flight is re-read from the broker's last
//! position, so nothing is lost or doubled.
#![doc(test(attr(deny(warnings))))]

mod codec;
mod conn;
mod keys;
mod relay;
mod source;

pub use codec::{FIELDS, publish_message};
pub use conn::RedisOptions;
pub use keys::{Keys, Layout};
pub use relay::{RedisRelay, RedisRelayConfig};
pub use source::{RedisCheckpoints, RedisLog};
