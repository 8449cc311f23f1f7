//! What each event does to the read models: one pure mapping, used by the in-memory read
//! models and the PostgreSQL tables alike, so the two cannot drift apart.

use chrono::{DateTime, Utc};
use es_core::Envelope;
use serde::Serialize;
use uuid::Uuid;

use crate::domain::{AccountEvent, AccountStatus, Currency, Money, TransferEvent, TransferStatus};

es_core::log_events! {
    /// Every event the ledger's consumers read: accounts' and transfers'.
    pub enum LedgerEvent {
        Account(AccountEvent),
        Transfer(TransferEvent),
    }
}

/// One account's current state, as the read side sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AccountRow {
    /// Account id.
    pub id: String,
    /// Owner.
    pub owner: String,
    /// Currency.
    #[sqlx(try_from = "String")]
    pub currency: Currency,
    /// Balance in minor units.
    pub balance: i64,
    /// Balance as a decimal string.
    #[sqlx(skip)]
    pub balance_display: String,
    /// Overdraft limit in minor units.
    pub overdraft_limit: i64,
    /// Status.
    #[sqlx(try_from = "String")]
    pub status: AccountStatus,
    /// Stream version of the last event applied.
    #[sqlx(try_from = "i64")]
    pub version: u64,
}

impl AccountRow {
    /// Sets the balance and its display form.
    pub fn set_balance(&mut self, balance: i64) {
        self.balance = balance;
        self.balance_display = Money::format_minor(balance, &self.currency);
    }
}

/// One movement on a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StatementLine {
    /// Stream version of the event.
    #[sqlx(try_from = "i64")]
    pub version: u64,
    /// Global position of the event.
    #[sqlx(try_from = "i64")]
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

/// A transfer, as the read side sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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
    #[sqlx(try_from = "String")]
    pub currency: Currency,
    /// Status.
    #[sqlx(try_from = "String")]
    pub status: TransferStatus,
    /// Why it was rejected or compensated.
    pub reason: Option<String>,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// Who requested it.
    pub requested_by: Option<String>,
    /// The request's correlation id.
    pub correlation_id: Option<Uuid>,
}

/// What one event does to the read models.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// An account appears (and its currency's totals, at zero).
    Open(AccountRow),
    /// An account moves to a new version, maybe with a new status or a movement of money.
    Account {
        /// Account id.
        id: String,
        /// Its new stream version.
        version: u64,
        /// Its new status, if it changed.
        status: Option<AccountStatus>,
        /// The money that moved, if any.
        movement: Option<Movement>,
    },
    /// A transfer appears.
    Request(TransferRow),
    /// A transfer moves on.
    Transfer {
        /// Transfer id.
        id: Uuid,
        /// Its new status.
        status: TransferStatus,
        /// Why, when it was rejected or its credit failed.
        reason: Option<String>,
    },
}

/// Money moving on an account, and what it does to its currency's totals. Amounts are
/// `i128`, so that no stored amount can overflow the arithmetic of the read models.
#[derive(Debug, Clone, PartialEq)]
pub struct Movement {
    /// Signed change of the balance.
    pub change: i128,
    /// Change of the money paid into the ledger (deposits minus withdrawals).
    pub net_inflow: i128,
    /// Change of the money in flight between accounts.
    pub in_flight: i128,
    /// The transfer it belongs to, if any.
    pub transfer_id: Option<Uuid>,
    event: AccountEvent,
    position: u64,
    recorded_at: DateTime<Utc>,
    user_id: Option<String>,
    correlation_id: Option<Uuid>,
}

impl Movement {
    /// The statement line of this movement on an account in `currency`, which leaves it at
    /// `balance`; `None` when the change does not fit 64 bits.
    pub fn line(&self, version: u64, currency: &Currency, balance: i64) -> Option<StatementLine> {
        Some(StatementLine {
            version,
            position: self.position,
            recorded_at: self.recorded_at,
            description: self.event.describe(Some(currency)),
            amount: i64::try_from(self.change).ok()?,
            balance,
            transfer_id: self.transfer_id,
            user_id: self.user_id.clone(),
            correlation_id: self.correlation_id,
        })
    }
}

/// The effect of `event` on the read models. Fails only on a transfer stream whose id is not
/// a UUID (an event the ledger never writes).
pub fn effect(event: &Envelope<LedgerEvent>) -> Result<Effect, String> {
    let record = &event.record;
    let id = record.stream.aggregate_id.clone();
    match &event.event {
        LedgerEvent::Account(e) => Ok(account_effect(e, id, event)),
        LedgerEvent::Transfer(e) => {
            let uuid: Uuid = id
                .parse()
                .map_err(|_| format!("{}: not a UUID", record.stream))?;
            let (status, reason) = match e.clone() {
                TransferEvent::TransferRequested(r) => {
                    return Ok(Effect::Request(TransferRow {
                        id: uuid,
                        from_account: r.from_account,
                        to_account: r.to_account,
                        amount: r.amount,
                        currency: r.currency,
                        status: TransferStatus::Requested,
                        reason: None,
                        requested_at: record.recorded_at,
                        requested_by: record.metadata.user_id.clone(),
                        correlation_id: record.metadata.correlation_id,
                    }));
                }
                TransferEvent::TransferRejected(r) => (TransferStatus::Rejected, Some(r.reason)),
                TransferEvent::TransferDebited(_) => (TransferStatus::Debited, None),
                TransferEvent::TransferCompleted(_) => (TransferStatus::Completed, None),
                TransferEvent::TransferCreditFailed(r) => {
                    (TransferStatus::CreditFailed, Some(r.reason))
                }
                TransferEvent::TransferCompensated(_) => (TransferStatus::Compensated, None),
            };
            Ok(Effect::Transfer {
                id: uuid,
                status,
                reason,
            })
        }
    }
}

fn account_effect(e: &AccountEvent, id: String, event: &Envelope<LedgerEvent>) -> Effect {
    let record = &event.record;
    let version = record.version;
    let amount = |a: i64| i128::from(a);
    // (balance change, net inflow change, in-flight change, transfer)
    let (change, net_inflow, in_flight, transfer_id) = match e {
        AccountEvent::AccountOpened(o) => {
            let mut row = AccountRow {
                id,
                owner: o.owner.clone(),
                currency: o.currency.clone(),
                balance: 0,
                balance_display: String::new(),
                overdraft_limit: o.overdraft_limit,
                status: AccountStatus::Open,
                version,
            };
            row.set_balance(0);
            return Effect::Open(row);
        }
        AccountEvent::AccountFrozen(_) => return status(id, version, AccountStatus::Frozen),
        AccountEvent::AccountUnfrozen(_) => return status(id, version, AccountStatus::Open),
        AccountEvent::AccountClosed(_) => return status(id, version, AccountStatus::Closed),
        AccountEvent::TransferSettled(_) => {
            return Effect::Account {
                id,
                version,
                status: None,
                movement: None,
            };
        }
        AccountEvent::MoneyDeposited(d) => (amount(d.amount), amount(d.amount), 0, None),
        AccountEvent::MoneyWithdrawn(w) => (-amount(w.amount), -amount(w.amount), 0, None),
        AccountEvent::TransferSent(t) => {
            (-amount(t.amount), 0, amount(t.amount), Some(t.transfer_id))
        }
        AccountEvent::TransferReceived(t) => {
            (amount(t.amount), 0, -amount(t.amount), Some(t.transfer_id))
        }
        AccountEvent::TransferRefunded(t) => {
            (amount(t.amount), 0, -amount(t.amount), Some(t.transfer_id))
        }
        AccountEvent::TransferReversed(t) => {
            (-amount(t.amount), 0, amount(t.amount), Some(t.transfer_id))
        }
    };
    let movement = Movement {
        change,
        net_inflow,
        in_flight,
        transfer_id,
        event: e.clone(),
        position: record.position,
        recorded_at: record.recorded_at,
        user_id: record.metadata.user_id.clone(),
        correlation_id: record.metadata.correlation_id,
    };
    Effect::Account {
        id,
        version,
        status: None,
        movement: Some(movement),
    }
}

fn status(id: String, version: u64, status: AccountStatus) -> Effect {
    Effect::Account {
        id,
        version,
        status: Some(status),
        movement: None,
    }
}
