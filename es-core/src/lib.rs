//! # es-core
//!
//! The runtime of an event-sourcing framework: annotate plain structs, get a correct,
//! auditable, event-sourced system.
//!
//! - [`Event`] and [`EventSet`]: named, versioned events and the enum of an aggregate's events,
//!   with upcasting of older schemas on read (`#[event]` implements them).
//! - [`Aggregate`] and [`Apply`]: state as a fold of events (`#[derive(Aggregate)]`).
//! - The store contract in four small traits: [`StreamStore`] (streams with optimistic
//!   concurrency and idempotent appends), [`SnapshotStore`], [`GlobalLog`] (a global order that
//!   never skips, filtered in the store, with live wake-ups) and [`CheckpointStore`];
//!   [`EventStore`] is their union. [`MemoryStore`] implements them in memory; every store
//!   applies the same input rules ([`Limits`]).
//! - [`Repository`]: load, decide, append, retry; commands idempotent by [`CommandKey`]; a
//!   bounded state cache; snapshots; temporal loads ([`AsOf`]).
//! - The consumer runtime: an [`EventHandler`] run by a [`Consumer`] over the global log, for
//!   read models, process managers and relays, with a [`Delivery`] that commits the
//!   checkpoint at least once or with the handler's writes; leases, partitions, retries,
//!   parked events and status.
//! - [`testing::Scenario`]: given events, when a command, then events or an error.
//!
//! ```
//! # futures::executor::block_on(async {
//! use es_core::prelude::*;
//!
//! #[event]
//! pub struct AccountOpened { pub owner: String }
//!
//! #[event]
//! pub struct MoneyDeposited { pub amount: i64 }
//!
//! #[derive(Aggregate, Default)]
//! #[aggregate(name = "BankAccount", events(AccountOpened, MoneyDeposited))]
//! pub struct BankAccount { open: bool, balance: i64 }
//!
//! impl Apply<AccountOpened> for BankAccount {
//!     fn apply(&mut self, _: &AccountOpened) { self.open = true; }
//! }
//! impl Apply<MoneyDeposited> for BankAccount {
//!     fn apply(&mut self, e: &MoneyDeposited) { self.balance += e.amount; }
//! }
//!
//! impl BankAccount {
//!     pub fn deposit(&self, amount: i64) -> Result<MoneyDeposited, String> {
//!         if !self.open { return Err("account is not open".into()); }
//!         Ok(MoneyDeposited { amount })
//!     }
//! }
//!
//! let accounts = Repository::<BankAccount, _>::new(MemoryStore::new());
//! let meta = Metadata::by_user("u-42");
//! accounts.execute("acc-1", meta.clone(), |_| Ok::<_, String>(AccountOpened { owner: "Ada".into() })).await.unwrap();
//! accounts.execute("acc-1", meta, |a| a.deposit(50)).await.unwrap();
//! assert_eq!(accounts.load("acc-1").await.unwrap().balance, 50);
//! # });
//! ```
#![doc(test(attr(deny(warnings))))]

extern crate self as es_core;

mod aggregate;
mod checkpoint;
mod command;
mod consumer;
mod envelope;
mod error;
mod event;
mod json;
mod lease;
mod limits;
mod log;
mod memory;
mod metadata;
mod repository;
mod store;
pub mod testing;

pub use aggregate::{Aggregate, Apply};
pub use checkpoint::{
    CheckpointStore, LocalCheckpoints, ParkedEvent, check_checkpoint, check_parked,
};
pub use command::CommandKey;
pub use consumer::{
    AnyEvent, AtLeastOnce, BatchError, Consumer, ConsumerHandle, ConsumerState, Delivery, Envelope,
    EventHandler, LogEvent, Partition, PoisonPolicy, Progress, RetryPolicy, Status,
    handle_by_stream,
};
pub use envelope::{NewEvent, RecordedEvent, ReplayEvent, Snapshot, StreamId};
pub use error::{BoxError, Error, Permanent, permanent};
pub use event::{DecodeError, Event, EventSet, IntoEvents, decode_exact, decode_upcast};
pub use json::{MAX_JSON_DEPTH, same_json};
pub use lease::{Lease, Leases, LocalLeases};
pub use limits::{Limits, MAX_ID_BYTES, MAX_NAME_BYTES, check_i64, check_name, check_stream};
pub use log::{GlobalLog, GlobalLogExt, LogFilter, LogPage, Wakeup, WakeupSender};
pub use memory::MemoryStore;
pub use metadata::Metadata;
pub use repository::{AsOf, Committed, DEFAULT_STATE_CACHE, ExecuteError, Loaded, Repository};
pub use store::{EventStore, ExpectedVersion, SnapshotStore, StreamQuery, StreamStore};

/// `#[event]`: makes a struct a stored, named, versioned [`Event`].
#[cfg(feature = "derive")]
pub use es_derive::event;

/// `#[derive(Aggregate)]`: generates the event enum, [`EventSet`] and [`Aggregate`] impls.
#[cfg(feature = "derive")]
pub use es_derive::Aggregate;

/// Everything a domain module needs: `use es_core::prelude::*;`.
///
/// `Serialize` and `Deserialize` are serde's, for aggregates that take snapshots. Their
/// derives expand to code that names `serde`, so a crate using them lists `serde` in its own
/// Cargo.toml; events need nothing, since `#[event]` derives them through es-core.
pub mod prelude {
    #[cfg(feature = "derive")]
    pub use crate::event;
    pub use crate::{
        Aggregate, Apply, AsOf, CheckpointStore, CommandKey, Event, EventSet, EventStore,
        ExecuteError, ExpectedVersion, GlobalLog, GlobalLogExt, MemoryStore, Metadata,
        RecordedEvent, Repository, SnapshotStore, StreamId, StreamQuery, StreamStore,
    };
    pub use serde::{Deserialize, Serialize};
}

/// What generated code refers to; not a public API and not covered by semver.
#[doc(hidden)]
pub mod __private {
    pub use crate::event::const_str_eq;
    pub use serde;
    pub use serde_json;
    pub use serde_json::value::RawValue;
    pub use std::{boxed::Box, option::Option, result::Result, string::String, vec::Vec};
}
