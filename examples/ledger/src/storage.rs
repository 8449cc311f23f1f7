//! PostgreSQL wiring: the only module that knows which store runs in production.
//!
//! Everything else is generic over [`es_core::EventStore`], so the same ledger, process
//! manager, CLI and HTTP API run on the in-memory store and on PostgreSQL. On PostgreSQL the
//! read models live in tables of the store's schema ([`crate::tables`]), shared by every
//! process serving that schema.

use std::io::Write;

use es_core::Error;
use es_postgres::sqlx::{self, Postgres, Transaction};
use es_postgres::{PostgresStore, StoreOptions};
use uuid::Uuid;

use crate::app::Ledger;
use crate::cli::{Cli, CliError, Command, execute};

/// The schema the CLI uses when none is given.
pub const DEFAULT_SCHEMA: &str = "public";

/// Connects to the database at `url`, keeping the event store in `schema` (created and
/// migrated if needed).
pub async fn connect(url: &str, schema: &str) -> Result<PostgresStore, CliError> {
    let store = PostgresStore::connect_with(url, StoreOptions::new().schema(schema))
        .await
        .map_err(|e| format!("cannot open the event store at {url} (schema {schema}): {e}"))?;
    Ok(store)
}

/// Connects to the database at `url` and opens the ledger in `schema`, with its read models
/// in that schema's tables.
pub async fn open(url: &str, schema: &str) -> Result<Ledger<PostgresStore>, CliError> {
    let store = connect(url, schema).await?;
    Ok(Ledger::open_with_tables(store).await?)
}

/// A fresh schema name for one demo run: `ledger_demo_` and twelve hex digits.
pub fn fresh_demo_schema() -> String {
    let id = Uuid::now_v7().simple().to_string();
    format!("ledger_demo_{}", &id[id.len() - 12..])
}

/// Runs the CLI against the PostgreSQL database at `url`, in `schema` (default
/// [`DEFAULT_SCHEMA`]).
///
/// `demo` without an explicit schema runs in a fresh schema of its own (named on the first
/// line of its report, so the other commands can inspect it with `--schema`); with one, it
/// appends to that ledger and suffixes its account ids so that runs never collide.
pub async fn run_on_database(
    url: &str,
    schema: Option<&str>,
    cli: Cli,
    out: &mut (impl Write + Send),
) -> Result<(), CliError> {
    let (schema, tag) = match (&cli.command, schema) {
        (Command::Demo, None) => {
            let schema = fresh_demo_schema();
            writeln!(
                out,
                "Running the demo in the fresh schema {schema} \
                 (inspect it afterwards with --schema {schema})."
            )?;
            (schema, String::new())
        }
        (Command::Demo, Some(schema)) => {
            let id = Uuid::now_v7().simple().to_string();
            (schema.to_owned(), format!("-{}", &id[id.len() - 6..]))
        }
        (_, schema) => (schema.unwrap_or(DEFAULT_SCHEMA).to_owned(), String::new()),
    };
    let ledger = open(url, &schema).await?;
    execute(&ledger, cli, out, &tag).await
}

/// Takes the schema's process-manager lock: a transaction holding a transaction-scoped
/// advisory lock, released when it ends (rolled back or dropped).
///
/// Transfer steps are idempotent, but two process managers must not decide the *same* step
/// at once: one could reject a transfer because the debit was refused while the other's
/// debit, a moment later, succeeds. Within one process a mutex serialises the runs; across
/// processes sharing a schema (`serve` and a CLI command, say) this lock does.
pub async fn lock_process_manager(
    store: &PostgresStore,
) -> Result<Transaction<'static, Postgres>, Error> {
    let mut tx = store.pool().begin().await.map_err(Error::backend)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("ledger-process:{}", store.schema()))
        .execute(&mut *tx)
        .await
        .map_err(Error::backend)?;
    Ok(tx)
}
