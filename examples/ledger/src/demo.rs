//! `ledger demo`: a scripted scenario with a readable report. On a ledger that already holds
//! a demo, the account ids get a suffix, so that the demo can run again on the same data.

use std::io::Write;

use chrono::Utc;
use es_core::{AsOf, ExpectedVersion, Metadata, NewEvent, StreamId};
use serde_json::value::to_raw_value;
use uuid::Uuid;

use crate::app::{AccountCommand as A, AppError, Ledger, Page, Store, TransferOutcome};
use crate::domain::{Currency, Money};
use crate::report;
use es_core::BoxError as CliError;

/// Runs the scenario on `ledger` and writes the report to `out`.
pub async fn run<S: Store>(
    ledger: &Ledger<S>,
    out: &mut (impl Write + Send),
) -> Result<(), CliError> {
    let tag = match ledger.load_account("alice").await {
        Err(AppError::NotFound(_)) => String::new(),
        _ => format!("-{}", &Uuid::now_v7().simple().to_string()[26..]),
    };
    let (eur, usd): (Currency, Currency) = ("EUR".parse()?, "USD".parse()?);
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
        let open = A::Open {
            owner: owner.into(),
            currency: currency.clone(),
            overdraft_limit: overdraft.minor,
        };
        ledger.on_account(teller(), id, open).await?;
        writeln!(
            out,
            "  opened {id:<8} for {owner:<13} in {currency} (overdraft {overdraft})"
        )?;
    }

    heading(out, "2. Deposits and a withdrawal")?;
    ledger
        .on_account(
            teller(),
            &alice,
            A::Deposit(eur_amount("1000.00")?, "salary".into()),
        )
        .await?;
    ledger
        .on_account(
            teller(),
            &bob,
            A::Deposit(eur_amount("250.00")?, "birthday gift".into()),
        )
        .await?;
    let usd_500 = Money::parse("500.00", usd.clone())?;
    ledger
        .on_account(
            teller(),
            &dave,
            A::Deposit(usd_500, "opening deposit".into()),
        )
        .await?;
    ledger
        .on_account(
            command("atm-042"),
            &bob,
            A::Withdraw(eur_amount("20.00")?, "ATM".into()),
        )
        .await?;
    writeln!(
        out,
        "  alice +1000.00 EUR, bob +250.00 EUR, dave +500.00 USD, bob -20.00 EUR (ATM)"
    )?;

    heading(
        out,
        "3. Transfers (a process: debit source, credit destination, compensate on failure)",
    )?;
    let transfer = async |out: &mut (dyn Write + Send),
                          user: &str,
                          from: &str,
                          to: &str,
                          amount: &str,
                          reference: &str| {
        let outcome = ledger
            .transfer(command(user), from, to, &eur_amount(amount)?, reference)
            .await?;
        let reason = outcome
            .reason
            .as_deref()
            .map(|r| format!(" {r}"))
            .unwrap_or_default();
        let status = outcome.status.as_str();
        writeln!(
            out,
            "  {from:>6} -> {to:<6} {amount:>9} EUR  {status:<12}{reason}"
        )?;
        Ok::<TransferOutcome, CliError>(outcome)
    };
    transfer(out, "alice", &alice, &bob, "150.00", "rent share").await?;
    // The moment and version the as-of queries below look back to.
    let before_more = Utc::now();
    let alice_then = ledger
        .balance_as_of(&alice, AsOf::Version(u64::MAX))
        .await?
        .version;
    transfer(out, "bob", &bob, &carol, "50.00", "concert tickets").await?;
    transfer(
        out,
        "carol",
        &carol,
        &alice,
        "80.00",
        "dinner (uses the overdraft)",
    )
    .await?;
    ledger
        .on_account(
            command("compliance-officer"),
            &carol,
            A::Freeze("suspicious login".into()),
        )
        .await?;
    writeln!(
        out,
        "  (compliance-officer froze {carol}: suspicious login)"
    )?;
    let compensated = transfer(out, "alice", &alice, &carol, "200.00", "loan").await?;
    transfer(out, "bob", &bob, &alice, "10000.00", "too much").await?;
    transfer(out, "alice", &alice, &dave, "10.00", "wrong currency").await?;

    heading(out, "4. Commands the domain refuses")?;
    let usd_1 = Money::parse("1.00", usd.clone())?;
    for (what, id, refused) in [
        (
            format!("withdraw 5.00 from frozen {carol}"),
            &carol,
            A::Withdraw(eur_amount("5.00")?, "cash".into()),
        ),
        (
            format!("close {bob} with money on it"),
            &bob,
            A::Close("moving abroad".into()),
        ),
        (
            format!("deposit USD into {alice}"),
            &alice,
            A::Deposit(usd_1, String::new()),
        ),
        (
            "deposit into an account that does not exist".into(),
            &format!("nobody{tag}"),
            A::Deposit(eur_amount("1.00")?, String::new()),
        ),
    ] {
        match ledger.on_account(teller(), id, refused).await {
            Ok(_) => writeln!(out, "  {what}: accepted (unexpected!)")?,
            Err(e) => writeln!(out, "  {what}: refused: {e}")?,
        }
    }

    heading(
        out,
        "5. Schema evolution: a deposit stored by version 1 of the app",
    )?;
    import_legacy_account(ledger, &erin, &eur).await?;
    for e in ledger.audit(&erin, Page::all()).await?.items {
        let (v, name, schema, what) = (e.version, &e.event, e.schema_version, &e.description);
        writeln!(out, "  v{v} {name} (schema v{schema}) -> {what}")?;
    }

    heading(out, "6. Balances (read model)")?;
    report::balances(out, &ledger.balances().await?)?;

    heading(out, "7. Time travel")?;
    let now = ledger
        .balance_as_of(&alice, AsOf::Version(u64::MAX))
        .await?;
    let then = ledger
        .balance_as_of(&alice, AsOf::Version(alice_then))
        .await?;
    let by_time = ledger
        .balance_as_of(&alice, AsOf::Time(before_more))
        .await?;
    let first = ledger.balance_as_of(&alice, AsOf::Version(2)).await?;
    let at = before_more.format("%H:%M:%S%.3f");
    writeln!(
        out,
        "  {alice} now:                    {} EUR (version {})",
        now.balance_display, now.version
    )?;
    writeln!(
        out,
        "  {alice} as of version {alice_then}:        {} EUR",
        then.balance_display
    )?;
    writeln!(
        out,
        "  {alice} as of {at}: {} EUR (version {})",
        by_time.balance_display, by_time.version
    )?;
    writeln!(
        out,
        "  {alice} as of version 2:        {} EUR",
        first.balance_display
    )?;

    heading(out, &format!("8. Statement of {alice} (running balance)"))?;
    report::statement(
        out,
        &ledger.statement(&alice, Page::all()).await?.items,
        &eur,
    )?;

    heading(
        out,
        &format!("9. Audit trail of {alice}: who, what, when, which flow"),
    )?;
    report::audit(out, &ledger.audit(&alice, Page::all()).await?.items)?;

    if let Some(correlation) = compensated.correlation_id {
        let short = report::short(&correlation);
        heading(
            out,
            &format!("10. Trace of the compensated transfer (correlation {short})"),
        )?;
        report::audit(out, &ledger.trace(correlation, Page::all()).await?.items)?;
    }

    heading(out, "11. Totals per currency (money is conserved)")?;
    report::totals(out, &ledger.totals().await?)?;

    heading(out, "12. Rebuild the read models from position 0")?;
    ledger.wait_idle().await?;
    let live = ledger.read_models().await?;
    let progress = report::rebuild(ledger).await?;
    let same = ledger.read_models().await? == live;
    let verdict = if same { "equal" } else { "DIFFER FROM" };
    let (events, took) = (progress.done, progress.elapsed);
    writeln!(
        out,
        "  replayed {events} events in {took:.1?}; rebuilt read models {verdict} the live ones; invariants hold"
    )?;
    if !same {
        return Err("the rebuilt read models differ from the live ones".into());
    }
    Ok(())
}

/// Writes an account and a version-1 `MoneyDeposited` payload straight to the store, as the
/// first release of the app would have: it has no `reference` field.
async fn import_legacy_account<S: Store>(
    ledger: &Ledger<S>,
    id: &str,
    eur: &Currency,
) -> Result<(), CliError> {
    let meta = Metadata::by_user("migration-2019").with_causation_id(Uuid::now_v7());
    let open = A::Open {
        owner: "Erin Legacy".into(),
        currency: eur.clone(),
        overdraft_limit: 0,
    };
    ledger.on_account(meta.clone(), id, open).await?;
    let legacy = NewEvent {
        event_id: Uuid::now_v7(),
        event_name: "MoneyDeposited".into(),
        schema_version: 1,
        payload: to_raw_value(&serde_json::json!({ "amount": 4200 }))?,
        metadata: meta,
    };
    let stream = StreamId::new("Account", id);
    let stored = ledger
        .store()
        .append(&stream, ExpectedVersion::Exact(1), vec![legacy])
        .await;
    let position = stored
        .map_err(AppError::from)?
        .last()
        .map_or(0, |e| e.position);
    ledger.account_after(id, position).await?;
    Ok(())
}

fn heading(out: &mut (impl Write + ?Sized), title: &str) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(out, "== {title}")
}
