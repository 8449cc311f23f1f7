//! Where the ledger keeps its events: the only module that knows which stores exist.
//!
//! - an embedded SQLite file, the default (`./ledger.db`, or `--data PATH`): every command and
//!   `serve` keep their data, several processes may share the file, and the read models are
//!   rebuilt in memory at each start;
//! - PostgreSQL when `DATABASE_URL` is set, with the read models in tables of the schema;
//! - memory, for the length of one command, with `--memory`.
//!
//! The process manager's partitions are leased by the store itself, so processes sharing a
//! file or a schema share the work. A process that stops gives its leases back at once.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use es_core::{Leases, MemoryStore};
use es_postgres::{PostgresStore, StoreOptions};
use es_sqlite::SqliteStore;
use uuid::Uuid;

use crate::app::{AppError, Ledger, Options, Store};
use crate::broker::Broker;
use crate::read_models::ReadSide;
use crate::read_models::tables::TableViews;

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

    /// PostgreSQL schema (default `public`; `demo` uses a fresh one unless given).
    #[arg(long, env = "LEDGER_SCHEMA", global = true)]
    pub schema: Option<String>,
}

/// A ledger on one of the stores.
pub enum Opened {
    /// In memory.
    Memory(Ledger<MemoryStore>),
    /// In a SQLite file.
    Sqlite(Ledger<SqliteStore>),
    /// In PostgreSQL.
    Postgres(Ledger<PostgresStore>),
}

/// What the command needs.
#[derive(Debug, Clone, Default)]
pub struct Need {
    /// Whether the process manager runs (transfers, `serve`, `demo`).
    pub process: bool,
    /// `demo`: on PostgreSQL without a schema, a fresh one.
    pub demo: bool,
    /// Read models from this broker (and broker name) instead of the store.
    pub read_from: Option<(Broker, String)>,
}

/// Opens the ledger where `args` say, with what the command needs. `demo` on PostgreSQL
/// without a schema runs in a fresh schema, named on stderr.
pub async fn open(args: &StorageArgs, need: Need) -> Result<Opened, AppError> {
    let read_side = match &need.read_from {
        Some((broker, name)) => Some(broker.read_side(name).await?),
        None => None,
    };
    if args.memory {
        return Ok(Opened::Memory(
            with_leases(MemoryStore::new(), read_side, need.process).await?,
        ));
    }
    if let Some(url) = args.database_url.as_deref().filter(|url| !url.is_empty()) {
        let schema = match (&args.schema, need.demo) {
            (Some(schema), _) => schema.clone(),
            (None, true) => {
                let schema = format!("ledger_demo_{}", &Uuid::now_v7().simple().to_string()[20..]);
                eprintln!(
                    "Running the demo in the fresh schema {schema} (inspect it with --schema {schema})."
                );
                schema
            }
            (None, false) => "public".to_owned(),
        };
        let store = PostgresStore::connect_with(url, StoreOptions::new().schema(&schema)).await?;
        let read_side = match read_side {
            Some(read_side) => read_side,
            None => Box::new(TableViews::open(store.clone()).await?),
        };
        return Ok(Opened::Postgres(
            with_leases(store, Some(read_side), need.process).await?,
        ));
    }
    let path = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from("ledger.db"));
    let store = SqliteStore::open(path).await?;
    Ok(Opened::Sqlite(
        with_leases(store, read_side, need.process).await?,
    ))
}

/// The ledger on PostgreSQL in `schema` (created and migrated if needed), its read models in
/// tables there.
pub async fn postgres(
    url: &str,
    schema: &str,
    process: bool,
) -> Result<Ledger<PostgresStore>, AppError> {
    let store = PostgresStore::connect_with(url, StoreOptions::new().schema(schema)).await?;
    let tables = TableViews::open(store.clone()).await?;
    with_leases(store, Some(Box::new(tables)), process).await
}

/// The ledger on `store`, leasing the process manager's partitions (if it runs) from the store.
pub async fn with_leases<S: Store + Leases>(
    store: S,
    read_side: Option<Box<dyn ReadSide>>,
    process: bool,
) -> Result<Ledger<S>, AppError> {
    let mut options = Options {
        leases: Arc::new(store.clone()),
        read_side,
        ..Options::default()
    };
    options.partitions.count = if process { options.partitions.count } else { 0 };
    Ledger::open(store, options).await
}
