//! # es-postgres
//!
//! es-core's event store on PostgreSQL through sqlx: [`PostgresStore`] implements
//! [`StreamStore`](es_core::StreamStore), [`SnapshotStore`](es_core::SnapshotStore),
//! [`GlobalLog`](es_core::GlobalLog) (a global order that never skips, filtered in the
//! database, woken by `LISTEN`/`NOTIFY`), [`CheckpointStore`](es_core::CheckpointStore) (with
//! parked events) and [`Leases`](es_core::Leases); [`ExactlyOnce`] is the consumer runtime's
//! delivery whose unit of work is a transaction ([`PgTx`]), so a read model and its checkpoint
//! commit together; [`InlineProjection`]s run inside the append itself. Migrations ship with
//! the crate ([`MIGRATOR`]).
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
//! ## Cancellation safety
//!
//! Any future this crate returns may be dropped at any await point without leaving a
//! transaction open on a pooled connection or an append half done. A plain append runs as
//! autocommit statements on a pooled connection, so a dropped append has committed whole or
//! not at all, and a later read (or a retry with the same event ids, which returns the stored
//! events) tells which. Everything that needs a transaction (appends with inline projections,
//! [`PostgresStore::append_in`], [`ExactlyOnce`] batches) runs in a [`PgTx`], which counts as
//! open from before its `BEGIN` is sent until its `COMMIT` or `ROLLBACK` is answered; dropped
//! while open, it closes its connection instead of returning it to the pool, so PostgreSQL
//! rolls the transaction back and no later borrower runs inside it. The crate never calls
//! sqlx's `Pool::begin`, whose transaction counts as open only after `BEGIN` is answered
//! (sqlx 0.9: a future dropped during that round trip returns the connection to the pool
//! inside a server-side transaction, where later autocommit appends report success and
//! vanish). Applications should open their transactions with [`PostgresStore::begin`] for
//! the same reason. A write whose connection fails after it was sent is
//! [`Error::OutcomeUnknown`](es_core::Error::OutcomeUnknown): retry with the same ids or
//! command key.
//!
//! ## Schema
//!
//! Everything lives in one schema (default `public`; any plain lower-case identifier,
//! validated, then quoted: never interpolated unchecked):
//!
//! | table | columns | keys |
//! |---|---|---|
//! | `events` | `position` (identity, `CACHE 1`, at most 2^48 - 1), `event_id`, `aggregate_type`, `aggregate_id`, `version`, `event_name`, `schema_version`, `payload jsonb`, `metadata jsonb`, `recorded_at` | primary key `position`; unique `event_id`; unique `(aggregate_type, aggregate_id, version)`; `(aggregate_type, position)`; `(event_name, position)` |
//! | `snapshots` | `aggregate_type`, `aggregate_id`, `version`, `state_version`, `state jsonb`, `taken_at` | primary key the stream |
//! | `checkpoints` | `name`, `position`, `updated_at` | primary key `name` |
//! | `parked_events` | `consumer`, `position`, `event_id`, the stream, `version`, `event_name`, `error`, `attempts`, `parked_at` | primary key `(consumer, position)` |
//!
//! **Append-only.** A trigger refuses `UPDATE`, `DELETE` and `TRUNCATE` on `events`, whoever
//! sends them. Erasure tooling has one deliberate way through: `SET LOCAL
//! es.allow_event_changes = 'on'` inside its own transaction (see the migration
//! `20250301000004_append_only.sql`).
//!
//! ## Input rules and errors
//!
//! Appends, snapshots, checkpoints and parked events are checked by es-core's
//! [`Limits`](es_core::Limits) before any I/O ([`StoreOptions::limits`],
//! [`StoreOptions::max_payload_bytes`]), so what this store refuses the others refuse with the
//! same [`Error::Invalid`](es_core::Error::Invalid). Rows decode into typed structs; a value
//! out of range or unreadable metadata is [`Error::BadRow`](es_core::Error::BadRow) naming the
//! stream, version and position, and a payload the code cannot decode is
//! [`Error::Decode`](es_core::Error::Decode) from es-core. How database failures map to
//! errors (`Backend`, `OutcomeUnknown`, `Invalid`) is tabled in the `error` module's source;
//! a refused connection says so at once, with its cause and without the URL's password
//! ([`ConnectError`]).
//!
//! ## Appending
//!
//! One statement, one round trip, all or nothing. The first attempt is a plain-SQL
//! `INSERT ... SELECT` (scalar parameters for one event, the batch bound as arrays and
//! `unnest`ed for more) that checks only what the unique keys cannot: that the expected
//! version exists (an append at `Exact(v)` onto a shorter stream would leave a gap) and, for
//! `StreamExists`, that the stream does. Everything else is left to the unique keys: a
//! version or an event id that is taken fails the statement. The look for version `v` is
//! left out when the store has seen version `v` or later of the stream committed (it wrote,
//! read or was told of it: events are never deleted), as for every append of a repository
//! and every successive append of one writer.
//!
//! Only when that attempt wrote nothing does the store call the plpgsql function
//! `es_append`, which tells the cases apart: it checks the ids first (all stored with the
//! same content: an idempotent retry, the stored events are returned whatever the expected
//! version; only some, or other content: [`Error::DuplicateEventId`](es_core::Error::DuplicateEventId)),
//! then the expected version against the stream's last version
//! ([`Error::Conflict`](es_core::Error::Conflict) with the actual version), and appends if
//! both pass. `Any` and `StreamExists` retry a lost race, since they still accept the new end.
//! Appends with inline projections do the same inside a transaction, and retry a lost race in
//! a new one, so they keep the plain append's contract.
//!
//! **Group commit** ([`StoreOptions::group_commit`], on by default). At most one plain append
//! per pooled connection but one runs at once; appends that arrive while all are busy (to
//! other streams) wait and leave together as one statement, one transaction, one
//! announcement: fewer commits and round trips under load, while a writer never waits for a
//! partner when a connection is free.
//! Each member keeps its own outcome: the statement writes a member only if its expectation
//! holds and none of its ids is stored (else that member alone goes through `es_append`:
//! conflict, idempotent retry, duplicate id); a statement refused by a unique key (a race
//! with an append still open elsewhere) writes nothing and every member appends alone; a
//! connection lost after the statement was sent is
//! [`Error::OutcomeUnknown`](es_core::Error::OutcomeUnknown) for every member, whose retries
//! with the same ids return what was stored.
//!
//! ## Global order that never skips
//!
//! Positions come from a sequence, so a transaction that drew position 10 can commit after one
//! that drew 11: a follower that read 11 and moved on would lose 10. Serialising writers
//! avoids it at the cost of all concurrency; waiting out gaps with a timeout still skips slow
//! commits. Storing `pg_current_xact_id()` and reading only below
//! `pg_snapshot_xmin(pg_current_snapshot())` *in position order* is not enough either:
//! transaction ids are assigned in one order and positions drawn in another (transaction 101
//! draws position 5, transaction 100 draws 6 and commits; xmin is 101, so a follower returns 6
//! and later misses 5). A follower that orders and checkpoints by the pair (xid, position)
//! does not skip (it reads (100, 6), then (101, 5)), and its writers announce nothing; this
//! store does not use it, for its costs elsewhere: the position a consumer checkpoints
//! becomes a pair, where es-core's log, checkpoints, consumers and relays all carry one
//! `u64` (packing the pair into one number would renumber stored events and cap the events
//! of a transaction); the frontier would stop at the oldest transaction holding an xid
//! anywhere in the cluster (any database, an idle-in-transaction session, a forgotten
//! prepared transaction, the batch transactions of [`ExactlyOnce`] consumers), where this
//! store's stops only at open appends of its own schema; and xids restart in a restored or
//! logically replicated copy, so new events would sort before old ones. Its write path saves
//! less than it sounds: see the `xid8` lever of `bench/compare/RESULTS.md`.
//!
//! This store instead makes every in-flight append *visible* before it draws a position: each
//! append statement reads the sequence's `last_value` (a lower bound of anything it will
//! draw, because a `CACHE 1` sequence hands values out in real-time order) and takes a
//! shared, transaction-scoped advisory lock whose key encodes that bound and a tag of the
//! store's schema. `pg_locks` is not transactional: the lock is visible to every session from
//! the moment it is granted until the append commits or rolls back. A read of the log
//! (`es_read_log`, `es_head`) first computes the frontier `F = min(next value of the
//! sequence, smallest bound announced in this schema)`, reading the sequence and then
//! `pg_locks`, and only *then* takes the snapshot it reads rows with (a new statement of a
//! VOLATILE plpgsql function in READ COMMITTED), returning rows below `F`.
//!
//! Why nothing is skipped: take a row `q` that is not visible to that snapshot (it commits
//! later). If `q` drew its position after the sequence read, its position is at least the
//! next value, so at least `F`. If it drew before, its lock was granted before that and is
//! still held at the `pg_locks` read (`q` commits after the snapshot, which comes later), so
//! `F` is at most `q`'s bound, at most its position. Either way `q` lands at or above `F`.
//! So a page that is not full has considered every position below `F`: its
//! [`LogPage::scanned_to`](es_core::LogPage::scanned_to) is `F - 1` (or the filter's `before`
//! bound), and a consumer may checkpoint it even when nothing matched. Reads refuse to run in
//! REPEATABLE READ or SERIALIZABLE transactions, whose snapshot would predate the frontier.
//!
//! The key is `69 << 24 | tag << 16 | bound >> 32` and `bound & 0xffffffff`, with `tag` in
//! 1..=255 derived from the schema name (`es_schema_tag()`); positions stay below 2^48 (the
//! sequence's `MAXVALUE`: beyond it appends fail, they never announce a truncated bound).
//! Followers of one schema read only their schema's announcements (and untagged ones from
//! older builds), so a long append in one schema does not hold back another. Two schemas
//! whose tags collide (1 in 255) see each other's announcements, which can only delay their
//! followers, never make them skip; so can a foreign advisory lock with the same top byte.
//! Rows written to `events` by hand, without an announcement, are not covered.
//!
//! What it costs: writers never wait for each other (shared locks never conflict); each
//! append statement (one per group under group commit) adds a sequence read and a lock-table
//! entry (see BENCHMARKS.md); each read of the log scans `pg_locks` once (a consumer far
//! behind reads ahead below one frontier, see below). A long-running append holds the
//! schema's followers back until it ends.
//!
//! ## Filtered reads
//!
//! A [`LogFilter`](es_core::LogFilter) runs in the database: a filter on event names reads
//! each name through the `(event_name, position)` index, a filter on aggregate types through
//! `(aggregate_type, position)`, at most one page of each, merged in position order; the time
//! bound and the other dimension filter those rows. So a sparse consumer reads what it takes,
//! and its `scanned_to` still moves over everything it skipped.
//!
//! ## Followers and consumers
//!
//! [`GlobalLog::wakeup`](es_core::GlobalLog::wakeup) wakes followers at once after this
//! store's appends commit, and after other processes' appends through `LISTEN` on the channel
//! `es_events_<schema>` (one task and connection per store, reconnecting on failure), with a
//! polling fallback ([`StoreOptions::poll_interval`]). Appends send the `NOTIFY` after their
//! commit from a per-store task that coalesces them ([`StoreOptions::notify_interval`]): inside
//! the append, PostgreSQL would serialise the commits of notifying transactions across the
//! server. Consumers run on es-core's runtime ([`es_core::Consumer`]) with
//! [`ExactlyOnce`] or [`AtLeastOnce`](es_core::AtLeastOnce) delivery; leases are session
//! advisory locks (see [`Leases` for `PostgresStore`](PostgresStore#impl-Leases-for-PostgresStore)).
//!
//! A consumer far behind the head (a rebuild, a catch-up) is read ahead
//! ([`StoreOptions::read_ahead`], on by default): after a full page well below the frontier,
//! the store reads and decodes the following pages up to that frontier in the background,
//! with plain indexed reads (every position below a frontier is settled, so they need no
//! `pg_locks` scan of their own), while the consumer handles the current page. The pages are
//! the ones fresh reads would return.
//!
//! **Stop consumers before dropping their schema.** An [`ExactlyOnce`] batch holds row locks
//! on its checkpoint (and its handler's tables) until it commits; a `DROP SCHEMA ... CASCADE`
//! sent meanwhile waits for them, and the batch's next statement then waits for the drop's
//! locks: PostgreSQL resolves it as a deadlock and one of the two fails.
#![doc(test(attr(deny(warnings))))]

mod checkpoint;
mod delivery;
mod error;
mod group;
mod known;
mod lease;
mod log;
mod notifier;
mod projection;
mod read_ahead;
mod rows;
mod sql;
mod store;
mod tx;
mod wakeup;

pub use delivery::ExactlyOnce;
pub use error::{ConnectError, redact_url};
pub use projection::InlineProjection;
pub use store::{MIGRATOR, PostgresStore, StoreOptions};
pub use tx::PgTx;

/// The sqlx this crate is built on, for the connection types in its signatures.
pub use sqlx;
