//! The ledger's domain: money, accounts and transfers, with every rule as a [`LedgerError`].
//!
//! Aggregates are plain structs: `#[derive(Aggregate)]` generates their event enums
//! ([`AccountEvent`], [`TransferEvent`]) and `apply` dispatch; commands are ordinary methods that
//! read state and return the events that happen, or refuse.

mod account;
mod money;
mod transfer;

pub use account::{
    Account, AccountClosed, AccountEvent, AccountFrozen, AccountOpened, AccountStatus,
    AccountUnfrozen, MoneyDeposited, MoneyDepositedV1, MoneyWithdrawn, TransferReceived,
    TransferRefunded, TransferSent, TransferSettled,
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
    /// A text field (reference, reason) is too long.
    #[error("{field} must be at most {max} characters")]
    TextTooLong {
        /// Which field.
        field: &'static str,
        /// The limit.
        max: usize,
    },
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
        /// Balance plus overdraft limit.
        available: Money,
        /// What the debit asked for.
        requested: Money,
    },
    /// The account is frozen: no money moves in or out (compensating refunds excepted).
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
    /// An amount would overflow 64 bits.
    #[error("amount out of range")]
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
    /// A refund or settlement names a transfer this account never sent.
    #[error("transfer {0} was not sent from this account")]
    UnknownOutgoingTransfer(uuid::Uuid),
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
    if !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(LedgerError::InvalidAccountId(id.to_owned()))
    }
}

/// Checks a free-text field's length.
pub(crate) fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), LedgerError> {
    if text.chars().count() > max {
        Err(LedgerError::TextTooLong { field, max })
    } else {
        Ok(())
    }
}
