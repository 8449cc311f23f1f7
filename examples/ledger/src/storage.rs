//! PostgreSQL wiring: the only module that knows which store runs in production.
//!
//! Everything else is generic over [`es_core::EventStore`], so the same ledger, process
//! manager, read models, CLI and HTTP API run on the in-memory store and on PostgreSQL.

use std::io::Write;

use crate::cli::{Cli, CliError};

/// Runs the CLI against the PostgreSQL database at `url`.
pub async fn run_on_database(
    url: &str,
    cli: Cli,
    out: &mut (impl Write + Send),
) -> Result<(), CliError> {
    let _ = (url, cli, out);
    Err("PostgreSQL support needs es-postgres, which has not landed yet; run without --database-url / DATABASE_URL to use the in-memory store".into())
}
