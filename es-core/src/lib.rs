//! # es-core
//!
//! The runtime of an event-sourcing framework: annotate plain structs, get a correct,
//! auditable, event-sourced system.
//!
//! - [`Event`] and [`EventSet`]: named, versioned events and the enum of an aggregate's events,
//!   with upcasting of older schemas on read (`#[event]` implements them).
//! - [`Aggregate`] and [`Apply`]: state as a fold of events (`#[derive(Aggregate)]`).
//! - [`EventStore`]: streams with optimistic concurrency, idempotent appends, a global log that
//!   never skips, snapshots and checkpoints; [`MemoryStore`] implements it in memory.
//! - [`Repository`]: load, decide, append, retry; snapshots; temporal loads ([`AsOf`]).
//! - [`Projection`] and [`ProjectionRunner`]: read models with checkpoints, catch-up and rebuild.
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
mod envelope;
mod error;
mod event;
mod memory;
mod metadata;
mod projection;
mod repository;
mod store;
pub mod testing;

pub use aggregate::{Aggregate, Apply};
pub use envelope::{NewEvent, RecordedEvent, ReplayEvent, Snapshot, StreamId};
pub use error::{BoxError, Error};
pub use event::{DecodeError, Event, EventSet, IntoEvents, decode_exact, decode_upcast};
pub use memory::MemoryStore;
pub use metadata::Metadata;
pub use projection::{Progress, Projection, ProjectionRunner};
pub use repository::{AsOf, Committed, ExecuteError, Loaded, Repository};
pub use store::{EventStore, EventStoreExt, ExpectedVersion, StreamQuery, read_all_batches};

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
        Aggregate, Apply, AsOf, Event, EventSet, EventStore, EventStoreExt, ExecuteError,
        ExpectedVersion, MemoryStore, Metadata, RecordedEvent, Repository, StreamId, StreamQuery,
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
