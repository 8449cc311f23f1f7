//! `ledger`: the command line of the ledger example. See `ledger --help`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use es_core::Leases;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use ledger::app::Store;
use ledger::cli::{Cli, CliError, Command, LogFormat, RelayArgs, execute};
use ledger::report::redact;
use ledger::storage::{self, Need, Opened};
use ledger::{Ledger, http};

/// Stderr, with connection strings' passwords redacted from every line.
struct Redacted;

impl Write for Redacted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write_all(redact(&String::from_utf8_lossy(buf)).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Logs on stderr, filtered by `RUST_LOG` (default `info` for the long-running commands,
/// `warn` for the others), as text or JSON; spans (requests, es-core's appends, commands and
/// consumer batches) are logged when they close, with their fields and timings.
fn init_logs(format: LogFormat, long_running: bool) {
    let default = if long_running { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Redacted)
        .with_ansi(std::io::stderr().is_terminal())
        .with_span_events(FmtSpan::CLOSE);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let long_running = matches!(cli.command, Command::Serve(_) | Command::Relay(_));
    init_logs(cli.log_format, long_running);
    let need = Need {
        process: matches!(
            cli.command,
            Command::Demo | Command::Serve(_) | Command::Transfer { .. }
        ),
        demo: matches!(cli.command, Command::Demo),
        read_from: match &cli.command {
            Command::Serve(args) => args
                .read_from
                .clone()
                .map(|b| (b, args.broker_name.clone())),
            _ => None,
        },
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
            eprintln!("error: {}", redact(&error.to_string()));
            ExitCode::FAILURE
        }
    }
}

async fn ctrl_c() {
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::error!(%error, "cannot wait for Ctrl-C");
        std::future::pending::<()>().await;
    }
}

async fn run<S: Store + Leases>(ledger: Ledger<S>, cli: Cli) -> Result<(), CliError> {
    let result = match cli.command {
        Command::Serve(args) => {
            let listener = tokio::net::TcpListener::bind(args.http.addr).await?;
            eprintln!("ledger API listening on http://{}", listener.local_addr()?);
            http::serve(ledger.clone(), listener, args.http, ctrl_c())
                .await
                .map_err(Into::into)
        }
        Command::Relay(args) => relay(&ledger, args).await,
        _ => execute(&ledger, cli, &mut std::io::stdout()).await,
    };
    ledger.shutdown().await?;
    result
}

/// Runs the relay until Ctrl-C, printing its status when it changes (at most every second).
async fn relay<S: Store + Leases>(ledger: &Ledger<S>, args: RelayArgs) -> Result<(), CliError> {
    let broker = args.broker();
    let store = ledger.store().clone();
    let handle = broker.relay(store.clone(), Arc::new(store), &args.broker_name)?;
    eprintln!(
        "relaying the log to {broker:?} as {} (Ctrl-C stops)",
        broker.relay_name()
    );
    let (mut ticks, mut last) = (tokio::time::interval(Duration::from_secs(1)), String::new());
    let mut stop = std::pin::pin!(ctrl_c());
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticks.tick() => {}
        }
        let s = handle.status();
        let error = s
            .last_error
            .map(|e| format!(" last error: {e}"))
            .unwrap_or_default();
        let line = format!(
            "{:?} published up to {} of {} (lag {}){error}",
            s.state, s.checkpoint, s.head, s.lag
        );
        if line != last {
            eprintln!("relay: {}", redact(&line));
            last = line;
        }
    }
    Ok(handle.shutdown().await?)
}
