//! # es-nats
//!
//! The global log of an es-core store published to a NATS JetStream stream, exactly once and
//! in position order, and read back by consumers on other machines with the same handler
//! code.
//!
//! - [`JetStreamRelay`]: a consumer of the global log ([`es_core::Consumer`]) whose handler
//!   publishes each event and whose checkpoint is the position in the stream's last message.
//!   It creates the stream, or checks that an existing one has the configured retention,
//!   replicas, dedupe window and limits ([`StreamSettings`]).
//! - [`JetStreamSource`]: the other side. [`JetStreamSource::durable`] gives the
//!   [`GlobalLog`](es_core::GlobalLog) and the [`Delivery`](es_core::Delivery) of one es-core
//!   consumer, both bound to a durable JetStream consumer whose ack floor is the checkpoint,
//!   so `Consumer::new(name, log, delivery, handler)` runs unchanged against the broker.
//!   Parked events live in a stream of their own.
//!
//! ## A message
//!
//! Subject `{prefix}.{AggregateType}.{AggregateId}` (default prefix `events`), each part
//! escaped by [`escape`]: ASCII letters, digits, `-` and `_` are kept, every other byte
//! becomes `=XX` (uppercase hex), the empty string `=`. So `Bank Account`/`acc.1` is
//! `events.Bank=20Account.acc=2E1`; the mapping is injective and [`unescape`] reverses it,
//! and consumers can filter by type (`events.BankAccount.>`) or stream.
//!
//! Body: the event's JSON payload, as stored. Headers: `Nats-Msg-Id` (the event id),
//! `Es-Position`, `Es-Previous` (the position published before it), `Es-Version`,
//! `Es-Event-Name`, `Es-Schema-Version`, `Es-Correlation-Id` and `Es-Causation-Id` (when
//! set), `Es-Aggregate-Type`, `Es-Aggregate-Id`, `Es-Recorded-At` (RFC 3339, nanoseconds,
//! UTC) and `Es-Envelope` (compact JSON of the stream, the event name and the metadata: the
//! exact values, which readers decode). See the constants in [`headers`].
//!
//! ## What "exactly once" means here
//!
//! The stream holds each committed event once, in position order, with no gap: its messages
//! are a prefix of the log (of the events the relay takes).
//!
//! - **The broker decides where to resume.** On start and after every failure the relay
//!   reads the stream's last message and resumes after the position in its `Es-Position`
//!   header; no checkpoint of its own can lag behind what was published.
//! - **In order, no gap, no double.** Every publish carries `Nats-Expected-Last-Sequence`:
//!   the stream stores it only if its last message is the one the relay published before
//!   it. Publishes are pipelined (up to [`JetStreamRelayConfig::max_in_flight`] acks
//!   awaited at once); if one is lost (connection dropped mid-batch), every later one is
//!   refused, the relay reads the stream again and resumes from what it holds. A second
//!   relay, or a publish the client resends after a reconnect, is refused the same way.
//! - **`Nats-Msg-Id` = the event id**, so the server also drops a repeat of an event within
//!   its dedupe window ([`StreamSettings::duplicate_window`], default 2 minutes).
//!
//! Where it stops:
//!
//! - **Retention.** The stream keeps messages per [`StreamSettings`] (by default: all).
//!   Limits that remove messages make a broker-side consumer that falls behind them fail
//!   with [`es_core::Error::Invalid`] naming the positions it would skip, instead of skipping
//!   them; a limit that removes the stream's *last* message while the relay is stopped (an
//!   idle relay with `max_age`, interest or work-queue retention) leaves the relay unable to
//!   tell where it was, and it refuses to start, saying so.
//! - **Dedupe window.** Beyond it, `Nats-Msg-Id` no longer catches a repeat; the
//!   expected-sequence check and the resume-from-the-stream rule still do, as long as only
//!   relays write to the stream.
//! - **Persistence and replicas.** "Holds" means acknowledged by JetStream: on file storage
//!   with the server's default sync policy (fsync every 2 minutes) a crash of a single
//!   server can lose acknowledged messages; replicas (3 in a cluster) are the safeguard.
//!   If the stream loses its tail, the relay publishes it again: it resumes from what the
//!   stream holds. If it loses the whole stream, it is recreated and filled again.
//! - **Message size.** An event whose message exceeds the server's `max_payload` (1 MiB by
//!   default) cannot be published: the relay stops there and reports it in its status,
//!   retrying, rather than skip it.
//! - **Broker-side consumers** are at least once: the ack floor moves after the handler ran
//!   (at least once a second, and when caught up), so a crash repeats what was handled
//!   since; handlers treat a repeat as a no-op, as every [`es_core::AtLeastOnce`] handler
//!   does.
//!
//! ## Running
//!
//! ```text
//! relay:     JetStreamRelay::new(url, JetStreamRelayConfig::default()).consumer("nats-relay", store).spawn()
//! consumer:  let (log, delivery) = JetStreamSource::new(url, StreamSettings::default()).durable("balances");
//!            Consumer::new("balances", log, delivery, handler).spawn()
//! ```
//!
//! Several relays may run at once without harm (the stream refuses what another already
//! wrote), but only one does useful work: give the relay's consumer a lease
//! ([`Consumer::lease`](es_core::Consumer::lease)) to keep the others waiting. A durable
//! source pair serves one process at a time: take a lease named like the consumer, and for
//! a partitioned consumer make one pair per partition, named like the partition's consumer
//! (`balances[0/4]`).
//!
//! ## Failures
//!
//! The relay connects on first use: started while NATS is down, it reports the error
//! (`cannot connect to NATS at nats://…: …`) in its
//! [`Status::last_error`](es_core::Status::last_error) with state `Retrying`, and retries
//! with backoff (100 ms doubling to 5 s) for as long as it takes. Once connected, the client
//! reconnects by itself; publishes that fail meanwhile are reported the same way and the
//! batch is re-read from the stream's last position, so nothing is lost or doubled.
#![doc(test(attr(deny(warnings))))]

mod codec;
mod conn;
mod relay;
mod source;
mod stream;
mod subject;

/// The header names of a relayed message.
pub mod headers {
    pub use crate::codec::{
        AGGREGATE_ID, AGGREGATE_TYPE, CAUSATION_ID, CORRELATION_ID, ENVELOPE, NAME, POSITION,
        PREVIOUS, RECORDED_AT, SCHEMA_VERSION, VERSION,
    };
}

pub use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
pub use conn::NatsOptions;
pub use relay::{JetStreamRelay, JetStreamRelayConfig};
pub use source::{DurableSettings, JetStreamDelivery, JetStreamLog, JetStreamSource};
pub use stream::StreamSettings;
pub use subject::{escape, event_subject, unescape};
