//! Text and JSON rendering of query results, shared by the CLI and the demo.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Result, Write};

use es_core::{ParkedEvent, Progress, Status};
use indicatif::{ProgressBar, ProgressDrawTarget};
use serde::Serialize;
use uuid::Uuid;

use crate::app::{AppError, AuditEntry, Ledger, Store, TransferOutcome};
use crate::domain::{Currency, Money};
use crate::read_models::{AccountRow, CurrencyTotals, StatementLine, TransferRow};

/// Writes `value` as pretty JSON and a newline.
pub fn json(out: &mut (impl Write + ?Sized), value: &impl Serialize) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// Writes one account on a line.
pub fn account(out: &mut (impl Write + ?Sized), row: &AccountRow) -> Result<()> {
    let (id, owner, status) = (&row.id, &row.owner, row.status.as_str());
    writeln!(
        out,
        "{id} ({owner}): {} {} [{status}]",
        row.balance_display, row.currency
    )
}

/// Writes a balances table.
pub fn balances(out: &mut (impl Write + ?Sized), rows: &[AccountRow]) -> Result<()> {
    writeln!(
        out,
        "  {:<10} {:<14} {:>12} {:<4} status",
        "account", "owner", "balance", "cur"
    )?;
    for r in rows {
        let (id, owner, balance, cur) = (&r.id, &r.owner, &r.balance_display, &r.currency);
        writeln!(
            out,
            "  {id:<10} {owner:<14} {balance:>12} {cur:<4} {}",
            r.status.as_str()
        )?;
    }
    Ok(())
}

/// Writes a statement.
pub fn statement(
    out: &mut (impl Write + ?Sized),
    lines: &[StatementLine],
    currency: &Currency,
) -> Result<()> {
    writeln!(
        out,
        "  {:>3} {:<12} {:>10} {:>10}  description",
        "v", "time", "amount", "balance"
    )?;
    let signed = |minor: i64| {
        let text = Money::format_minor(minor, currency);
        if minor > 0 { format!("+{text}") } else { text }
    };
    for l in lines {
        let (amount, balance) = (signed(l.amount), signed(l.balance));
        let time = l.recorded_at.format("%H:%M:%S%.3f");
        writeln!(
            out,
            "  {:>3} {time:<12} {amount:>10} {balance:>10}  {}",
            l.version, l.description
        )?;
    }
    Ok(())
}

/// The last 8 characters of an id, so that tables stay narrow.
pub fn short(id: &Uuid) -> String {
    let text = id.to_string();
    text[text.len() - 8..].to_owned()
}

/// `Transfer/<uuid>` as `Transfer/…<last 8>`.
fn short_stream(stream: &str) -> String {
    match stream.split_once('/') {
        Some((kind, id)) if id.len() > 12 => format!("{kind}/…{}", &id[id.len() - 8..]),
        _ => stream.to_owned(),
    }
}

/// Writes an audit trail.
pub fn audit(out: &mut (impl Write + ?Sized), entries: &[AuditEntry]) -> Result<()> {
    let header = ("stream", "v", "time", "user", "corr", "cause");
    let (s, v, t, u, c, k) = header;
    writeln!(out, "  {s:<18} {v:>3} {t:<12} {u:<18} {c:<8} {k:<8}  what")?;
    for e in entries {
        let (stream, time) = (
            short_stream(&e.stream),
            e.recorded_at.format("%H:%M:%S%.3f"),
        );
        let user = e.user_id.as_deref().unwrap_or("-");
        let corr = e.correlation_id.as_ref().map(short).unwrap_or_default();
        let cause = e.causation_id.as_ref().map(short).unwrap_or_default();
        let (v, what) = (e.version, &e.description);
        writeln!(
            out,
            "  {stream:<18} {v:>3} {time:<12} {user:<18} {corr:<8} {cause:<8}  {what}"
        )?;
    }
    Ok(())
}

/// Writes the totals per currency with the conservation check.
pub fn totals(
    out: &mut (impl Write + ?Sized),
    totals: &BTreeMap<Currency, CurrencyTotals>,
) -> Result<()> {
    for (currency, t) in totals {
        let amount = |minor: i128| Money::format_minor(minor, currency);
        let verdict = if t.balanced() {
            "conserved"
        } else {
            "NOT CONSERVED"
        };
        let (net, sum, flight) = (
            amount(t.net_inflow),
            amount(t.balances),
            amount(t.in_flight),
        );
        writeln!(
            out,
            "  {currency}: paid in net {net}, sum of balances {sum}, in flight {flight} -> {verdict}"
        )?;
    }
    Ok(())
}

/// Writes transfers, one a line.
pub fn transfers(out: &mut (impl Write + ?Sized), rows: &[TransferRow]) -> Result<()> {
    for t in rows {
        let amount = Money::new(t.amount, t.currency.clone());
        let reason = t
            .reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let (id, from, to) = (t.id, &t.from_account, &t.to_account);
        writeln!(out, "{id}  {from} -> {to}  {amount}  {}{reason}", t.status)?;
    }
    Ok(())
}

/// A one-line description of a transfer's outcome.
pub fn outcome(outcome: &TransferOutcome) -> String {
    let (id, status) = (outcome.transfer_id, outcome.status);
    match &outcome.reason {
        Some(reason) => format!("transfer {id} {status}: {reason}"),
        None => format!("transfer {id} {status}"),
    }
}

/// Writes the consumers' status, and the events the process manager parked.
pub fn status(
    out: &mut (impl Write + ?Sized),
    statuses: &[Status],
    parked: &[ParkedEvent],
) -> Result<()> {
    for s in statuses {
        let error = s
            .last_error
            .as_deref()
            .map(|e| format!(" last error: {e}"))
            .unwrap_or_default();
        writeln!(
            out,
            "  {:<24} {:?} checkpoint {} head {} lag {} parked {}{error}",
            s.name, s.state, s.checkpoint, s.head, s.lag, s.parked
        )?;
    }
    for p in parked {
        let (position, stream, version, error) = (p.position, &p.stream, p.version, &p.error);
        writeln!(out, "  parked at {position}: {stream} v{version}: {error}")?;
    }
    Ok(())
}

/// Rebuilds the read models from position 0, with a progress bar when stderr is a terminal.
pub async fn rebuild<S: Store>(ledger: &Ledger<S>) -> std::result::Result<Progress, AppError> {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    let progress = ledger.rebuild(|p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    });
    let progress = progress.await;
    bar.finish_and_clear();
    progress
}

/// `text` with the password of every URL in it (`scheme://user:password@host`) and every
/// `password=…` parameter replaced by `***`: log lines and error messages pass through it.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let (head, tail) = rest.split_at(start + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || "/?#\"'".contains(c))
            .unwrap_or(tail.len());
        match tail[..end]
            .rfind('@')
            .and_then(|at| Some((at, tail[..at].find(':')?)))
        {
            Some((at, colon)) => out.push_str(&format!("{}:***{}", &tail[..colon], &tail[at..end])),
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    let mut redacted = String::with_capacity(out.len());
    let mut parts = out.split("password=");
    redacted.push_str(parts.next().unwrap_or_default());
    for part in parts {
        let end = part
            .find(|c: char| c.is_whitespace() || "&\"'".contains(c))
            .unwrap_or(part.len());
        redacted.push_str("password=***");
        redacted.push_str(&part[end..]);
    }
    redacted
}
