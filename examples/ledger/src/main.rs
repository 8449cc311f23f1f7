//! `ledger`: the command line of the ledger example. See `ledger --help`.

use std::process::ExitCode;

use clap::Parser;

use ledger::app::Store;
use ledger::cli::{Cli, CliError, Command, execute};
use ledger::storage::{self, Need, Opened};
use ledger::{Ledger, http};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let need = match cli.command {
        Command::Demo => Need::Demo,
        Command::Serve { .. } => Need::Serve,
        Command::Transfer { .. } => Need::Transfers,
        _ => Need::Accounts,
    };
    let result = match storage::open(&cli.storage, need).await {
        Ok(Opened::Memory(ledger)) => run(ledger, cli).await,
        Ok(Opened::Sqlite(ledger)) => run(ledger, cli).await,
        Ok(Opened::Postgres(ledger)) => run(ledger, cli).await,
        Err(error) => Err(error.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run<S: Store>(ledger: Ledger<S>, cli: Cli) -> Result<(), CliError> {
    let result = match cli.command {
        Command::Serve { addr } => {
            let announce = |bound| eprintln!("ledger API listening on http://{bound}");
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            http::serve(ledger.clone(), addr, announce, stop)
                .await
                .map_err(Into::into)
        }
        _ => execute(&ledger, cli, &mut std::io::stdout()).await,
    };
    ledger.shutdown().await?;
    result
}
