//! PostgreSQL wiring: the only module that knows which store runs in production.
//!
//! Everything else is generic over [`es_core::EventStore`], so the same ledger, process
//! manager, read models, CLI and HTTP API run on the in-memory store and on PostgreSQL.

use std::io::Write;

use es_postgres::{PostgresStore, StoreOptions};
use uuid::Uuid;

use crate::app::Ledger;
use crate::cli::{Cli, CliError, Command, execute};

/// Connects to the database at `url`, keeping the event store in `schema` (created and
/// migrated if needed).
pub async fn connect(url: &str, schema: &str) -> Result<PostgresStore, CliError> {
    let store = PostgresStore::connect_with(url, StoreOptions::new().schema(schema))
        .await
        .map_err(|e| format!("cannot open the event store at {url}: {e}"))?;
    Ok(store)
}

/// Runs the CLI against the PostgreSQL database at `url` (schema `public`).
pub async fn run_on_database(
    url: &str,
    cli: Cli,
    out: &mut (impl Write + Send),
) -> Result<(), CliError> {
    let store = connect(url, "public").await?;
    // The read models live in this process's memory and are rebuilt from the log at start:
    // their checkpoint is private to the process, so processes sharing the database never
    // move each other's checkpoint.
    let view = format!("ledger-view-{}", Uuid::now_v7());
    let ledger = Ledger::open(store, &view).await?;
    // The demo can run again on a database that holds an earlier run: fresh account ids.
    let tag = match cli.command {
        Command::Demo => {
            let id = Uuid::now_v7().simple().to_string();
            format!("-{}", &id[id.len() - 6..])
        }
        _ => String::new(),
    };
    execute(&ledger, cli, out, &tag).await
}
