//! Read models fed by the global log: balances, statements with running balances, totals per
//! currency and transfers, all in one [`Projection`] so they are always mutually consistent.
//!
//! The per-currency totals are computed independently of the balances (money paid in minus
//! money paid out), so [`LedgerView::check`] proves conservation rather than restating it:
//! the sum of balances plus the money in flight between accounts must equal the net inflow.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use es_core::{Aggregate, BoxError, Projection, RecordedEvent};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::{
    Account, AccountEvent, AccountStatus, Currency, Money, Transfer, TransferEvent,
};

/// One account's current state, as the read side sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountRow {
    /// Account id.
    pub id: String,
    /// Owner.
    pub owner: String,
    /// Currency.
    pub currency: Currency,
    /// Balance in minor units.
    pub balance: i64,
    /// Balance as a decimal string.
    pub balance_display: String,
    /// Overdraft limit in minor units.
    pub overdraft_limit: i64,
    /// Status.
    pub status: AccountStatus,
    /// Stream version of the last event applied.
    pub version: u64,
}

/// One movement on a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementLine {
    /// Stream version of the event.
    pub version: u64,
    /// Global position of the event.
    pub position: u64,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// What happened.
    pub description: String,
    /// Signed change in minor units.
    pub amount: i64,
    /// Balance after this line, in minor units.
    pub balance: i64,
    /// The transfer this belongs to, if any.
    pub transfer_id: Option<Uuid>,
    /// Who.
    pub user_id: Option<String>,
    /// Which flow.
    pub correlation_id: Option<Uuid>,
}

/// Ledger-wide figures for one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CurrencyTotals {
    /// Deposits minus withdrawals: the money that entered the ledger.
    pub net_inflow: i64,
    /// Sum of all balances.
    pub balances: i64,
    /// Debited from a source, not yet credited nor refunded.
    pub in_flight: i64,
}

impl CurrencyTotals {
    /// Whether money is conserved: balances plus in-flight equal the net inflow.
    pub fn balanced(&self) -> bool {
        self.balances.checked_add(self.in_flight) == Some(self.net_inflow)
    }
}

/// A transfer, as the read side sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferRow {
    /// Transfer id.
    pub id: Uuid,
    /// Source.
    pub from_account: String,
    /// Destination.
    pub to_account: String,
    /// Minor units.
    pub amount: i64,
    /// Currency.
    pub currency: Currency,
    /// Status.
    pub status: crate::domain::TransferStatus,
    /// Why it was rejected or compensated.
    pub reason: Option<String>,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// Who requested it.
    pub requested_by: Option<String>,
    /// The request's correlation id.
    pub correlation_id: Option<Uuid>,
}

/// All read models of the ledger.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ReadModels {
    /// Current balances by account id.
    pub accounts: BTreeMap<String, AccountRow>,
    /// Statements by account id.
    pub statements: BTreeMap<String, Vec<StatementLine>>,
    /// Totals by currency.
    pub totals: BTreeMap<Currency, CurrencyTotals>,
    /// Transfers by id.
    pub transfers: BTreeMap<Uuid, TransferRow>,
    /// Global position of the last event applied.
    pub position: u64,
}

impl ReadModels {
    /// Checks the read models' invariants: per currency, balances plus in-flight equal the
    /// net inflow and the balances equal the sum of the rows; each statement's last running
    /// balance and the sum of its amounts equal the account's balance. Returns every
    /// violation found.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut sums: BTreeMap<&Currency, i64> = BTreeMap::new();
        for row in self.accounts.values() {
            let sum = sums.entry(&row.currency).or_default();
            *sum = sum.saturating_add(row.balance);
            let lines = self.statements.get(&row.id).map(Vec::as_slice);
            let lines = lines.unwrap_or_default();
            let last = lines.last().map_or(0, |l| l.balance);
            let total: i64 = lines.iter().map(|l| l.amount).sum();
            if last != row.balance || total != row.balance {
                problems.push(format!(
                    "{}: balance {} but statement ends at {last} and sums to {total}",
                    row.id, row.balance
                ));
            }
        }
        for (currency, totals) in &self.totals {
            let sum = sums.get(currency).copied().unwrap_or(0);
            if sum != totals.balances {
                problems.push(format!(
                    "{currency}: balances total {} but the accounts sum to {sum}",
                    totals.balances
                ));
            }
            if !totals.balanced() {
                problems.push(format!(
                    "{currency}: balances {} + in flight {} != net inflow {}",
                    totals.balances, totals.in_flight, totals.net_inflow
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// The projection that maintains [`ReadModels`].
#[derive(Debug, Clone)]
pub struct LedgerView {
    name: String,
    models: ReadModels,
}

impl LedgerView {
    /// A view whose checkpoint is stored under `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            models: ReadModels::default(),
        }
    }

    /// The read models.
    pub fn models(&self) -> &ReadModels {
        &self.models
    }

    /// Checks the read models' invariants; see [`ReadModels::check`].
    pub fn check(&self) -> Result<(), Vec<String>> {
        self.models.check()
    }

    fn apply_account(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        let decoded: AccountEvent = event.decode()?;
        let id = event.stream.aggregate_id.clone();
        if let AccountEvent::AccountOpened(opened) = &decoded {
            self.models.accounts.insert(
                id.clone(),
                AccountRow {
                    id: id.clone(),
                    owner: opened.owner.clone(),
                    currency: opened.currency.clone(),
                    balance: 0,
                    balance_display: Money::format_minor(0, &opened.currency),
                    overdraft_limit: opened.overdraft_limit,
                    status: AccountStatus::Open,
                    version: event.version,
                },
            );
            self.models
                .totals
                .entry(opened.currency.clone())
                .or_default();
            return Ok(());
        }
        let Some(row) = self.models.accounts.get_mut(&id) else {
            return Err(format!(
                "{} at version {}: account never opened",
                event.stream, event.version
            )
            .into());
        };
        row.version = event.version;
        let totals = self.models.totals.entry(row.currency.clone()).or_default();
        match &decoded {
            AccountEvent::AccountFrozen(_) => row.status = AccountStatus::Frozen,
            AccountEvent::AccountUnfrozen(_) => row.status = AccountStatus::Open,
            AccountEvent::AccountClosed(_) => row.status = AccountStatus::Closed,
            AccountEvent::MoneyDeposited(e) => totals.net_inflow += e.amount,
            AccountEvent::MoneyWithdrawn(e) => totals.net_inflow -= e.amount,
            AccountEvent::TransferSent(e) => totals.in_flight += e.amount,
            AccountEvent::TransferReceived(e) => totals.in_flight -= e.amount,
            AccountEvent::TransferRefunded(e) => totals.in_flight -= e.amount,
            AccountEvent::AccountOpened(_) | AccountEvent::TransferSettled(_) => {}
        }
        let change = decoded.balance_change();
        if change == 0 {
            return Ok(());
        }
        row.balance = row.balance.checked_add(change).ok_or("balance overflow")?;
        row.balance_display = Money::format_minor(row.balance, &row.currency);
        totals.balances = totals
            .balances
            .checked_add(change)
            .ok_or("total overflow")?;
        let transfer_id = match &decoded {
            AccountEvent::TransferSent(e) => Some(e.transfer_id),
            AccountEvent::TransferReceived(e) => Some(e.transfer_id),
            AccountEvent::TransferRefunded(e) => Some(e.transfer_id),
            _ => None,
        };
        let line = StatementLine {
            version: event.version,
            position: event.position,
            recorded_at: event.recorded_at,
            description: decoded.describe(Some(&row.currency)),
            amount: change,
            balance: row.balance,
            transfer_id,
            user_id: event.metadata.user_id.clone(),
            correlation_id: event.metadata.correlation_id,
        };
        self.models.statements.entry(id).or_default().push(line);
        Ok(())
    }

    fn apply_transfer(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        let decoded: TransferEvent = event.decode()?;
        let id: Uuid = event.stream.aggregate_id.parse()?;
        use crate::domain::TransferStatus as S;
        if let TransferEvent::TransferRequested(e) = &decoded {
            self.models.transfers.insert(
                id,
                TransferRow {
                    id,
                    from_account: e.from_account.clone(),
                    to_account: e.to_account.clone(),
                    amount: e.amount,
                    currency: e.currency.clone(),
                    status: S::Requested,
                    reason: None,
                    requested_at: event.recorded_at,
                    requested_by: event.metadata.user_id.clone(),
                    correlation_id: event.metadata.correlation_id,
                },
            );
            return Ok(());
        }
        let Some(row) = self.models.transfers.get_mut(&id) else {
            return Err(format!("{}: transfer never requested", event.stream).into());
        };
        match decoded {
            TransferEvent::TransferRequested(_) => {}
            TransferEvent::TransferRejected(e) => {
                row.status = S::Rejected;
                row.reason = Some(e.reason);
            }
            TransferEvent::TransferDebited(_) => row.status = S::Debited,
            TransferEvent::TransferCompleted(_) => row.status = S::Completed,
            TransferEvent::TransferCreditFailed(e) => {
                row.status = S::CreditFailed;
                row.reason = Some(e.reason);
            }
            TransferEvent::TransferCompensated(_) => row.status = S::Compensated,
        }
        Ok(())
    }
}

impl Projection for LedgerView {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        let aggregate_type = event.stream.aggregate_type.as_str();
        if aggregate_type == Account::TYPE {
            self.apply_account(event)?;
        } else if aggregate_type == Transfer::TYPE {
            self.apply_transfer(event)?;
        }
        self.models.position = event.position;
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), BoxError> {
        self.models = ReadModels::default();
        Ok(())
    }
}
