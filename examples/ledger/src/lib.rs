//! # ledger: an event-sourced ledger on es-core
//!
//! Accounts, transfers between them, an audit trail of who did what, when and why, balances
//! as of any version or moment, read models rebuilt from the log, a CLI and an HTTP JSON API.
//! Data lives in a SQLite file by default, in PostgreSQL with a database URL, or in memory;
//! the application ([`Ledger`]) is generic over the store and knows no database.
//!
//! ## Layout (every import points down)
//! - [`domain`]: [`Money`](domain::Money), the [`Account`](domain::Account) and
//!   [`Transfer`](domain::Transfer) aggregates, every rule as a
//!   [`LedgerError`](domain::LedgerError), and the limits of amounts and text.
//! - [`effects`]: what each event does to the read models, one pure mapping.
//! - [`read_models`]: balances, statements, totals and transfers, in memory
//!   ([`read_models::memory`]) or in PostgreSQL tables ([`read_models::tables`]).
//! - [`process`]: the transfer process manager, a consumer on es-core's runtime.
//! - [`app`]: [`Ledger`], commands and queries.
//! - [`report`], [`cli`], [`demo`], [`http`]: the interfaces; [`storage`]: the stores;
//!   [`broker`]: the log relayed to Redis or NATS, and read models built from there.
//!
//! ## Transfers: a Transfer aggregate plus a process manager
//!
//! A transfer touches two accounts, and there is no transaction across two streams (nor
//! should there be: every account would contend with every other). So a transfer is a
//! process whose state lives in a **`Transfer` aggregate** (`Requested → Debited →
//! Completed`, `Rejected` when the debit is refused, `CreditFailed → Compensated` when the
//! credit is): the single, audited source of truth for what happens next, with guarded
//! transitions (a failed credit never becomes "completed").
//!
//! A **stateless process manager** ([`process`]) follows the `Transfer` events at least once,
//! in partitions by transfer, each under a lease shared by every process on the store. Every
//! command it issues carries `Metadata::caused_by` the event and a
//! [`CommandKey`](es_core::CommandKey) derived from the event and the step, so a redelivery
//! gets the first outcomes back; accounts remember transfer ids, so every leg is idempotent.
//! A refusal is recorded as the transfer's outcome; a step that cannot be decided is retried,
//! then parked. Money in flight is tracked, so `balances + in flight = deposits -
//! withdrawals` holds at every moment. A choreography (accounts reacting to each other) would
//! have no single place that knows a transfer's state; a process manager with private state
//! would need a second store.
//!
//! ## Metadata and idempotency
//! Every event records the user, the correlation id and the causation id of the command that
//! caused it, so [`Ledger::trace`] shows everything one request caused. Every command that
//! changes state runs once per key ([`app::Cmd`]): an `Idempotency-Key` header or `--key`,
//! else a fresh one.

pub mod app;
pub mod broker;
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
