//! # es-sqlite
//!
//! The embedded [`EventStore`](es_core::EventStore) of es-core: one SQLite file (bundled
//! SQLite through sqlx, WAL mode), with the same semantics as every other store and the same
//! conformance suite. [`SqliteStore`] implements [`StreamStore`](es_core::StreamStore),
//! [`SnapshotStore`](es_core::SnapshotStore), [`GlobalLog`](es_core::GlobalLog),
//! [`CheckpointStore`](es_core::CheckpointStore) and [`Leases`](es_core::Leases);
//! [`Transactional`] is the consumer runtime's exactly-once [`Delivery`](es_core::Delivery),
//! whose [`Tx`] holds the handler's writes and the checkpoint in one SQLite transaction.
//!
//! ```no_run
//! # async fn demo() -> Result<(), es_core::Error> {
//! use es_sqlite::{SqliteStore, StoreOptions};
//! let store = SqliteStore::open_with("ledger.db", StoreOptions::new()).await?; // creates, migrates
//! # let _ = store; Ok(()) }
//! # let _ = demo;
//! ```
//!
//! ## Schema
//!
//! Created and updated by [`MIGRATOR`] (`es-sqlite/migrations`) when a store opens, in one
//! immediate transaction, so processes opening a new file together migrate it once. Tables
//! are `STRICT`: a column holds the type the store wrote or nothing.
//!
//! | table | columns | keys and indexes |
//! |---|---|---|
//! | `events` | `position` (the rowid), `event_id` (16-byte blob), `aggregate_type`, `aggregate_id`, `version`, `event_name`, `schema_version`, `payload` (JSON text as appended), `correlation_id`, `causation_id`, `user_id`, `extra` (JSON object or NULL), `recorded_at` (µs since the epoch) | primary key `position`; unique `event_id`; unique `(aggregate_type, aggregate_id, version)`; `(aggregate_type, position)` and `(event_name, position)` for filtered log reads |
//! | `snapshots` | stream, `version`, `state_version`, `state` (JSON text), `taken_at` (µs) | primary key the stream |
//! | `checkpoints` | `name`, `position`, `updated_at` (µs) | primary key `name` |
//! | `parked_events` | `consumer`, `position`, `event_id`, stream, `version`, `event_name`, `error`, `attempts`, `parked_at` (µs) | primary key `(consumer, position)` |
//! | `leases` | `name`, `holder`, `expires_at` (ms) | primary key `name` |
//!
//! `events` is append-only: triggers refuse UPDATE and DELETE from any connection, as on
//! PostgreSQL. Future erasure tooling drops the triggers in one deliberate maintenance
//! transaction and re-creates them from their migration.
//!
//! Payloads and snapshot states are stored as the JSON text they were given after es-core's
//! [`Limits`](es_core::Limits) checks (which rewrite negative zero as zero, as every store
//! does), so what is read back is that text, byte for byte: floats, key order and spacing
//! included. Times are kept to the microsecond, as PostgreSQL keeps them; an append returns
//! the time it stored.
//!
//! ## Appends and the global log
//!
//! An append is one write transaction on the store's writer connection, begun with
//! `BEGIN IMMEDIATE` (so it takes the file's write lock first and never has to upgrade a read
//! lock, which is where SQLite reports a busy file without waiting). Under the lock it reads
//! the stream's version and the log's head in one statement, checks the expectation, and
//! inserts the batch with multi-row `INSERT`s at the next versions and positions; a stored
//! event id shows up either as the expectation failing or as the unique key on `event_id`
//! refusing the insert, and then the stored events are compared with the batch
//! (an idempotent retry returns them; other content is
//! [`DuplicateEventId`](es_core::Error::DuplicateEventId)). Then it commits. Nothing is
//! written by a failed append.
//!
//! **The global log never skips.** SQLite has one writer at a time per file, across
//! connections and processes. A position is assigned inside the write transaction as the
//! head plus one, and the transaction commits before the lock passes on; so commits happen
//! in position order, and every committed state of the file holds exactly the positions
//! 1..head. A reader, on any connection of any process, reads one WAL snapshot per statement:
//! a committed state. [`GlobalLog::read_log`](es_core::GlobalLog::read_log) reads its page
//! and the head *in one statement*, and reports as `scanned_to` the head of that same
//! snapshot (or the last event of a full page): any append not yet visible to it will
//! commit later, at a higher position. Positions have no gaps (a rolled-back append never
//! became visible, and the next one reuses its positions). Filters (aggregate types, event
//! names, time, an upper position) run in SQL: a list of up to 16 aggregate types (or, without
//! types, event names) reads each value's index in position order, stopping at the page's
//! limit, and merges them; longer lists, and the unfiltered log, read the primary key in
//! position order. No page sorts every matching event.
//!
//! ## Durability
//!
//! WAL mode with `synchronous = FULL` by default ([`Durability::Full`]): the WAL is synced at
//! every commit, so an append that returned survives a power loss or an OS crash, as the
//! framework promises for an acknowledged write. `NORMAL` ([`Durability::Normal`]) syncs only
//! at checkpoints: it survives a crash of the process but may lose the last commits on power
//! loss; choose it knowingly (BENCHMARKS.md has both). Foreign keys are on for every
//! connection (for read-model tables kept in the same file).
//!
//! ## Cancellation
//!
//! Every write of more than one statement (appends, a consumer's batch, a user's
//! [`SqliteStore::begin`]) runs in a [`Tx`], which issues its own `BEGIN IMMEDIATE` and, if
//! dropped before its `COMMIT` or `ROLLBACK` completed, closes its connection instead of
//! returning it to the pool: closing rolls back what was not committed. A dropped append is
//! committed whole or not at all, and no pooled connection is ever left inside a
//! transaction. (sqlx's own transaction type queues a `ROLLBACK` on drop for the next user of
//! the connection to run first; that works on SQLite's one-thread-per-connection worker too,
//! but a closed connection needs no such ordering argument. The migrations, which nest
//! savepoints, use it.) Single-statement writes (snapshots, checkpoints, parked events,
//! leases) commit on their own, so a dropped one is done or not.
//!
//! ## Several processes on one file
//!
//! Any number of processes may open the same file (on a local file system: WAL needs shared
//! memory). Within a process, writes queue for the store's one writer connection, in order.
//! Across processes they serialise on SQLite's write lock. SQLite's own busy handler sleeps
//! ever longer between tries (up to 100 ms), so a process waiting behind a busy one rarely
//! meets the short gap between its transactions; the writer connection therefore waits in
//! slices of 20 ms, and the store tries again after a millisecond or two, for up to
//! [`StoreOptions::lock_patience`] (30 s). Only then does the operation fail, as
//! [`Error::Backend`](es_core::Error::Backend) saying nothing was written: "database is
//! locked" never reaches a caller as such. Every write begins with `BEGIN IMMEDIATE`, so no
//! transaction ever has to upgrade a read lock (which SQLite refuses at once with
//! `SQLITE_BUSY_SNAPSHOT` rather than waiting). Reads wait inside SQLite
//! ([`StoreOptions::busy_timeout`], 5 s); in WAL mode they meet a lock only while a process
//! recovers the file after a crash.
//!
//! Followers in every process see every event: the never-skip argument above holds for any
//! connection. Appends through a store wake that store's followers at once; a commit by any
//! other connection (another process) is noticed by a task that polls `PRAGMA data_version`
//! on its own connection ([`StoreOptions::change_poll`], 50 ms by default), and followers
//! also read again at least every [`StoreOptions::wakeup_poll`] (1 s).
//!
//! [`Leases`](es_core::Leases) work across processes: a row per lease names its holder and
//! an expiry ([`StoreOptions::lease_ttl`], 10 s) that a heartbeat renews every quarter of
//! it; a holder that cannot renew in time, or finds its row taken over, reports the lease
//! lost ([`Lease::is_held`](es_core::Lease::is_held)). A process that dies without releasing
//! its lease blocks the others until the expiry.
//!
//! ## Limits
//!
//! - One writer at a time per file: appends from all processes are serialised (in this
//!   process, FIFO; across processes, by SQLite's lock, which is not fair). A
//!   [`Transactional`] batch holds the write lock while its handler runs; one that runs
//!   longer than three quarters of [`StoreOptions::lease_ttl`] also keeps the lease's
//!   heartbeat from writing, and the consumer loses its lease.
//! - A handler running in a [`Tx`] must append through
//!   [`SqliteStore::append_in`], not [`append`](es_core::StreamStore::append), which would
//!   wait for the lock the `Tx` holds.
//! - Input limits are es-core's [`Limits`](es_core::Limits), the same as every store.
//! - Rows of `events` must never be deleted: positions are the head plus one, so deleting
//!   the last events would hand their positions out again to followers already past them.
//! - A lease taken by a future dropped before it returned stays taken until it expires.
#![doc(test(attr(deny(warnings))))]

mod delivery;
mod error;
mod lease;
mod options;
mod rows;
mod sql;
mod store;
mod temp;
mod tx;
mod watcher;

pub use delivery::Transactional;
pub use options::{Durability, StoreOptions};
pub use store::{MIGRATOR, SqliteStore};
pub use tx::Tx;

/// The sqlx this crate is built on, for the connection types in its signatures.
pub use sqlx;
