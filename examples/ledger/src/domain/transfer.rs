//! The `Transfer` aggregate: the state of one transfer process, the single source of truth for
//! which step comes next.

use std::fmt;

use es_core::prelude::*;

use super::{Currency, LedgerError, Money, check_text, validate_account_id};

/// Someone asked to move money between two accounts.
#[event]
pub struct TransferRequested {
    /// Source account.
    pub from_account: String,
    /// Destination account.
    pub to_account: String,
    /// Minor units.
    pub amount: i64,
    /// The currency both accounts must hold.
    pub currency: Currency,
    /// Free text shown on both statements.
    pub reference: String,
}

/// The source account refused the debit (insufficient funds, frozen, ...). Final.
#[event]
pub struct TransferRejected {
    /// Why.
    pub reason: String,
}

/// The source account was debited; the money is in flight.
#[event]
pub struct TransferDebited {}

/// The destination account was credited. Final.
#[event]
pub struct TransferCompleted {}

/// The destination account refused the credit; the source must be refunded.
#[event]
pub struct TransferCreditFailed {
    /// Why.
    pub reason: String,
}

/// The source account was refunded after a failed credit. Final.
#[event]
pub struct TransferCompensated {}

/// Where a transfer is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    /// Never requested.
    #[default]
    None,
    /// Requested: the source is to be debited.
    Requested,
    /// Debit refused. Final.
    Rejected,
    /// Source debited: the destination is to be credited.
    Debited,
    /// Destination credited. Final.
    Completed,
    /// Credit refused: the source is to be refunded.
    CreditFailed,
    /// Source refunded. Final.
    Compensated,
}

impl TransferStatus {
    /// A lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferStatus::None => "none",
            TransferStatus::Requested => "requested",
            TransferStatus::Rejected => "rejected",
            TransferStatus::Debited => "debited",
            TransferStatus::Completed => "completed",
            TransferStatus::CreditFailed => "credit_failed",
            TransferStatus::Compensated => "compensated",
        }
    }

    /// Whether no further step will happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TransferStatus::Rejected | TransferStatus::Completed | TransferStatus::Compensated
        )
    }
}

impl fmt::Display for TransferStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One transfer between two accounts, as a state machine:
///
/// ```text
/// Requested ──debit ok──▶ Debited ──credit ok──▶ Completed
///     │                      │
///     └─debit refused─▶ Rejected    └─credit refused─▶ CreditFailed ──refund──▶ Compensated
/// ```
///
/// Each step is idempotent: repeating a step already taken decides nothing, so the process
/// manager may safely handle an event twice.
#[derive(Aggregate, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[aggregate(
    name = "Transfer",
    events(
        TransferRequested,
        TransferRejected,
        TransferDebited,
        TransferCompleted,
        TransferCreditFailed,
        TransferCompensated
    )
)]
pub struct Transfer {
    status: TransferStatus,
    from_account: String,
    to_account: String,
    amount: i64,
    currency: Option<Currency>,
    reference: String,
    reason: Option<String>,
}

impl Apply<TransferRequested> for Transfer {
    fn apply(&mut self, e: &TransferRequested) {
        self.status = TransferStatus::Requested;
        self.from_account.clone_from(&e.from_account);
        self.to_account.clone_from(&e.to_account);
        self.amount = e.amount;
        self.currency = Some(e.currency.clone());
        self.reference.clone_from(&e.reference);
    }
}

impl Apply<TransferRejected> for Transfer {
    fn apply(&mut self, e: &TransferRejected) {
        self.status = TransferStatus::Rejected;
        self.reason = Some(e.reason.clone());
    }
}

impl Apply<TransferDebited> for Transfer {
    fn apply(&mut self, _: &TransferDebited) {
        self.status = TransferStatus::Debited;
    }
}

impl Apply<TransferCompleted> for Transfer {
    fn apply(&mut self, _: &TransferCompleted) {
        self.status = TransferStatus::Completed;
    }
}

impl Apply<TransferCreditFailed> for Transfer {
    fn apply(&mut self, e: &TransferCreditFailed) {
        self.status = TransferStatus::CreditFailed;
        self.reason = Some(e.reason.clone());
    }
}

impl Apply<TransferCompensated> for Transfer {
    fn apply(&mut self, _: &TransferCompensated) {
        self.status = TransferStatus::Compensated;
    }
}

impl Transfer {
    /// The status.
    pub fn status(&self) -> TransferStatus {
        self.status
    }

    /// Source account.
    pub fn from_account(&self) -> &str {
        &self.from_account
    }

    /// Destination account.
    pub fn to_account(&self) -> &str {
        &self.to_account
    }

    /// The amount, once requested.
    pub fn amount(&self) -> Option<Money> {
        self.currency
            .clone()
            .map(|currency| Money::new(self.amount, currency))
    }

    /// The reference.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Why it was rejected or its credit failed.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// Requests the transfer.
    pub fn request(
        &self,
        from_account: &str,
        to_account: &str,
        amount: &Money,
        reference: &str,
    ) -> Result<TransferRequested, LedgerError> {
        if self.status != TransferStatus::None {
            return Err(LedgerError::TransferAlreadyExists);
        }
        validate_account_id(from_account)?;
        validate_account_id(to_account)?;
        if from_account == to_account {
            return Err(LedgerError::SameAccount);
        }
        if amount.minor <= 0 {
            return Err(LedgerError::NonPositiveAmount(amount.minor));
        }
        check_text("reference", reference, 200)?;
        Ok(TransferRequested {
            from_account: from_account.to_owned(),
            to_account: to_account.to_owned(),
            amount: amount.minor,
            currency: amount.currency.clone(),
            reference: reference.to_owned(),
        })
    }

    /// Records that the source refused the debit.
    pub fn reject(&self, reason: &str) -> Result<Option<TransferRejected>, LedgerError> {
        self.step(
            TransferStatus::Requested,
            TransferStatus::Rejected,
            "reject",
        )
        .map(|go| {
            go.then(|| TransferRejected {
                reason: reason.to_owned(),
            })
        })
    }

    /// Records that the source was debited.
    pub fn mark_debited(&self) -> Result<Option<TransferDebited>, LedgerError> {
        self.step(
            TransferStatus::Requested,
            TransferStatus::Debited,
            "mark debited",
        )
        .map(|go| go.then_some(TransferDebited {}))
    }

    /// Records that the destination was credited.
    pub fn complete(&self) -> Result<Option<TransferCompleted>, LedgerError> {
        self.step(
            TransferStatus::Debited,
            TransferStatus::Completed,
            "complete",
        )
        .map(|go| go.then_some(TransferCompleted {}))
    }

    /// Records that the destination refused the credit.
    pub fn credit_failed(&self, reason: &str) -> Result<Option<TransferCreditFailed>, LedgerError> {
        self.step(
            TransferStatus::Debited,
            TransferStatus::CreditFailed,
            "record a failed credit",
        )
        .map(|go| {
            go.then(|| TransferCreditFailed {
                reason: reason.to_owned(),
            })
        })
    }

    /// Records that the source was refunded.
    pub fn compensate(&self) -> Result<Option<TransferCompensated>, LedgerError> {
        self.step(
            TransferStatus::CreditFailed,
            TransferStatus::Compensated,
            "compensate",
        )
        .map(|go| go.then_some(TransferCompensated {}))
    }

    /// `Ok(true)` when the transfer is at `from`, `Ok(false)` when it already reached `to`
    /// (an idempotent repeat), an error otherwise.
    fn step(
        &self,
        from: TransferStatus,
        to: TransferStatus,
        step: &'static str,
    ) -> Result<bool, LedgerError> {
        if self.status == from {
            Ok(true)
        } else if self.status == to {
            Ok(false)
        } else if self.status == TransferStatus::None {
            Err(LedgerError::TransferNotFound)
        } else {
            Err(LedgerError::InvalidTransferStep {
                status: self.status,
                step,
            })
        }
    }
}
