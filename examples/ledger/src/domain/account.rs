//! The `Account` aggregate: a balance in one currency, with an optional overdraft.

use std::collections::{BTreeMap, BTreeSet};

use es_core::prelude::*;
use uuid::Uuid;

use super::{Currency, LedgerError, Money, check_text};

/// An account was opened.
#[event]
pub struct AccountOpened {
    /// Who owns it.
    pub owner: String,
    /// The one currency it holds.
    pub currency: Currency,
    /// How far (in minor units) the balance may go below zero.
    pub overdraft_limit: i64,
}

/// Money was paid in: schema version 2, which added `reference`.
///
/// Stored version-1 payloads decode as [`MoneyDepositedV1`] and are converted with `From`.
#[event(version = 2, previous = MoneyDepositedV1)]
pub struct MoneyDeposited {
    /// Minor units of the account's currency.
    pub amount: i64,
    /// Why the money came in (e.g. "salary"); empty for deposits recorded before version 2.
    pub reference: String,
}

/// The first schema of `MoneyDeposited`, without a reference. Kept so that old payloads decode.
#[event(name = "MoneyDeposited", version = 1)]
pub struct MoneyDepositedV1 {
    /// Minor units of the account's currency.
    pub amount: i64,
}

impl From<MoneyDepositedV1> for MoneyDeposited {
    fn from(old: MoneyDepositedV1) -> Self {
        Self {
            amount: old.amount,
            reference: String::new(),
        }
    }
}

/// Money was paid out.
#[event]
pub struct MoneyWithdrawn {
    /// Minor units of the account's currency.
    pub amount: i64,
    /// Why the money went out.
    pub reference: String,
}

/// The account was frozen: no money moves until it is unfrozen.
#[event]
pub struct AccountFrozen {
    /// Why.
    pub reason: String,
}

/// The account was unfrozen.
#[event]
pub struct AccountUnfrozen {
    /// Why.
    pub reason: String,
}

/// The account was closed, at a zero balance. Final.
#[event]
pub struct AccountClosed {
    /// Why.
    pub reason: String,
}

/// The source side of a transfer: money left this account and is in flight.
#[event]
pub struct TransferSent {
    /// The transfer.
    pub transfer_id: Uuid,
    /// The destination account.
    pub to_account: String,
    /// Minor units.
    pub amount: i64,
}

/// The destination side of a transfer: money arrived.
#[event]
pub struct TransferReceived {
    /// The transfer.
    pub transfer_id: Uuid,
    /// The source account.
    pub from_account: String,
    /// Minor units.
    pub amount: i64,
}

/// The money this account sent arrived: the transfer is no longer in flight.
#[event]
pub struct TransferSettled {
    /// The transfer.
    pub transfer_id: Uuid,
}

/// Compensation: the destination refused the money, so it came back.
#[event]
pub struct TransferRefunded {
    /// The transfer.
    pub transfer_id: Uuid,
    /// Minor units returned.
    pub amount: i64,
    /// Why the credit failed.
    pub reason: String,
}

/// Where an account is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Never opened.
    #[default]
    NotOpened,
    /// Open: money moves.
    Open,
    /// Frozen: no money moves.
    Frozen,
    /// Closed for good.
    Closed,
}

impl AccountStatus {
    /// A lowercase name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::NotOpened => "not_opened",
            AccountStatus::Open => "open",
            AccountStatus::Frozen => "frozen",
            AccountStatus::Closed => "closed",
        }
    }
}

/// An outgoing transfer this account debited, and what became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outgoing {
    InFlight(i64),
    Settled,
    Refunded,
}

/// A bank account: one currency, a balance in minor units, an optional overdraft.
///
/// The transfer legs it took part in are remembered by transfer id, which makes the
/// process manager's commands idempotent: sending, receiving, settling or refunding the same
/// transfer twice decides nothing the second time.
#[derive(Aggregate, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[aggregate(
    name = "Account",
    events(
        AccountOpened,
        MoneyDeposited,
        MoneyWithdrawn,
        AccountFrozen,
        AccountUnfrozen,
        AccountClosed,
        TransferSent,
        TransferReceived,
        TransferSettled,
        TransferRefunded
    ),
    snapshot_every = 50
)]
pub struct Account {
    status: AccountStatus,
    owner: String,
    currency: Option<Currency>,
    balance: i64,
    overdraft_limit: i64,
    outgoing: BTreeMap<Uuid, Outgoing>,
    received: BTreeSet<Uuid>,
}

impl Apply<AccountOpened> for Account {
    fn apply(&mut self, e: &AccountOpened) {
        self.status = AccountStatus::Open;
        self.owner.clone_from(&e.owner);
        self.currency = Some(e.currency.clone());
        self.overdraft_limit = e.overdraft_limit;
    }
}

impl Apply<MoneyDeposited> for Account {
    fn apply(&mut self, e: &MoneyDeposited) {
        self.balance = self.balance.saturating_add(e.amount);
    }
}

impl Apply<MoneyWithdrawn> for Account {
    fn apply(&mut self, e: &MoneyWithdrawn) {
        self.balance = self.balance.saturating_sub(e.amount);
    }
}

impl Apply<AccountFrozen> for Account {
    fn apply(&mut self, _: &AccountFrozen) {
        self.status = AccountStatus::Frozen;
    }
}

impl Apply<AccountUnfrozen> for Account {
    fn apply(&mut self, _: &AccountUnfrozen) {
        self.status = AccountStatus::Open;
    }
}

impl Apply<AccountClosed> for Account {
    fn apply(&mut self, _: &AccountClosed) {
        self.status = AccountStatus::Closed;
    }
}

impl Apply<TransferSent> for Account {
    fn apply(&mut self, e: &TransferSent) {
        self.balance = self.balance.saturating_sub(e.amount);
        self.outgoing
            .insert(e.transfer_id, Outgoing::InFlight(e.amount));
    }
}

impl Apply<TransferReceived> for Account {
    fn apply(&mut self, e: &TransferReceived) {
        self.balance = self.balance.saturating_add(e.amount);
        self.received.insert(e.transfer_id);
    }
}

impl Apply<TransferSettled> for Account {
    fn apply(&mut self, e: &TransferSettled) {
        self.outgoing.insert(e.transfer_id, Outgoing::Settled);
    }
}

impl Apply<TransferRefunded> for Account {
    fn apply(&mut self, e: &TransferRefunded) {
        self.balance = self.balance.saturating_add(e.amount);
        self.outgoing.insert(e.transfer_id, Outgoing::Refunded);
    }
}

impl Account {
    /// The status.
    pub fn status(&self) -> AccountStatus {
        self.status
    }

    /// The owner (empty before opening).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The currency, once opened.
    pub fn currency(&self) -> Option<&Currency> {
        self.currency.as_ref()
    }

    /// The balance in minor units.
    pub fn balance(&self) -> i64 {
        self.balance
    }

    /// The overdraft limit in minor units.
    pub fn overdraft_limit(&self) -> i64 {
        self.overdraft_limit
    }

    /// Outgoing transfers debited but neither settled nor refunded.
    pub fn in_flight(&self) -> usize {
        self.outgoing
            .values()
            .filter(|o| matches!(o, Outgoing::InFlight(_)))
            .count()
    }

    /// Opens the account.
    pub fn open(
        &self,
        owner: &str,
        currency: Currency,
        overdraft_limit: i64,
    ) -> Result<AccountOpened, LedgerError> {
        if self.status != AccountStatus::NotOpened {
            return Err(LedgerError::AccountAlreadyExists);
        }
        let owner = owner.trim();
        if owner.is_empty() || owner.chars().count() > 200 {
            return Err(LedgerError::InvalidOwner);
        }
        if overdraft_limit < 0 {
            return Err(LedgerError::NegativeOverdraftLimit(overdraft_limit));
        }
        Ok(AccountOpened {
            owner: owner.to_owned(),
            currency,
            overdraft_limit,
        })
    }

    /// Pays money in.
    pub fn deposit(&self, amount: &Money, reference: &str) -> Result<MoneyDeposited, LedgerError> {
        self.check_movement(amount)?;
        check_text("reference", reference, 200)?;
        self.balance
            .checked_add(amount.minor)
            .ok_or(LedgerError::Overflow)?;
        Ok(MoneyDeposited {
            amount: amount.minor,
            reference: reference.to_owned(),
        })
    }

    /// Pays money out, down to minus the overdraft limit.
    pub fn withdraw(&self, amount: &Money, reference: &str) -> Result<MoneyWithdrawn, LedgerError> {
        self.check_movement(amount)?;
        check_text("reference", reference, 200)?;
        self.check_funds(amount)?;
        Ok(MoneyWithdrawn {
            amount: amount.minor,
            reference: reference.to_owned(),
        })
    }

    /// Freezes the account.
    pub fn freeze(&self, reason: &str) -> Result<AccountFrozen, LedgerError> {
        check_text("reason", reason, 200)?;
        match self.status {
            AccountStatus::Open => Ok(AccountFrozen {
                reason: reason.to_owned(),
            }),
            AccountStatus::Frozen => Err(LedgerError::AccountFrozen),
            AccountStatus::NotOpened => Err(LedgerError::AccountNotFound),
            AccountStatus::Closed => Err(LedgerError::AccountClosed),
        }
    }

    /// Unfreezes the account.
    pub fn unfreeze(&self, reason: &str) -> Result<AccountUnfrozen, LedgerError> {
        check_text("reason", reason, 200)?;
        match self.status {
            AccountStatus::Frozen => Ok(AccountUnfrozen {
                reason: reason.to_owned(),
            }),
            AccountStatus::Open => Err(LedgerError::AccountNotFrozen),
            AccountStatus::NotOpened => Err(LedgerError::AccountNotFound),
            AccountStatus::Closed => Err(LedgerError::AccountClosed),
        }
    }

    /// Closes the account: only at a zero balance with nothing in flight.
    pub fn close(&self, reason: &str) -> Result<AccountClosed, LedgerError> {
        check_text("reason", reason, 200)?;
        self.check_open()?;
        if self.balance != 0 {
            return Err(LedgerError::NonZeroBalance(self.money(self.balance)));
        }
        let in_flight = self.in_flight();
        if in_flight > 0 {
            return Err(LedgerError::TransfersInFlight(in_flight));
        }
        Ok(AccountClosed {
            reason: reason.to_owned(),
        })
    }

    /// Debits the source of a transfer. Idempotent: a transfer already sent decides nothing.
    pub fn send_transfer(
        &self,
        transfer_id: Uuid,
        to_account: &str,
        amount: &Money,
    ) -> Result<Option<TransferSent>, LedgerError> {
        if self.outgoing.contains_key(&transfer_id) {
            return Ok(None);
        }
        self.check_movement(amount)?;
        self.check_funds(amount)?;
        Ok(Some(TransferSent {
            transfer_id,
            to_account: to_account.to_owned(),
            amount: amount.minor,
        }))
    }

    /// Credits the destination of a transfer. Idempotent: a transfer already received
    /// decides nothing.
    pub fn receive_transfer(
        &self,
        transfer_id: Uuid,
        from_account: &str,
        amount: &Money,
    ) -> Result<Option<TransferReceived>, LedgerError> {
        if self.received.contains(&transfer_id) {
            return Ok(None);
        }
        self.check_movement(amount)?;
        self.balance
            .checked_add(amount.minor)
            .ok_or(LedgerError::Overflow)?;
        Ok(Some(TransferReceived {
            transfer_id,
            from_account: from_account.to_owned(),
            amount: amount.minor,
        }))
    }

    /// Marks an outgoing transfer as arrived. Idempotent.
    pub fn settle_transfer(
        &self,
        transfer_id: Uuid,
    ) -> Result<Option<TransferSettled>, LedgerError> {
        match self.outgoing.get(&transfer_id) {
            Some(Outgoing::InFlight(_)) => Ok(Some(TransferSettled { transfer_id })),
            Some(Outgoing::Settled) => Ok(None),
            Some(Outgoing::Refunded) | None => {
                Err(LedgerError::UnknownOutgoingTransfer(transfer_id))
            }
        }
    }

    /// Compensates a transfer whose credit failed: the money comes back. Accepted whatever the
    /// account's status (a compensation records money that is ours), and idempotent.
    pub fn refund_transfer(
        &self,
        transfer_id: Uuid,
        reason: &str,
    ) -> Result<Option<TransferRefunded>, LedgerError> {
        match self.outgoing.get(&transfer_id) {
            Some(Outgoing::InFlight(amount)) => Ok(Some(TransferRefunded {
                transfer_id,
                amount: *amount,
                reason: reason.to_owned(),
            })),
            Some(Outgoing::Refunded) => Ok(None),
            Some(Outgoing::Settled) | None => {
                Err(LedgerError::UnknownOutgoingTransfer(transfer_id))
            }
        }
    }

    fn check_open(&self) -> Result<(), LedgerError> {
        match self.status {
            AccountStatus::Open => Ok(()),
            AccountStatus::NotOpened => Err(LedgerError::AccountNotFound),
            AccountStatus::Frozen => Err(LedgerError::AccountFrozen),
            AccountStatus::Closed => Err(LedgerError::AccountClosed),
        }
    }

    /// The checks every movement of money makes: open, positive, same currency.
    fn check_movement(&self, amount: &Money) -> Result<(), LedgerError> {
        self.check_open()?;
        if amount.minor <= 0 {
            return Err(LedgerError::NonPositiveAmount(amount.minor));
        }
        match &self.currency {
            Some(currency) if *currency == amount.currency => Ok(()),
            Some(currency) => Err(LedgerError::CurrencyMismatch {
                expected: currency.clone(),
                actual: amount.currency.clone(),
            }),
            None => Err(LedgerError::AccountNotFound),
        }
    }

    fn check_funds(&self, requested: &Money) -> Result<(), LedgerError> {
        let available = self
            .balance
            .checked_add(self.overdraft_limit)
            .ok_or(LedgerError::Overflow)?;
        if requested.minor > available {
            return Err(LedgerError::InsufficientFunds {
                available: self.money(available),
                requested: requested.clone(),
            });
        }
        Ok(())
    }

    /// `minor` units of this account's currency (only called once it is open).
    fn money(&self, minor: i64) -> Money {
        match &self.currency {
            Some(currency) => Money::new(minor, currency.clone()),
            None => Money::new(minor, Currency::unknown()),
        }
    }
}

impl AccountEvent {
    /// A one-line description for statements and audit trails, in the account's currency.
    pub fn describe(&self, currency: Option<&Currency>) -> String {
        let money = |minor: i64| match currency {
            Some(c) => format!("{} {c}", Money::format_minor(minor, c)),
            None => format!("{minor} minor units"),
        };
        match self {
            AccountEvent::AccountOpened(e) => format!(
                "opened for {} in {} (overdraft {})",
                e.owner,
                e.currency,
                Money::format_minor(e.overdraft_limit, &e.currency)
            ),
            AccountEvent::MoneyDeposited(e) if e.reference.is_empty() => {
                format!("deposit of {}", money(e.amount))
            }
            AccountEvent::MoneyDeposited(e) => {
                format!("deposit of {} ({})", money(e.amount), e.reference)
            }
            AccountEvent::MoneyWithdrawn(e) => {
                format!("withdrawal of {} ({})", money(e.amount), e.reference)
            }
            AccountEvent::AccountFrozen(e) => format!("frozen: {}", e.reason),
            AccountEvent::AccountUnfrozen(e) => format!("unfrozen: {}", e.reason),
            AccountEvent::AccountClosed(e) => format!("closed: {}", e.reason),
            AccountEvent::TransferSent(e) => {
                format!("sent {} to {}", money(e.amount), e.to_account)
            }
            AccountEvent::TransferReceived(e) => {
                format!("received {} from {}", money(e.amount), e.from_account)
            }
            AccountEvent::TransferSettled(_) => "outgoing transfer arrived".to_owned(),
            AccountEvent::TransferRefunded(e) => {
                format!("refund of {} ({})", money(e.amount), e.reason)
            }
        }
    }

    /// The change to the balance, in minor units.
    pub fn balance_change(&self) -> i64 {
        match self {
            AccountEvent::MoneyDeposited(e) => e.amount,
            AccountEvent::MoneyWithdrawn(e) => e.amount.saturating_neg(),
            AccountEvent::TransferSent(e) => e.amount.saturating_neg(),
            AccountEvent::TransferReceived(e) => e.amount,
            AccountEvent::TransferRefunded(e) => e.amount,
            _ => 0,
        }
    }
}
