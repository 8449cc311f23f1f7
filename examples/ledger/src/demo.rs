//! `ledger demo`: a scripted scenario with a readable report.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::Utc;
use es_core::{AsOf, EventStore, ExpectedVersion, Metadata, NewEvent, StreamId};
use serde_json::value::to_raw_value;
use uuid::Uuid;

use crate::app::{AppError, AuditEntry, Ledger, TransferOutcome};
use crate::cli::{CliError, rebuild_with_progress};
use crate::domain::{Currency, Money};
use crate::read_model::{AccountRow, CurrencyTotals, StatementLine};

/// Runs the scenario on `ledger` and writes the report to `out`. Account ids get `tag`
/// appended, so the demo can run on a database that holds an earlier run.
pub async fn run<S: EventStore>(
    ledger: &Ledger<S>,
    out: &mut (impl Write + Send),
    tag: &str,
) -> Result<(), CliError> {
    let eur: Currency = "EUR".parse()?;
    let usd: Currency = "USD".parse()?;
    let [alice, bob, carol, dave, erin] =
        ["alice", "bob", "carol", "dave", "erin"].map(|name| format!("{name}{tag}"));
    // Every command carries who (user), which flow (correlation) and why (causation: here
    // the command's own id, as the CLI and the HTTP API do).
    let command = |user: &str| Metadata::by_user(user).with_causation_id(Uuid::now_v7());
    let teller = || command("teller-7");
    let eur_amount = |text: &str| Money::parse(text, eur.clone());

    heading(out, "1. Opening accounts")?;
    for (id, owner, currency, overdraft) in [
        (&alice, "Alice Martin", &eur, "0"),
        (&bob, "Bob Okafor", &eur, "0"),
        (&carol, "Carol Nguyen", &eur, "100.00"),
        (&dave, "Dave Smith", &usd, "0"),
    ] {
        let overdraft = Money::parse(overdraft, currency.clone())?;
        ledger
            .open_account(teller(), id, owner, currency.clone(), overdraft.minor)
            .await?;
        writeln!(
            out,
            "  opened {id:<8} for {owner:<13} in {currency} (overdraft {overdraft})"
        )?;
    }

    heading(out, "2. Deposits and a withdrawal")?;
    ledger
        .deposit(teller(), &alice, &eur_amount("1000.00")?, "salary")
        .await?;
    ledger
        .deposit(teller(), &bob, &eur_amount("250.00")?, "birthday gift")
        .await?;
    ledger
        .deposit(
            teller(),
            &dave,
            &Money::parse("500.00", usd.clone())?,
            "opening deposit",
        )
        .await?;
    ledger
        .withdraw(command("atm-042"), &bob, &eur_amount("20.00")?, "ATM")
        .await?;
    writeln!(
        out,
        "  alice +1000.00 EUR, bob +250.00 EUR, dave +500.00 USD, bob -20.00 EUR (ATM)"
    )?;

    heading(
        out,
        "3. Transfers (a process: debit source, credit destination, compensate on failure)",
    )?;
    let transfer = async |user: &str, from: &str, to: &str, amount: &str, reference: &str| {
        let outcome = ledger
            .transfer(command(user), from, to, &eur_amount(amount)?, reference)
            .await?;
        Ok::<TransferOutcome, CliError>(outcome)
    };
    let show =
        |out: &mut (dyn Write + Send), from: &str, to: &str, amount: &str, o: &TransferOutcome| {
            writeln!(
                out,
                "  {from:>6} -> {to:<6} {amount:>9} EUR  {:<12}{}",
                o.status.as_str(),
                o.reason
                    .as_deref()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            )
        };
    let o = transfer("alice", &alice, &bob, "150.00", "rent share").await?;
    show(out, &alice, &bob, "150.00", &o)?;

    // The moment and version the as-of queries below look back to.
    let before_more = Utc::now();
    let alice_version_then = ledger
        .balance_as_of(&alice, AsOf::Version(u64::MAX))
        .await?
        .version;

    let o = transfer("bob", &bob, &carol, "50.00", "concert tickets").await?;
    show(out, &bob, &carol, "50.00", &o)?;
    let o = transfer(
        "carol",
        &carol,
        &alice,
        "80.00",
        "dinner (uses the overdraft)",
    )
    .await?;
    show(out, &carol, &alice, "80.00", &o)?;

    ledger
        .freeze(command("compliance-officer"), &carol, "suspicious login")
        .await?;
    writeln!(
        out,
        "  (compliance-officer froze {carol}: suspicious login)"
    )?;
    let compensated = transfer("alice", &alice, &carol, "200.00", "loan").await?;
    show(out, &alice, &carol, "200.00", &compensated)?;
    let o = transfer("bob", &bob, &alice, "10000.00", "too much").await?;
    show(out, &bob, &alice, "10000.00", &o)?;
    let o = transfer("alice", &alice, &dave, "10.00", "wrong currency").await?;
    show(out, &alice, &dave, "10.00", &o)?;

    heading(out, "4. Commands the domain refuses")?;
    for (what, result) in [
        (
            format!("withdraw 5.00 from frozen {carol}"),
            ledger
                .withdraw(teller(), &carol, &eur_amount("5.00")?, "cash")
                .await,
        ),
        (
            format!("close {bob} with money on it"),
            ledger.close(teller(), &bob, "moving abroad").await,
        ),
        (
            format!("deposit USD into {alice}"),
            ledger
                .deposit(teller(), &alice, &Money::parse("1.00", usd.clone())?, "")
                .await,
        ),
        (
            "deposit into an account that does not exist".to_owned(),
            ledger
                .deposit(teller(), &format!("nobody{tag}"), &eur_amount("1.00")?, "")
                .await,
        ),
    ] {
        match result {
            Ok(_) => writeln!(out, "  {what}: accepted (unexpected!)")?,
            Err(e) => writeln!(out, "  {what}: refused: {e}")?,
        }
    }

    heading(
        out,
        "5. Schema evolution: a deposit stored by version 1 of the app",
    )?;
    import_legacy_account(ledger, &erin, &eur).await?;
    let erin_history = ledger.audit(&erin).await?;
    for e in &erin_history {
        writeln!(
            out,
            "  v{} {} (schema v{}) -> {}",
            e.version, e.event, e.schema_version, e.description
        )?;
    }

    heading(out, "6. Balances (read model)")?;
    write_balances(out, &ledger.balances().await?)?;

    heading(out, "7. Time travel")?;
    let now = ledger
        .balance_as_of(&alice, AsOf::Version(u64::MAX))
        .await?;
    let by_version = ledger
        .balance_as_of(&alice, AsOf::Version(alice_version_then))
        .await?;
    let by_time = ledger
        .balance_as_of(&alice, AsOf::Time(before_more))
        .await?;
    let first = ledger.balance_as_of(&alice, AsOf::Version(2)).await?;
    writeln!(
        out,
        "  {alice} now:                    {} EUR (version {})",
        now.balance_display, now.version
    )?;
    writeln!(
        out,
        "  {alice} as of version {}:        {} EUR",
        alice_version_then, by_version.balance_display
    )?;
    writeln!(
        out,
        "  {alice} as of {}: {} EUR (version {})",
        before_more.format("%H:%M:%S%.3f"),
        by_time.balance_display,
        by_time.version
    )?;
    writeln!(
        out,
        "  {alice} as of version 2:        {} EUR",
        first.balance_display
    )?;

    heading(out, &format!("8. Statement of {alice} (running balance)"))?;
    write_statement(out, &ledger.statement(&alice).await?, &eur)?;

    heading(
        out,
        &format!("9. Audit trail of {alice}: who, what, when, which flow"),
    )?;
    write_audit(out, &ledger.audit(&alice).await?)?;

    if let Some(correlation) = compensated.correlation_id {
        heading(
            out,
            &format!(
                "10. Trace of the compensated transfer (correlation {})",
                short(&correlation)
            ),
        )?;
        write_audit(out, &ledger.trace(correlation).await?)?;
    }

    heading(out, "11. Totals per currency (money is conserved)")?;
    write_totals(out, &ledger.totals().await?)?;

    heading(out, "12. Rebuild the read models from position 0")?;
    let live = ledger.read_models().await?;
    let progress = rebuild_with_progress(ledger).await?;
    let rebuilt = ledger.read_models().await?;
    writeln!(
        out,
        "  replayed {} events in {:.1?}; rebuilt read models {} the live ones; invariants hold",
        progress.done,
        progress.elapsed,
        if rebuilt == live {
            "equal"
        } else {
            "DIFFER FROM"
        }
    )?;
    if rebuilt != live {
        return Err("the rebuilt read models differ from the live ones".into());
    }
    Ok(())
}

/// Writes an account and a version-1 `MoneyDeposited` payload straight to the store, as the
/// first release of the app would have: it has no `reference` field.
async fn import_legacy_account<S: EventStore>(
    ledger: &Ledger<S>,
    id: &str,
    eur: &Currency,
) -> Result<(), CliError> {
    let meta = Metadata::by_user("migration-2019").with_causation_id(Uuid::now_v7());
    ledger
        .open_account(meta.clone(), id, "Erin Legacy", eur.clone(), 0)
        .await?;
    let legacy = NewEvent {
        event_id: Uuid::now_v7(),
        event_name: "MoneyDeposited".into(),
        schema_version: 1,
        payload: to_raw_value(&serde_json::json!({ "amount": 4200 }))?,
        metadata: meta,
    };
    ledger
        .store()
        .append(
            &StreamId::new("Account", id),
            ExpectedVersion::Exact(1),
            vec![legacy],
        )
        .await
        .map_err(AppError::from)?;
    Ok(())
}

fn heading(out: &mut (impl Write + ?Sized), title: &str) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(out, "== {title}")
}

/// `Transfer/<uuid>` as `Transfer/…<last 8>`, so that tables stay narrow.
fn short_stream(stream: &str) -> String {
    match stream.split_once('/') {
        Some((kind, id)) if id.len() > 12 => format!("{kind}/…{}", &id[id.len() - 8..]),
        _ => stream.to_owned(),
    }
}

fn short(id: &Uuid) -> String {
    let text = id.to_string();
    text[text.len() - 8..].to_owned()
}

/// Writes a balances table.
pub fn write_balances(out: &mut (impl Write + ?Sized), rows: &[AccountRow]) -> std::io::Result<()> {
    writeln!(
        out,
        "  {:<10} {:<14} {:>12} {:<4} status",
        "account", "owner", "balance", "cur"
    )?;
    for row in rows {
        writeln!(
            out,
            "  {:<10} {:<14} {:>12} {:<4} {}",
            row.id,
            row.owner,
            row.balance_display,
            row.currency,
            row.status.as_str()
        )?;
    }
    Ok(())
}

/// Writes a statement.
pub fn write_statement(
    out: &mut (impl Write + ?Sized),
    lines: &[StatementLine],
    currency: &Currency,
) -> std::io::Result<()> {
    writeln!(
        out,
        "  {:>3} {:<12} {:>10} {:>10}  description",
        "v", "time", "amount", "balance"
    )?;
    for line in lines {
        writeln!(
            out,
            "  {:>3} {:<12} {:>10} {:>10}  {}",
            line.version,
            line.recorded_at.format("%H:%M:%S%.3f"),
            signed(line.amount, currency),
            signed(line.balance, currency),
            line.description
        )?;
    }
    Ok(())
}

fn signed(minor: i64, currency: &Currency) -> String {
    let text = Money::format_minor(minor, currency);
    if minor > 0 { format!("+{text}") } else { text }
}

/// Writes an audit trail.
pub fn write_audit(out: &mut (impl Write + ?Sized), entries: &[AuditEntry]) -> std::io::Result<()> {
    writeln!(
        out,
        "  {:<18} {:>3} {:<12} {:<18} {:<8} {:<8}  what",
        "stream", "v", "time", "user", "corr", "cause"
    )?;
    for e in entries {
        writeln!(
            out,
            "  {:<18} {:>3} {:<12} {:<18} {:<8} {:<8}  {}",
            short_stream(&e.stream),
            e.version,
            e.recorded_at.format("%H:%M:%S%.3f"),
            e.user_id.as_deref().unwrap_or("-"),
            e.correlation_id.as_ref().map(short).unwrap_or_default(),
            e.causation_id.as_ref().map(short).unwrap_or_default(),
            e.description
        )?;
    }
    Ok(())
}

/// Writes the totals per currency with the conservation check.
pub fn write_totals(
    out: &mut (impl Write + ?Sized),
    totals: &BTreeMap<Currency, CurrencyTotals>,
) -> std::io::Result<()> {
    for (currency, t) in totals {
        writeln!(
            out,
            "  {currency}: paid in net {}, sum of balances {}, in flight {} -> {}",
            Money::format_minor(t.net_inflow, currency),
            Money::format_minor(t.balances, currency),
            Money::format_minor(t.in_flight, currency),
            if t.balanced() {
                "conserved"
            } else {
                "NOT CONSERVED"
            }
        )?;
    }
    Ok(())
}
