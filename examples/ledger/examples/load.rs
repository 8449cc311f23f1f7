//! Load generator: transfers per second through the ledger on PostgreSQL (or SQLite), with
//! N concurrent clients each asking for transfers and waiting for their outcome (completed,
//! read models included), as the HTTP handler does. Run by hand, in release:
//!
//! ```text
//! cargo run --release -p ledger --example load -- [clients] [transfers] [sqlite]
//! ```
//!
//! Uses a fresh PostgreSQL schema at `DATABASE_URL` (dropped afterwards unless
//! `LOAD_KEEP_SCHEMA` is set, to study its events), 64 accounts.

use std::time::{Duration, Instant};

use es_core::Metadata;
use ledger::AccountCommand;
use ledger::domain::Money;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let clients: usize = args.get(1).map_or(Ok(32), |a| a.parse())?;
    let transfers: usize = args.get(2).map_or(Ok(5_000), |a| a.parse())?;
    let sqlite = args.get(3).is_some_and(|a| a == "sqlite");
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let schema = format!("ledger_load_{}", uuid::Uuid::now_v7().simple());
    if sqlite {
        let path = std::env::temp_dir().join(format!("{schema}.db"));
        let store = es_sqlite::SqliteStore::open(&path).await?;
        let ledger = ledger::storage::with_leases(store, None, true).await?;
        run(&ledger, clients, transfers).await?;
        ledger.shutdown().await?;
        let _ = std::fs::remove_file(path);
    } else {
        let ledger = ledger::storage::postgres(&url, &schema, true).await?;
        run(&ledger, clients, transfers).await?;
        ledger.shutdown().await?;
        if std::env::var_os("LOAD_KEEP_SCHEMA").is_some() {
            eprintln!("kept schema {schema}");
        } else {
            let drop = format!("DROP SCHEMA \"{schema}\" CASCADE");
            sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(ledger.store().pool())
                .await?;
        }
    }
    Ok(())
}

async fn run<S: ledger::app::Store>(
    ledger: &ledger::Ledger<S>,
    clients: usize,
    transfers: usize,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    const ACCOUNTS: usize = 64;
    let eur = |minor| Money::new(minor, "EUR".parse().expect("EUR"));
    for i in 0..ACCOUNTS {
        let id = format!("load-{i}");
        let open = AccountCommand::Open {
            owner: id.clone(),
            currency: eur(0).currency,
            overdraft_limit: 0,
        };
        ledger
            .on_account(Metadata::by_user("load"), &id, open)
            .await?;
        let deposit = AccountCommand::Deposit(eur(1_000_000_000), "seed".into());
        ledger
            .on_account(Metadata::by_user("load"), &id, deposit)
            .await?;
    }
    let started = Instant::now();
    let tasks = (0..clients).map(|client| {
        let ledger = ledger.clone();
        let count = transfers / clients + usize::from(client < transfers % clients);
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for n in 0..count {
                let from = (client * 7 + n) % ACCOUNTS;
                let to = (from + 1 + (n * 13) % (ACCOUNTS - 1)) % ACCOUNTS;
                let (from, to) = (format!("load-{from}"), format!("load-{to}"));
                let asked = Instant::now();
                let outcome = ledger
                    .transfer(Metadata::by_user("load"), &from, &to, &eur(1), "load")
                    .await?;
                assert_eq!(outcome.status.as_str(), "completed");
                latencies.push(asked.elapsed());
            }
            Ok::<_, ledger::AppError>(latencies)
        })
    });
    let mut latencies: Vec<Duration> = Vec::new();
    for task in futures::future::join_all(tasks).await {
        latencies.extend(task??);
    }
    let took = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{} transfers, {clients} clients: {:.1?} -> {:.0} transfers/s; latency p50 {:.1?} p99 {:.1?}",
        latencies.len(),
        took,
        latencies.len() as f64 / took.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
    ledger.wait_idle().await?;
    ledger.check().await?;
    Ok(())
}
