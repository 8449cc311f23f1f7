//! The `Account` aggregate: a balance in one currency, with an optional overdraft.

use std::collections::BTreeMap;

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

/// Compensation at the source: the money sent came back.
#[event]
pub struct TransferRefunded {
    /// The transfer.
    pub transfer_id: Uuid,
    /// Minor units returned.
    pub amount: i64,
    /// Why.
    pub reason: String,
}

/// Compensation at the destination: a credit that must not stand (its transfer failed, or its
/// source was never debited) was taken back.
#[event]
pub struct TransferReversed {
    /// The transfer.
    pub transfer_id: Uuid,
    /// Minor units taken back.
    pub amount: i64,
    /// Why.
    pub reason: String,
}

named! {
    /// Where an account is in its life.
    pub enum AccountStatus {
        /// Never opened.
        NotOpened = "not_opened",
        /// Open: money moves.
        Open = "open",
        /// Frozen: no money moves.
        Frozen = "frozen",
        /// Closed for good.
        Closed = "closed",
    }
}

/// A transfer leg this account took part in, and what became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Leg {
    InFlight(i64),
    Settled,
    Refunded,
    Received(i64),
    Reversed,
}

/// A bank account: one currency, a balance in minor units, an optional overdraft.
///
/// The transfer legs it took part in are remembered by transfer id, which makes the
/// process manager's commands idempotent: sending, receiving, settling, refunding or
/// reversing the same transfer twice decides nothing the second time.
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
        TransferRefunded,
        TransferReversed
    ),
    snapshot_every = 50,
    state_version = 2
)]
pub struct Account {
    status: AccountStatus,
    owner: String,
    currency: Option<Currency>,
    balance: i64,
    overdraft_limit: i64,
    outgoing: BTreeMap<Uuid, Leg>,
    incoming: BTreeMap<Uuid, Leg>,
}

apply!(Account {
    AccountOpened(s, e) => {
        s.status = AccountStatus::Open;
        s.owner.clone_from(&e.owner);
        s.currency = Some(e.currency.clone());
        s.overdraft_limit = e.overdraft_limit;
    }
    MoneyDeposited(s, e) => s.balance = s.balance.saturating_add(e.amount),
    MoneyWithdrawn(s, e) => s.balance = s.balance.saturating_sub(e.amount),
    AccountFrozen(s, _) => s.status = AccountStatus::Frozen,
    AccountUnfrozen(s, _) => s.status = AccountStatus::Open,
    AccountClosed(s, _) => s.status = AccountStatus::Closed,
    TransferSent(s, e) => {
        s.balance = s.balance.saturating_sub(e.amount);
        s.outgoing.insert(e.transfer_id, Leg::InFlight(e.amount));
    }
    TransferReceived(s, e) => {
        s.balance = s.balance.saturating_add(e.amount);
        s.incoming.insert(e.transfer_id, Leg::Received(e.amount));
    }
    TransferSettled(s, e) => s.outgoing.insert(e.transfer_id, Leg::Settled),
    TransferRefunded(s, e) => {
        s.balance = s.balance.saturating_add(e.amount);
        s.outgoing.insert(e.transfer_id, Leg::Refunded);
    }
    TransferReversed(s, e) => {
        s.balance = s.balance.saturating_sub(e.amount);
        s.incoming.insert(e.transfer_id, Leg::Reversed);
    }
});

impl Account {
    /// The status.
    pub fn status(&self) -> AccountStatus {
        self.status
    }

    /// The currency, once opened.
    pub fn currency(&self) -> Option<&Currency> {
        self.currency.as_ref()
    }

    /// The balance in minor units.
    pub fn balance(&self) -> i64 {
        self.balance
    }

    /// Outgoing transfers debited but neither settled nor refunded.
    pub fn in_flight(&self) -> usize {
        self.outgoing
            .values()
            .filter(|o| matches!(o, Leg::InFlight(_)))
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
        check_text("owner", owner, 200)?;
        if owner.is_empty() {
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
        check_text("reference", reference, 200)?;
        self.check_movement(amount)?;
        self.check_headroom(amount)?;
        Ok(MoneyDeposited {
            amount: amount.minor,
            reference: reference.to_owned(),
        })
    }

    /// Pays money out, down to minus the overdraft limit.
    pub fn withdraw(&self, amount: &Money, reference: &str) -> Result<MoneyWithdrawn, LedgerError> {
        check_text("reference", reference, 200)?;
        self.check_movement(amount)?;
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
            _ => Err(self.not_open()),
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
            _ => Err(self.not_open()),
        }
    }

    /// Closes the account: only at a zero balance with nothing in flight.
    pub fn close(&self, reason: &str) -> Result<AccountClosed, LedgerError> {
        check_text("reason", reason, 200)?;
        self.check_open()?;
        if self.balance != 0 {
            return Err(LedgerError::NonZeroBalance(self.money(self.balance)));
        }
        match self.in_flight() {
            0 => Ok(AccountClosed {
                reason: reason.to_owned(),
            }),
            n => Err(LedgerError::TransfersInFlight(n)),
        }
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
        let to_account = to_account.to_owned();
        Ok(Some(TransferSent {
            transfer_id,
            to_account,
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
        if self.incoming.contains_key(&transfer_id) {
            return Ok(None);
        }
        self.check_movement(amount)?;
        self.check_headroom(amount)?;
        let from_account = from_account.to_owned();
        Ok(Some(TransferReceived {
            transfer_id,
            from_account,
            amount: amount.minor,
        }))
    }

    /// Marks an outgoing transfer as arrived. Idempotent.
    pub fn settle_transfer(
        &self,
        transfer_id: Uuid,
    ) -> Result<Option<TransferSettled>, LedgerError> {
        match self.outgoing.get(&transfer_id) {
            Some(Leg::InFlight(_)) => Ok(Some(TransferSettled { transfer_id })),
            Some(Leg::Settled) => Ok(None),
            _ => Err(LedgerError::UnknownOutgoingTransfer(transfer_id)),
        }
    }

    /// Compensates an outgoing transfer that did not arrive: the money comes back. Accepted
    /// whatever the account's status (a compensation records money that is ours; it cannot
    /// overflow, since credits leave room for the money in flight), and idempotent.
    pub fn refund_transfer(
        &self,
        transfer_id: Uuid,
        reason: &str,
    ) -> Result<Option<TransferRefunded>, LedgerError> {
        match self.outgoing.get(&transfer_id) {
            Some(Leg::InFlight(amount)) => {
                let (amount, reason) = (*amount, reason.to_owned());
                Ok(Some(TransferRefunded {
                    transfer_id,
                    amount,
                    reason,
                }))
            }
            Some(Leg::Refunded) => Ok(None),
            _ => Err(LedgerError::UnknownOutgoingTransfer(transfer_id)),
        }
    }

    /// Takes back a credit that must not stand. Accepted whatever the account's status and
    /// overdraft (the money was never ours), refused only below `i64::MIN`; idempotent.
    pub fn reverse_transfer(
        &self,
        transfer_id: Uuid,
        reason: &str,
    ) -> Result<Option<TransferReversed>, LedgerError> {
        match self.incoming.get(&transfer_id) {
            Some(Leg::Received(amount)) => {
                self.balance
                    .checked_sub(*amount)
                    .ok_or(LedgerError::Overflow)?;
                let (amount, reason) = (*amount, reason.to_owned());
                Ok(Some(TransferReversed {
                    transfer_id,
                    amount,
                    reason,
                }))
            }
            Some(Leg::Reversed) => Ok(None),
            _ => Err(LedgerError::UnknownIncomingTransfer(transfer_id)),
        }
    }

    fn not_open(&self) -> LedgerError {
        match self.status {
            AccountStatus::NotOpened => LedgerError::AccountNotFound,
            AccountStatus::Frozen => LedgerError::AccountFrozen,
            _ => LedgerError::AccountClosed,
        }
    }

    fn check_open(&self) -> Result<(), LedgerError> {
        match self.status {
            AccountStatus::Open => Ok(()),
            _ => Err(self.not_open()),
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

    /// A credit must leave the balance plus the money in flight within `i64::MAX`.
    fn check_headroom(&self, amount: &Money) -> Result<(), LedgerError> {
        let in_flight: i128 = self
            .outgoing
            .values()
            .map(|leg| {
                if let Leg::InFlight(a) = leg {
                    i128::from(*a)
                } else {
                    0
                }
            })
            .sum();
        let after = i128::from(self.balance) + in_flight + i128::from(amount.minor);
        if after > i128::from(i64::MAX) {
            Err(LedgerError::Overflow)
        } else {
            Ok(())
        }
    }

    fn check_funds(&self, requested: &Money) -> Result<(), LedgerError> {
        let available = i128::from(self.balance) + i128::from(self.overdraft_limit);
        if i128::from(requested.minor) > available {
            let available = i64::try_from(available).unwrap_or(i64::MAX);
            let (available, requested) = (self.money(available), requested.clone());
            return Err(LedgerError::InsufficientFunds {
                available,
                requested,
            });
        }
        Ok(())
    }

    /// `minor` units of this account's currency (only called once it is open).
    fn money(&self, minor: i64) -> Money {
        Money::new(
            minor,
            self.currency.clone().unwrap_or_else(Currency::unknown),
        )
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
            AccountEvent::TransferReversed(e) => {
                format!("reversal of {} ({})", money(e.amount), e.reason)
            }
        }
    }
}
