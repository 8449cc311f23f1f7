//! The command line (clap, derive): a subcommand for every command and query, `demo`,
//! `serve` and `rebuild`.

use std::error::Error as StdError;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use es_core::{AsOf, EventStore, MemoryStore, Metadata, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget};
use serde::Serialize;
use uuid::Uuid;

use crate::app::{Ledger, TransferOutcome};
use crate::domain::{Currency, Money};
use crate::read_model::AccountRow;

/// Any error the CLI reports.
pub type CliError = Box<dyn StdError + Send + Sync>;

/// An event-sourced ledger: accounts, transfers, audit trail, balances as of any moment.
///
/// Without a database the ledger lives in memory for the length of one command, so start
/// with `ledger demo` (a scripted scenario) or `ledger serve` (the HTTP API).
#[derive(Debug, Parser)]
#[command(name = "ledger", version)]
pub struct Cli {
    /// PostgreSQL URL. Without it the ledger runs in memory and keeps nothing after exit.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// PostgreSQL schema holding the event store and the read model tables (default
    /// `public`; `demo` uses a fresh one unless this is given).
    #[arg(long, env = "LEDGER_SCHEMA", global = true)]
    pub schema: Option<String>,

    /// Who is acting: recorded as the user id of every event.
    #[arg(long, env = "LEDGER_USER", default_value = "cli", global = true)]
    pub user: String,

    /// Correlation id to record on the command's events (default: a new one).
    #[arg(long, global = true)]
    pub correlation_id: Option<Uuid>,

    /// Print results as JSON.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a scripted scenario and print a report (no database needed).
    Demo,
    /// Serve the HTTP JSON API.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: SocketAddr,
    },
    /// Open an account.
    Open {
        /// Account id (letters, digits, '-', '_').
        id: String,
        /// Owner's name.
        owner: String,
        /// Currency code, e.g. EUR.
        currency: String,
        /// Overdraft limit as a decimal amount, e.g. 100.00.
        #[arg(long, default_value = "0")]
        overdraft: String,
    },
    /// Pay money into an account.
    Deposit(Movement),
    /// Pay money out of an account.
    Withdraw(Movement),
    /// Freeze an account: no money moves.
    Freeze {
        /// Account id.
        account: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Unfreeze an account.
    Unfreeze {
        /// Account id.
        account: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Close an account (only at a zero balance).
    Close {
        /// Account id.
        account: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Transfer money between two accounts of the same currency.
    Transfer {
        /// Source account.
        from: String,
        /// Destination account.
        to: String,
        /// Decimal amount, e.g. 12.50.
        amount: String,
        /// Reference shown on both statements.
        #[arg(long, default_value = "")]
        reference: String,
    },
    /// An account's balance, now or as of a version or a moment.
    Balance {
        /// Account id.
        account: String,
        /// As of this stream version.
        #[arg(long, conflicts_with = "at")]
        version: Option<u64>,
        /// As of this moment (RFC 3339, e.g. 2025-01-31T12:00:00Z).
        #[arg(long)]
        at: Option<DateTime<Utc>>,
    },
    /// Every account's balance.
    Balances,
    /// An account's statement with running balance.
    Statement {
        /// Account id.
        account: String,
    },
    /// An account's audit trail: who did what, when, in which flow.
    History {
        /// Account id.
        account: String,
    },
    /// Every event of one flow, across accounts and transfers.
    Trace {
        /// The correlation id.
        correlation_id: Uuid,
    },
    /// Every transfer and its status.
    Transfers,
    /// Ledger-wide totals per currency, with the conservation check.
    Totals,
    /// Replay the whole log into the read models from position 0.
    Rebuild,
}

/// Arguments of a deposit or withdrawal.
#[derive(Debug, clap::Args)]
pub struct Movement {
    /// Account id.
    pub account: String,
    /// Decimal amount in the account's currency, e.g. 12.50.
    pub amount: String,
    /// Reference.
    #[arg(long, default_value = "")]
    pub reference: String,
}

/// Runs the CLI: in memory, or on PostgreSQL when a database URL is given.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let mut out = std::io::stdout();
    match cli.database_url.clone() {
        None => {
            let ledger = Ledger::open(MemoryStore::new(), "ledger-view").await?;
            execute(&ledger, cli, &mut out, "").await
        }
        Some(url) => {
            let schema = cli.schema.clone();
            crate::storage::run_on_database(&url, schema.as_deref(), cli, &mut out).await
        }
    }
}

/// Runs one subcommand against `ledger`, writing the report to `out`. `tag` is appended to
/// the demo's account ids so that it can run again on a database that holds a previous run.
pub async fn execute<S: EventStore>(
    ledger: &Ledger<S>,
    cli: Cli,
    out: &mut (impl Write + Send),
    tag: &str,
) -> Result<(), CliError> {
    let mut meta = Metadata::by_user(cli.user.clone()).with_causation_id(Uuid::now_v7());
    if let Some(correlation) = cli.correlation_id {
        meta = meta.with_correlation_id(correlation);
    }
    let json = cli.json;
    match cli.command {
        Command::Demo => crate::demo::run(ledger, out, tag).await?,
        Command::Serve { addr } => {
            // Requests run their transfers to the end; this also finishes transfers that
            // another process (or a crash) left half-way.
            let background = ledger.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    if let Err(error) = background.run_processes().await {
                        tracing::warn!(%error, "transfer process failed; retrying");
                    }
                }
            });
            crate::http::serve(
                ledger.clone(),
                addr,
                |bound| eprintln!("ledger API listening on http://{bound}"),
                async {
                    let _ = tokio::signal::ctrl_c().await;
                },
            )
            .await?;
        }
        Command::Open {
            id,
            owner,
            currency,
            overdraft,
        } => {
            let currency: Currency = currency.parse()?;
            let overdraft = Money::parse(&overdraft, currency.clone())?;
            ledger
                .open_account(meta, &id, &owner, currency, overdraft.minor)
                .await?;
            print_account(out, json, &ledger.account(&id).await?)?;
        }
        Command::Deposit(m) => {
            let amount = parse_amount(ledger, &m.account, &m.amount).await?;
            ledger
                .deposit(meta, &m.account, &amount, &m.reference)
                .await?;
            print_account(out, json, &ledger.account(&m.account).await?)?;
        }
        Command::Withdraw(m) => {
            let amount = parse_amount(ledger, &m.account, &m.amount).await?;
            ledger
                .withdraw(meta, &m.account, &amount, &m.reference)
                .await?;
            print_account(out, json, &ledger.account(&m.account).await?)?;
        }
        Command::Freeze { account, reason } => {
            ledger.freeze(meta, &account, &reason).await?;
            print_account(out, json, &ledger.account(&account).await?)?;
        }
        Command::Unfreeze { account, reason } => {
            ledger.unfreeze(meta, &account, &reason).await?;
            print_account(out, json, &ledger.account(&account).await?)?;
        }
        Command::Close { account, reason } => {
            ledger.close(meta, &account, &reason).await?;
            print_account(out, json, &ledger.account(&account).await?)?;
        }
        Command::Transfer {
            from,
            to,
            amount,
            reference,
        } => {
            let amount = parse_amount(ledger, &from, &amount).await?;
            let outcome = ledger
                .transfer(meta, &from, &to, &amount, &reference)
                .await?;
            if json {
                print_json(out, &outcome)?;
            } else {
                writeln!(out, "{}", describe_outcome(&outcome))?;
            }
        }
        Command::Balance {
            account,
            version,
            at,
        } => {
            let as_of = match (version, at) {
                (Some(v), _) => AsOf::Version(v),
                (None, Some(t)) => AsOf::Time(t),
                (None, None) => AsOf::Version(u64::MAX),
            };
            let balance = ledger.balance_as_of(&account, as_of).await?;
            if json {
                print_json(out, &balance)?;
            } else {
                let currency = balance.currency.as_ref().map_or("", Currency::as_str);
                writeln!(
                    out,
                    "{account}: {} {currency} at version {} ({})",
                    balance.balance_display,
                    balance.version,
                    balance.status.as_str()
                )?;
            }
        }
        Command::Balances => {
            let rows = ledger.balances().await?;
            if json {
                print_json(out, &rows)?;
            } else {
                crate::demo::write_balances(out, &rows)?;
            }
        }
        Command::Statement { account } => {
            let lines = ledger.statement(&account).await?;
            if json {
                print_json(out, &lines)?;
            } else {
                let currency = ledger.account(&account).await?.currency;
                crate::demo::write_statement(out, &lines, &currency)?;
            }
        }
        Command::History { account } => {
            let entries = ledger.audit(&account).await?;
            if json {
                print_json(out, &entries)?;
            } else {
                crate::demo::write_audit(out, &entries)?;
            }
        }
        Command::Trace { correlation_id } => {
            let entries = ledger.trace(correlation_id).await?;
            if json {
                print_json(out, &entries)?;
            } else {
                crate::demo::write_audit(out, &entries)?;
            }
        }
        Command::Transfers => {
            let rows = ledger.transfers().await?;
            if json {
                print_json(out, &rows)?;
            } else {
                for t in rows {
                    writeln!(
                        out,
                        "{}  {} -> {}  {}  {}{}",
                        t.id,
                        t.from_account,
                        t.to_account,
                        Money::new(t.amount, t.currency),
                        t.status,
                        t.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                    )?;
                }
            }
        }
        Command::Totals => {
            let totals = ledger.totals().await?;
            if json {
                print_json(out, &totals)?;
            } else {
                crate::demo::write_totals(out, &totals)?;
            }
        }
        Command::Rebuild => {
            let progress = rebuild_with_progress(ledger).await?;
            writeln!(
                out,
                "rebuilt the read models from {} events in {:.1?}; invariants hold",
                progress.done, progress.elapsed
            )?;
        }
    }
    Ok(())
}

/// Rebuilds the read models from position 0, with a progress bar when stderr is a terminal.
pub async fn rebuild_with_progress<S: EventStore>(
    ledger: &Ledger<S>,
) -> Result<Progress, CliError> {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    let progress = ledger
        .rebuild(|p| {
            bar.set_length(p.total);
            bar.set_position(p.done);
        })
        .await;
    bar.finish_and_clear();
    Ok(progress?)
}

async fn parse_amount<S: EventStore>(
    ledger: &Ledger<S>,
    account: &str,
    amount: &str,
) -> Result<Money, CliError> {
    let currency = ledger
        .load_account(account)
        .await?
        .currency()
        .cloned()
        .ok_or("the account has no currency")?;
    Ok(Money::parse(amount, currency)?)
}

fn print_json(out: &mut impl Write, value: &impl Serialize) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

fn print_account(out: &mut impl Write, json: bool, row: &AccountRow) -> Result<(), CliError> {
    if json {
        return print_json(out, row);
    }
    writeln!(
        out,
        "{} ({}): {} {} [{}]",
        row.id,
        row.owner,
        row.balance_display,
        row.currency,
        row.status.as_str()
    )?;
    Ok(())
}

/// A one-line description of a transfer's outcome.
pub fn describe_outcome(outcome: &TransferOutcome) -> String {
    match &outcome.reason {
        Some(reason) => format!(
            "transfer {} {}: {reason}",
            outcome.transfer_id, outcome.status
        ),
        None => format!("transfer {} {}", outcome.transfer_id, outcome.status),
    }
}
