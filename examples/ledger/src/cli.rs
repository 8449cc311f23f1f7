//! The command line (clap, derive): a subcommand for every command and query, `demo`,
//! `serve`, `relay`, `rebuild` and `status`. `main.rs` opens the store and runs them here.

use std::error::Error as StdError;
use std::io::Write;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use es_core::{AsOf, CommandKey, Metadata};
use serde::Serialize;
use uuid::Uuid;

use crate::app::{AccountCommand, Cmd, Ledger, Page, Store};
use crate::broker::Broker;
use crate::domain::{Currency, Money};
use crate::http::HttpOptions;
use crate::report;
use crate::storage::StorageArgs;

/// Any error the CLI reports.
pub type CliError = Box<dyn StdError + Send + Sync>;

/// An event-sourced ledger: accounts, transfers, audit trail, balances as of any moment.
///
/// Data lives in the SQLite file `./ledger.db` (or `--data PATH`), in PostgreSQL with
/// `DATABASE_URL`, or in memory for one command with `--memory`.
#[derive(Debug, Parser)]
#[command(name = "ledger", version)]
pub struct Cli {
    /// Where the data lives.
    #[command(flatten)]
    pub storage: StorageArgs,

    /// Who is acting: recorded as the user id of every event.
    #[arg(long, env = "LEDGER_USER", default_value = "cli", global = true)]
    pub user: String,

    /// Correlation id to record on the command's events (default: a new one).
    #[arg(long, global = true)]
    pub correlation_id: Option<Uuid>,

    /// Idempotency key: the same command run again with the same key acts once.
    #[arg(long, global = true)]
    pub key: Option<String>,

    /// Print results as JSON.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log lines as text or JSON (on stderr; `RUST_LOG` filters them, default `info`).
    #[arg(
        long,
        env = "LEDGER_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line, with the spans as fields.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a scripted scenario and print a report.
    Demo,
    /// Serve the HTTP JSON API.
    Serve(ServeArgs),
    /// Relay the log to a broker, exactly once, until Ctrl-C (one relay per broker is active).
    Relay(RelayArgs),
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
    Freeze(Reason),
    /// Unfreeze an account.
    Unfreeze(Reason),
    /// Close an account (only at a zero balance).
    Close(Reason),
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
    /// The consumers (read models, process manager): progress, lag and parked events.
    Status,
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTP limits and timeouts.
    #[command(flatten)]
    pub http: HttpOptions,
    /// Build the read models from a broker (`redis://…` or `nats://…`) that `ledger relay`
    /// feeds, instead of from the store.
    #[arg(long, env = "LEDGER_READ_FROM")]
    pub read_from: Option<Broker>,
    /// The broker's key prefix (Redis) or stream (NATS).
    #[arg(long, env = "LEDGER_BROKER_NAME", default_value = "events")]
    pub broker_name: String,
}

/// Options of `relay`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("broker").required(true).args(["redis", "nats"])))]
pub struct RelayArgs {
    /// Relay to Redis Streams at this URL.
    #[arg(long)]
    pub redis: Option<String>,
    /// Relay to NATS JetStream at this URL.
    #[arg(long)]
    pub nats: Option<String>,
    /// The broker's key prefix (Redis) or stream (NATS).
    #[arg(long, env = "LEDGER_BROKER_NAME", default_value = "events")]
    pub broker_name: String,
}

impl RelayArgs {
    /// The broker chosen.
    pub fn broker(&self) -> Broker {
        match (&self.redis, &self.nats) {
            (Some(url), _) => Broker::Redis(url.clone()),
            (None, url) => Broker::Nats(url.clone().unwrap_or_default()),
        }
    }
}

/// Arguments of a deposit or withdrawal.
#[derive(Debug, Args)]
pub struct Movement {
    /// Account id.
    pub account: String,
    /// Decimal amount in the account's currency, e.g. 12.50.
    pub amount: String,
    /// Reference.
    #[arg(long, default_value = "")]
    pub reference: String,
}

/// Arguments of a freeze, unfreeze or close.
#[derive(Debug, Args)]
pub struct Reason {
    /// Account id.
    pub account: String,
    /// Why.
    #[arg(long, default_value = "")]
    pub reason: String,
}

impl Cli {
    /// The context of the command: who, which flow, and its idempotency key.
    pub fn cmd(&self) -> Cmd {
        let mut meta = Metadata::by_user(&self.user).with_causation_id(Uuid::now_v7());
        if let Some(correlation) = self.correlation_id {
            meta = meta.with_correlation_id(correlation);
        }
        let key = self
            .key
            .as_deref()
            .map_or_else(CommandKey::new, CommandKey::from_text);
        Cmd::new(meta).with_key(key)
    }
}

/// Writes `value` as JSON with `--json`, else as `text` renders it.
fn show<T: Serialize, W: Write + ?Sized>(
    out: &mut W,
    json: bool,
    value: &T,
    text: impl FnOnce(&mut W, &T) -> std::io::Result<()>,
) -> Result<(), CliError> {
    Ok(if json {
        report::json(out, value)
    } else {
        text(out, value)
    }?)
}

/// Runs one subcommand (all but `serve` and `relay`) against `ledger`, writing the report to
/// `out`.
pub async fn execute<S: Store>(
    ledger: &Ledger<S>,
    cli: Cli,
    out: &mut (impl Write + Send),
) -> Result<(), CliError> {
    let (cmd, json) = (cli.cmd(), cli.json);
    let mut on_account = async |id: &str, command| {
        let receipt = ledger.on_account(cmd.clone(), id, command).await?;
        let row = ledger.account_after(id, receipt.position).await?;
        show(out, json, &row, report::account)
    };
    match cli.command {
        Command::Demo => crate::demo::run(ledger, out).await?,
        Command::Serve(_) | Command::Relay(_) => return Err("run by main".into()),
        Command::Open {
            id,
            owner,
            currency,
            overdraft,
        } => {
            let currency: Currency = currency.parse()?;
            let overdraft_limit = Money::parse(&overdraft, currency.clone())?.minor;
            let open = AccountCommand::Open {
                owner,
                currency,
                overdraft_limit,
            };
            on_account(&id, open).await?;
        }
        Command::Deposit(m) => {
            let amount = parse_amount(ledger, &m.account, &m.amount).await?;
            on_account(&m.account, AccountCommand::Deposit(amount, m.reference)).await?;
        }
        Command::Withdraw(m) => {
            let amount = parse_amount(ledger, &m.account, &m.amount).await?;
            on_account(&m.account, AccountCommand::Withdraw(amount, m.reference)).await?;
        }
        Command::Freeze(r) => on_account(&r.account, AccountCommand::Freeze(r.reason)).await?,
        Command::Unfreeze(r) => on_account(&r.account, AccountCommand::Unfreeze(r.reason)).await?,
        Command::Close(r) => on_account(&r.account, AccountCommand::Close(r.reason)).await?,
        Command::Transfer {
            from,
            to,
            amount,
            reference,
        } => {
            let amount = parse_amount(ledger, &from, &amount).await?;
            let outcome = ledger
                .transfer(cmd, &from, &to, &amount, &reference)
                .await?;
            show(out, json, &outcome, |out, o| {
                writeln!(out, "{}", report::outcome(o))
            })?;
        }
        Command::Balance {
            account,
            version,
            at,
        } => {
            let as_of = at.map_or(AsOf::Version(version.unwrap_or(u64::MAX)), AsOf::Time);
            let b = ledger.balance_as_of(&account, as_of).await?;
            show(out, json, &b, |out, b| {
                let currency = b.currency.as_ref().map_or("", Currency::as_str);
                let (display, version, status) = (&b.balance_display, b.version, b.status);
                writeln!(
                    out,
                    "{account}: {display} {currency} at version {version} ({status})"
                )
            })?;
        }
        Command::Balances => show(out, json, &ledger.balances().await?, |o, r| {
            report::balances(o, r)
        })?,
        Command::Statement { account } => {
            let lines = ledger.statement(&account, Page::all()).await?.items;
            let currency = ledger.account(&account).await?.currency;
            show(out, json, &lines, |out, lines| {
                report::statement(out, lines, &currency)
            })?;
        }
        Command::History { account } => {
            let entries = ledger.audit(&account, Page::all()).await?.items;
            show(out, json, &entries, |o, e| report::audit(o, e))?;
        }
        Command::Trace { correlation_id } => {
            let entries = ledger.trace(correlation_id, Page::all()).await?.items;
            show(out, json, &entries, |o, e| report::audit(o, e))?;
        }
        Command::Transfers => {
            let rows = ledger.transfers(Page::all()).await?.items;
            show(out, json, &rows, |o, r| report::transfers(o, r))?;
        }
        Command::Totals => show(out, json, &ledger.totals().await?, report::totals)?,
        Command::Rebuild => {
            let p = report::rebuild(ledger).await?;
            let (events, took) = (p.done, p.elapsed);
            writeln!(
                out,
                "rebuilt the read models from {events} events in {took:.1?}; invariants hold"
            )?;
        }
        Command::Status => {
            ledger.balances().await?; // the read models caught up
            report::status(out, &ledger.status(), &ledger.parked().await?)?;
        }
    }
    Ok(())
}

async fn parse_amount<S: Store>(
    ledger: &Ledger<S>,
    account: &str,
    amount: &str,
) -> Result<Money, CliError> {
    let account = ledger.load_account(account).await?;
    let currency = account
        .currency()
        .cloned()
        .ok_or("the account has no currency")?;
    Ok(Money::parse(amount, currency)?)
}
