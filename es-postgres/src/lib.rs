//! # es-postgres
//!
//! The production [`EventStore`](es_core::EventStore) of es-core, on PostgreSQL through sqlx:
//! [`PostgresStore`] with migrations ([`MIGRATOR`]), appends in one round trip, reads, a global
//! log that never skips, snapshots, checkpoints, subscriptions
//! ([`PostgresStore::subscribe`]) and projections whose read models commit with their
//! checkpoint ([`TransactionalProjection`]) or with the append itself ([`InlineProjection`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), es_core::Error> {
//! use es_postgres::{PostgresStore, StoreOptions};
//! let store = PostgresStore::connect_with(
//!     "postgres://postgres@127.0.0.1:5432/postgres",
//!     StoreOptions::new().schema("ledger"),
//! ).await?; // connects and migrates
//! # let _ = store; Ok(()) }
//! # let _ = demo;
//! ```
//!
//! ## Schema
//!
//! Everything lives in one schema (default `public`; any plain lower-case identifier,
//! validated, then quoted: never interpolated unchecked):
//!
//! | table | columns | keys |
//! |---|---|---|
//! | `events` | `position` (identity, `CACHE 1`), `event_id`, `aggregate_type`, `aggregate_id`, `version`, `event_name`, `schema_version`, `payload jsonb`, `metadata jsonb`, `recorded_at` | primary key `position`; unique `event_id`; unique `(aggregate_type, aggregate_id, version)` |
//! | `snapshots` | `aggregate_type`, `aggregate_id`, `version`, `state_version`, `state jsonb`, `taken_at` | primary key the stream |
//! | `checkpoints` | `name`, `position`, `updated_at` | primary key `name` |
//!
//! The unique stream key serves stream reads, the version check and the optimistic-concurrency
//! backstop; the primary key serves the global log. No other index is needed.
//!
//! ## Appending
//!
//! One statement, one round trip, all or nothing, with the batch bound as arrays. The first
//! attempt is a plain-SQL `INSERT ... SELECT FROM unnest(...)` that checks only what the
//! unique keys cannot: that the expected version exists (an append at `Exact(v)` onto a
//! shorter stream would leave a gap) and, for `StreamExists`, that the stream does. It inserts
//! the rows in version order with `recorded_at = clock_timestamp()` taken once per batch on the
//! server, and returns each event's position, version and time. Everything else is left to
//! the unique keys: a version or an event id that is taken fails the statement.
//!
//! Only when that attempt wrote nothing does the store call the plpgsql function
//! `es_append`, which tells the cases apart: it checks the ids first (all stored with the
//! same content: an idempotent retry, the stored events are returned whatever the expected
//! version; only some, or other content: [`es_core::Error::DuplicateEventId`]), then the
//! expected version against the stream's last version ([`es_core::Error::Conflict`] with the
//! actual version), and appends if both pass (a concurrent writer took the version in
//! between). `Any` and `StreamExists` retry a lost race, since they still accept the new end.
//! So the common case costs one plain statement, and a conflict or a retry one more.
//! [`PostgresStore::append_in`], which runs in the caller's transaction where a failed
//! statement would abort it, calls `es_append` directly.
//!
//! ## Global order that never skips
//!
//! Positions come from a sequence, so a transaction that drew position 10 can commit after one
//! that drew 11: a follower that read 11 and moved on would lose 10. Serialising writers
//! avoids it at the cost of all concurrency; waiting out gaps with a timeout still skips slow
//! commits.
//!
//! The design recommended to us, storing `pg_current_xact_id()` and reading only rows whose
//! transaction id is below `pg_snapshot_xmin(pg_current_snapshot())` *in position order*, is
//! not enough on its own: transaction ids are assigned in one order and positions drawn in
//! another. Transaction 101 can draw position 5, then transaction 100 draws 6 and commits;
//! xmin is now 101, so a follower returns 6 and later misses 5 when 101 commits. That design
//! is only correct when followers order by `(transaction id, position)`, and then positions
//! are not increasing along the log, which es-core's contract requires.
//!
//! This store instead makes every in-flight append *visible* before it draws a position: each
//! append statement (the plain-SQL one and `es_append` alike) reads the sequence's
//! `last_value` (a lower bound of anything it will draw, because a `CACHE 1` sequence hands
//! values out in real-time order) and takes a shared, transaction-scoped advisory lock whose
//! key encodes that bound. `pg_locks` is not transactional: the lock is visible to every
//! session from the moment it is granted until the append commits or rolls back. A read of the log (`es_read_all`, `es_head`) first
//! computes the frontier `F = min(last_value + 1, smallest announced bound)`, reading the
//! sequence and then `pg_locks`, and only *then* takes the snapshot it reads rows with
//! (a new statement of a VOLATILE plpgsql function in READ COMMITTED), returning rows below
//! `F`.
//!
//! Why nothing is skipped: take a row `q` that is not visible to that snapshot (it commits
//! later). If `q` drew its position after the sequence read, its position is above
//! `last_value`, so at least `F`. If it drew before, its lock was granted before that (before
//! the `pg_locks` read) and is still held at the `pg_locks` read (`q` commits after the
//! snapshot, which comes later), so `F` is at most `q`'s bound, at most its position. Either
//! way `q` lands at or above `F`, above every row returned. The order of the three reads is
//! essential: an earlier version took the snapshot first and the test with slow appends caught
//! it skipping (an append could commit, releasing its lock, between the snapshot and the
//! `pg_locks` read). Reads therefore refuse to run in REPEATABLE READ or SERIALIZABLE
//! transactions, whose snapshot would predate the frontier.
//!
//! What it costs: writers never wait for each other (shared locks never conflict); each append
//! adds a sequence read and a lock-table entry (see BENCHMARKS.md); each read of the log scans
//! `pg_locks` once. A long-running append holds followers back until it ends, exactly as with
//! the xmin design, and only delays them. Several stores in one database share the frontier
//! (it is per database), which is conservative: it delays, never skips. No `xid8` column is
//! needed.
//!
//! Appends made with [`PostgresStore::append_in`] inside a caller's transaction keep the
//! guarantee (each one announces its own bound, and the first stays held until commit).
//!
//! ## Decoding
//!
//! The store returns [`es_core::RecordedEvent`]s with the raw stored payload; an unknown event
//! name, a schema version newer than the code, or a payload that does not fit the struct is
//! reported by [`es_core::RecordedEvent::decode`] as [`es_core::Error::Decode`] naming the
//! stream, version and event. A row whose envelope itself is unreadable (metadata of the wrong
//! shape) is an [`es_core::Error::Backend`] wrapping [`BadRow`], which names the stream and
//! version too. Nothing panics.
//!
//! ## Subscriptions and projections
//!
//! Appends wake subscriptions with a `NOTIFY` on the channel `es_events_<schema>`, sent after
//! the commit by a per-store background task that coalesces appends (at most one per
//! [`StoreOptions::notify_interval`]; switch off with [`StoreOptions::notify`]). It is not
//! sent inside the append: PostgreSQL serialises the commits of notifying transactions across
//! the whole server, which cost a third of the throughput of 8 concurrent writers. [`PostgresStore::subscribe`] listens first, catches up with
//! keyset pages, then waits for a notification or its polling interval, whichever comes first,
//! so a lost notification only delays. [`TransactionalRunner`] applies a batch and moves the
//! checkpoint in one transaction, holding the checkpoint row's lock, so effects happen exactly
//! once even across crashes and with several runners.
#![doc(test(attr(deny(warnings))))]

mod notifier;
mod projection;
mod schema;
mod store;
mod subscription;

pub use projection::{InlineProjection, TransactionalProjection, TransactionalRunner};
pub use store::{BadRow, MIGRATOR, PostgresStore, StoreOptions};
pub use subscription::SubscriptionOptions;

/// The sqlx this crate is built on, for the connection types in its signatures.
pub use sqlx;
