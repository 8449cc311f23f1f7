//! # ledger: an event-sourced ledger on es-core
//!
//! The flagship example of the framework: accounts, transfers between them, an audit trail
//! that says who did what, when and why, balances as of any version or moment, read models
//! rebuilt from the log, a CLI and an HTTP JSON API. It keeps its data in an embedded SQLite
//! file by default, in PostgreSQL when a database URL is given, or in memory; the
//! application ([`Ledger`]) is generic over the store and knows no database.
//!
//! ## Layout (every import points down)
//! - [`domain`]: [`Money`](domain::Money) in integer minor units, the
//!   [`Account`](domain::Account) and [`Transfer`](domain::Transfer) aggregates, every rule as
//!   a [`LedgerError`](domain::LedgerError), and the limits of amounts and text.
//!   `MoneyDeposited` is at schema version 2; version-1 payloads decode through `From`.
//! - [`effects`]: what each event does to the read models, one pure mapping.
//! - [`read_models`]: balances, statements, totals and transfers, in memory
//!   ([`read_models::memory`]) or in PostgreSQL tables ([`read_models::tables`]).
//! - [`process`]: the transfer process manager, a consumer on es-core's runtime.
//! - [`app`]: [`Ledger`], commands and queries.
//! - [`report`], [`cli`], [`demo`], [`http`]: the interfaces; [`storage`]: the stores.
//!
//! ## Transfers: a Transfer aggregate plus a process manager
//!
//! A transfer touches two accounts, and an aggregate is the unit of consistency: there is no
//! transaction across two streams (and there should not be one, or every account would
//! contend with every other). So a transfer is a process, and its state lives in a
//! **`Transfer` aggregate** (`Requested → Debited → Completed`, with `Rejected` when the debit
//! is refused and `CreditFailed → Compensated` when the credit is). It is the single source of
//! truth for "what happens next", audited like everything else, and its transitions are
//! guarded (a failed credit can never later be "completed").
//!
//! A **stateless process manager** ([`process`]) follows the `Transfer` events as a consumer
//! of the global log: at least once, split into partitions by transfer (so transfers do not
//! queue behind one another), each partition under a single-active lease shared by every
//! process on the store. Each command it issues carries `Metadata::caused_by` the event and a
//! [`CommandKey`](es_core::CommandKey) derived from the event and the step, so a redelivered
//! event re-issues the same commands and gets their first outcomes back. Accounts remember
//! transfer ids, so every leg is idempotent too. A refusal is recorded as the transfer's
//! outcome, never retried; a step that cannot be decided is retried, then parked, and the
//! consumer goes on.
//!
//! Money in flight (debited, not yet credited or refunded) is tracked explicitly, so the
//! conservation check `sum of balances + in flight = deposits - withdrawals` holds at every
//! moment, not only when the system is idle.
//!
//! Alternatives we rejected: a *choreography* where accounts react to each other's events
//! has no single place that knows a transfer's state; a *process manager with private state*
//! would need a second store, while the aggregate gets storage, concurrency control, history
//! and temporal queries for free.
//!
//! ## Metadata and idempotency
//! Every command carries a user id, a correlation id and a causation id (the CLI's and the
//! HTTP API's request id, or the event a process step reacts to); every event records them,
//! so [`Ledger::trace`] shows everything one request caused. Every command that changes state
//! runs once per key ([`app::Cmd`]): from an `Idempotency-Key` header or `--key`, else fresh.

pub mod app;
pub mod cli;
pub mod demo;
pub mod domain;
pub mod effects;
pub mod http;
pub mod process;
pub mod read_models;
pub mod report;
pub mod storage;

pub use app::{AccountCommand, AppError, Cmd, Ledger, Options};
