//! # ledger: an event-sourced ledger on es-core
//!
//! The flagship example of the framework: accounts, transfers between them, an audit trail
//! that says who did what, when and why, balances as of any version or moment, read models
//! that can be rebuilt from the log, a CLI and an HTTP JSON API. It runs on the in-memory
//! store by default (`cargo run -p ledger -- demo`) and on PostgreSQL when a database URL is
//! given; all of it is generic over [`es_core::EventStore`]. Only the read models differ: in
//! memory by default, in PostgreSQL tables kept by an es-postgres transactional projection on
//! a database ([`read_side::ReadSide`] hides which from the queries).
//!
//! ## Layout
//! - [`domain`]: [`Money`](domain::Money) in integer minor units, the
//!   [`Account`](domain::Account) and [`Transfer`](domain::Transfer) aggregates written with
//!   `#[event]` and `#[derive(Aggregate)]`, and every rule as a
//!   [`LedgerError`](domain::LedgerError). `MoneyDeposited` is at schema version 2; its
//!   version-1 payloads (no `reference`) still decode through `MoneyDepositedV1` and `From`.
//! - [`process`]: the transfer process manager.
//! - [`read_model`]: balances, statements with running balances, totals per currency,
//!   transfers, as an in-memory es-core projection; [`tables`]: the same read models in
//!   PostgreSQL tables, kept by an es-postgres transactional projection; [`read_side`]: which
//!   of the two a ledger queries.
//! - [`app`]: [`Ledger`], the application service everything else calls.
//! - [`cli`], [`demo`], [`http`]: the interfaces; [`storage`]: the PostgreSQL wiring.
//!
//! ## Transfers: why a Transfer aggregate plus a process manager
//!
//! A transfer touches two accounts, and an aggregate is the unit of consistency: there is no
//! transaction across two streams (and there should not be one, or every account would
//! contend with every other). So a transfer is a process, and its state has to live
//! somewhere durable. We chose:
//!
//! - a **`Transfer` aggregate** holding the process state (`Requested → Debited →
//!   Completed`, with `Rejected` when the debit is refused and `CreditFailed → Compensated`
//!   when the credit is refused). It is the single source of truth for "what happens next",
//!   it is audited like everything else, and its transitions are guarded (a failed credit can
//!   never later be "completed", so a refund and a credit can never both happen);
//! - a **stateless process manager** ([`process::TransferProcess`]) that follows the global
//!   log as an es-core `Projection` with its own checkpoint, reacts to the latest event of
//!   each transfer by issuing the next command (debit, credit, settle, refund) with
//!   `Metadata::caused_by(event)`, and records the outcome on the transfer.
//!
//! Runs of the process manager are serialised: by a mutex within a process and, on
//! PostgreSQL, by an advisory lock across processes (`serve` and a CLI command sharing a
//! schema). Without it, one manager could reject a transfer whose debit was refused while
//! another's debit of the same transfer succeeds a moment later, stranding money in flight;
//! the conservation test with two ledgers on one schema caught exactly that.
//!
//! Alternatives we rejected: a *choreography* where accounts react to each other's events
//! has no single place that knows a transfer's state, which makes "is this transfer done?"
//! and compensation hard to audit; a *process manager with its own private state* would
//! need a second store (or would lose its state on restart) while the aggregate gets
//! storage, optimistic concurrency, history and temporal queries for free.
//!
//! Delivery from the log is at least once, so every step is idempotent: accounts remember
//! transfer ids (a second debit or credit of the same transfer decides nothing), transfer
//! steps accept a repeat, and the process acts only on the latest event of a transfer.
//! Money in flight (debited, not yet credited or refunded) is tracked explicitly, so the
//! conservation check `sum of balances + in flight = deposits - withdrawals` holds at every
//! moment, not only when the system is idle. An account cannot close with a transfer in
//! flight, and a refund is accepted whatever the source's status, so compensation always
//! succeeds.
//!
//! ## Metadata
//! Every command carries a user id, a correlation id and a causation id (the CLI's and the
//! HTTP API's request id, or the event a process step reacts to); every event records them,
//! so [`app::Ledger::trace`] can show everything one request caused across streams.

pub mod app;
pub mod cli;
pub mod demo;
pub mod domain;
pub mod http;
pub mod process;
pub mod read_model;
pub mod read_side;
pub mod storage;
pub mod tables;

pub use app::{AppError, Ledger};
