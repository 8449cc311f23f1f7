//! The ledger's domain: money, accounts and transfers, with every rule as a [`LedgerError`].
//!
//! Aggregates are plain structs: `#[derive(Aggregate)]` generates their event enums
//! ([`AccountEvent`], [`TransferEvent`]) and `apply` dispatch; commands are ordinary methods that
//! read state and return the events that happen, or refuse.
//!
//! ## Limits
//! Amounts are `i64` minor units. An account's balance plus the money it has in flight to
//! other accounts never exceeds `i64::MAX` minor units: a deposit or a credit that would pass it
//! is refused with [`LedgerError::Overflow`], so a refund can never overflow either, and a
//! balance never goes below minus the overdraft limit (at most `i64::MAX`). Ledger-wide sums
//! (totals per currency) can exceed 64 bits; read models keep them as `i128` (`numeric` in
//! PostgreSQL). Text fields hold no control characters; times lie in years 1 to 9999.

/// `Apply` impls, one arm per event: `apply!(Account { MoneyDeposited(s, e) => ..., })`.
macro_rules! apply {
    ($aggregate:ty { $($event:ident($s:ident, $e:pat) => $body:expr $(,)?)* }) => {$(
        impl Apply<$event> for $aggregate {
            fn apply(&mut self, $e: &$event) {
                let $s = self;
                $body;
            }
        }
    )*};
}

/// An enum of unit variants with a stable lowercase name each: `as_str`, `Display`,
/// `TryFrom<String>`, and serde in the same names.
macro_rules! named {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { #[default] $($(#[$vm])* $variant,)* }

        impl $name {
            /// Its name, as serialised and stored.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text,)* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                [$(Self::$variant),*].into_iter().find(|v| v.as_str() == text).ok_or(text)
            }
        }
    };
}

mod account;
mod money;
mod transfer;

use chrono::{DateTime, Datelike, Utc};

pub use account::{
    Account, AccountClosed, AccountEvent, AccountFrozen, AccountOpened, AccountStatus,
    AccountUnfrozen, MoneyDeposited, MoneyDepositedV1, MoneyWithdrawn, TransferReceived,
    TransferRefunded, TransferReversed, TransferSent, TransferSettled,
};
pub use money::{Currency, Money};
pub use transfer::{
    Transfer, TransferCompensated, TransferCompleted, TransferCreditFailed, TransferDebited,
    TransferEvent, TransferRejected, TransferRequested, TransferStatus,
};

/// Every rule the domain enforces. A command that breaks one is refused with this error and
/// writes nothing; nothing in the domain panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// A currency code is not three uppercase ASCII letters.
    #[error("`{0}` is not a currency code (three uppercase letters, e.g. EUR)")]
    InvalidCurrency(String),
    /// An amount is not a plain non-negative decimal with at most the currency's places.
    #[error("`{0}` is not a valid amount for this currency")]
    InvalidAmount(String),
    /// Amounts moved must be strictly positive.
    #[error("amount must be positive, got {0} minor units")]
    NonPositiveAmount(i64),
    /// An account id is empty, too long, or has characters other than letters, digits, `-`, `_`.
    #[error("`{0}` is not a valid account id (1-64 letters, digits, '-' or '_')")]
    InvalidAccountId(String),
    /// An owner name is empty or too long.
    #[error("owner must be 1-200 characters")]
    InvalidOwner,
    /// A text field (reference, reason, owner, user) is too long.
    #[error("{field} must be at most {max} characters")]
    TextTooLong {
        /// Which field.
        field: &'static str,
        /// The limit.
        max: usize,
    },
    /// A text field holds NUL or another control character.
    #[error("{0} must not contain control characters")]
    ControlCharacter(&'static str),
    /// A moment outside years 1 to 9999.
    #[error("{0} is outside the years 1 to 9999")]
    TimeOutOfRange(DateTime<Utc>),
    /// Overdraft limits are amounts the balance may go below zero by: never negative.
    #[error("overdraft limit must not be negative, got {0}")]
    NegativeOverdraftLimit(i64),
    /// The account was opened before.
    #[error("account already exists")]
    AccountAlreadyExists,
    /// The account was never opened.
    #[error("account does not exist")]
    AccountNotFound,
    /// The amount's currency is not the account's (or the transfer's).
    #[error("currency mismatch: the account holds {expected}, the amount is in {actual}")]
    CurrencyMismatch {
        /// The account's currency.
        expected: Currency,
        /// The amount's currency.
        actual: Currency,
    },
    /// A debit would take the balance below the overdraft limit.
    #[error(
        "insufficient funds: {available} available (balance plus overdraft), {requested} requested"
    )]
    InsufficientFunds {
        /// Balance plus overdraft limit (at most `i64::MAX`).
        available: Money,
        /// What the debit asked for.
        requested: Money,
    },
    /// The account is frozen: no money moves in or out (compensations excepted).
    #[error("account is frozen")]
    AccountFrozen,
    /// The account is not frozen, so it cannot be unfrozen.
    #[error("account is not frozen")]
    AccountNotFrozen,
    /// The account is closed.
    #[error("account is closed")]
    AccountClosed,
    /// Only an account with a zero balance can close.
    #[error("account can only close at a zero balance; the balance is {0}")]
    NonZeroBalance(Money),
    /// Only an account with no outgoing transfer in flight can close.
    #[error("account has {0} outgoing transfer(s) in flight")]
    TransfersInFlight(usize),
    /// The balance plus the money in flight would pass `i64::MAX` minor units.
    #[error("amount out of range: the account would hold more than 2^63-1 minor units")]
    Overflow,
    /// A transfer's source and destination are the same account.
    #[error("a transfer needs two different accounts")]
    SameAccount,
    /// The transfer id was used before.
    #[error("transfer already exists")]
    TransferAlreadyExists,
    /// No such transfer.
    #[error("transfer does not exist")]
    TransferNotFound,
    /// A refund or settlement names a transfer this account has not in flight.
    #[error("transfer {0} is not in flight from this account")]
    UnknownOutgoingTransfer(uuid::Uuid),
    /// A reversal names a transfer this account never received.
    #[error("transfer {0} was not received by this account")]
    UnknownIncomingTransfer(uuid::Uuid),
    /// A transfer step does not fit the transfer's status.
    #[error("transfer is {status}, cannot {step}")]
    InvalidTransferStep {
        /// The transfer's status.
        status: TransferStatus,
        /// What was attempted.
        step: &'static str,
    },
}

/// Checks an account id: 1-64 ASCII letters, digits, `-` or `_`.
pub fn validate_account_id(id: &str) -> Result<(), LedgerError> {
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(valid) {
        Ok(())
    } else {
        Err(LedgerError::InvalidAccountId(id.to_owned()))
    }
}

/// Checks a free-text field: at most `max` characters, no control character.
pub fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), LedgerError> {
    if text.chars().any(char::is_control) {
        Err(LedgerError::ControlCharacter(field))
    } else if text.chars().count() > max {
        Err(LedgerError::TextTooLong { field, max })
    } else {
        Ok(())
    }
}

/// Checks a moment given by a user: years 1 to 9999, what every store can hold.
pub fn check_time(time: DateTime<Utc>) -> Result<DateTime<Utc>, LedgerError> {
    if (1..=9999).contains(&time.year()) {
        Ok(time)
    } else {
        Err(LedgerError::TimeOutOfRange(time))
    }
}
