//! # relay-testing
//!
//! What the tests and benchmarks of the relays (`es-redis`, `es-nats`) share: a dev-only crate,
//! never published.
//!
//! - [`events`]: writers on a source store (events that exercise the JSON round trip, many
//!   streams and aggregate types), the log read back, a seeded generator, unique names.
//! - [`check`]: what a broker holds compared with the log (positions in order, no duplicate,
//!   nothing missing), a log read back in pages, a follower that must see every event.
//! - [`proxy`]: a TCP proxy that refuses and drops connections on demand.
//! - [`file_log`]: the log mirrored to a file, so that a child process can relay it.
//! - [`postgres`]: the PostgreSQL store of the PostgreSQL-backed variants.
//! - [`scenarios`]: the fault scenarios every relay runs, written once against the
//!   [`Broker`](scenarios::Broker) trait: relays killed at random points (in-process and
//!   SIGKILLed child processes) while writers append, two relays at once and a broker that
//!   lost its data, a broker refusing and dropping connections, a broker-side consumer
//!   crashing and resuming from its checkpoint.
//! - [`bench`]: the events, store filling and latency measurement of the relay benchmarks.
//!
//! Everything panics on failure with a message naming what failed: these are test helpers.

pub mod bench;
pub mod check;
pub mod events;
pub mod file_log;
pub mod postgres;
pub mod proxy;
pub mod scenarios;

pub use check::{assert_positions, assert_same_events, follow, read_in_pages};
pub use events::{Rng, TYPES, canonical, log_of, new_event, stream_of, unique_suffix, write};
pub use file_log::{FileLog, mirror_to_file};
pub use postgres::{database_url, drop_schema, postgres_store, unique_schema};
pub use proxy::Proxy;
