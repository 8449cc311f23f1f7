//! The `Transfer` aggregate: the state of one transfer process, the single source of truth for
//! which step comes next.

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

/// The destination account was credited. Final unless the source turns out never debited.
#[event]
pub struct TransferCompleted {}

/// The destination account refused the credit; the source must be refunded.
#[event]
pub struct TransferCreditFailed {
    /// Why.
    pub reason: String,
}

/// The transfer was undone: the source refunded after a failed credit, or the credit
/// reversed when the source was never debited. Final.
#[event]
pub struct TransferCompensated {}

named! {
    /// Where a transfer is.
    pub enum TransferStatus {
        /// Never requested.
        None = "none",
        /// Requested: the source is to be debited.
        Requested = "requested",
        /// Debit refused. Final.
        Rejected = "rejected",
        /// Source debited: the destination is to be credited.
        Debited = "debited",
        /// Destination credited and source settled. Final.
        Completed = "completed",
        /// Credit refused: the source is to be refunded.
        CreditFailed = "credit_failed",
        /// Undone. Final.
        Compensated = "compensated",
    }
}

impl TransferStatus {
    /// Whether the transfer's outcome is known: rejected, completed or compensated.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Rejected | Self::Completed | Self::Compensated)
    }
}

/// One transfer between two accounts, as a state machine:
///
/// ```text
/// Requested ──debit ok──▶ Debited ──credit ok, source settled──▶ Completed
///     │                      ├──credit ok, source never debited: credit reversed──┐
///     │                      └──credit refused──▶ CreditFailed ──refund──┐        │
///     └──debit refused──▶ Rejected                                       ▼        ▼
///                                                                       Compensated
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

apply!(Transfer {
    TransferRequested(s, e) => {
        s.status = TransferStatus::Requested;
        s.from_account.clone_from(&e.from_account);
        s.to_account.clone_from(&e.to_account);
        s.amount = e.amount;
        s.currency = Some(e.currency.clone());
        s.reference.clone_from(&e.reference);
    }
    TransferRejected(s, e) => (s.status, s.reason) = (TransferStatus::Rejected, Some(e.reason.clone())),
    TransferDebited(s, _) => s.status = TransferStatus::Debited,
    TransferCompleted(s, _) => s.status = TransferStatus::Completed,
    TransferCreditFailed(s, e) => {
        (s.status, s.reason) = (TransferStatus::CreditFailed, Some(e.reason.clone()));
    }
    TransferCompensated(s, _) => s.status = TransferStatus::Compensated,
});

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
        let event = || TransferRejected {
            reason: reason.to_owned(),
        };
        self.step(
            &[TransferStatus::Requested],
            TransferStatus::Rejected,
            "reject",
            event,
        )
    }

    /// Records that the source was debited.
    pub fn mark_debited(&self) -> Result<Option<TransferDebited>, LedgerError> {
        let event = || TransferDebited {};
        self.step(
            &[TransferStatus::Requested],
            TransferStatus::Debited,
            "mark debited",
            event,
        )
    }

    /// Records that the destination was credited.
    pub fn complete(&self) -> Result<Option<TransferCompleted>, LedgerError> {
        let event = || TransferCompleted {};
        self.step(
            &[TransferStatus::Debited],
            TransferStatus::Completed,
            "complete",
            event,
        )
    }

    /// Records that the destination refused the credit.
    pub fn credit_failed(&self, reason: &str) -> Result<Option<TransferCreditFailed>, LedgerError> {
        let event = || TransferCreditFailed {
            reason: reason.to_owned(),
        };
        let (from, to) = ([TransferStatus::Debited], TransferStatus::CreditFailed);
        self.step(&from, to, "record a failed credit", event)
    }

    /// Records that the transfer was undone: after a failed credit (the source refunded), or
    /// after a credit when the source turned out never debited (the credit reversed).
    pub fn compensate(&self) -> Result<Option<TransferCompensated>, LedgerError> {
        let from = [TransferStatus::CreditFailed, TransferStatus::Debited];
        self.step(&from, TransferStatus::Compensated, "compensate", || {
            TransferCompensated {}
        })
    }

    /// The event when the transfer is at one of `from`, nothing when it already reached `to`
    /// (an idempotent repeat), an error otherwise.
    fn step<E>(
        &self,
        from: &[TransferStatus],
        to: TransferStatus,
        step: &'static str,
        event: impl FnOnce() -> E,
    ) -> Result<Option<E>, LedgerError> {
        match self.status {
            status if from.contains(&status) => Ok(Some(event())),
            status if status == to => Ok(None),
            TransferStatus::None => Err(LedgerError::TransferNotFound),
            status => Err(LedgerError::InvalidTransferStep { status, step }),
        }
    }
}

impl TransferEvent {
    /// A one-line description for audit trails.
    pub fn describe(&self) -> String {
        match self {
            TransferEvent::TransferRequested(e) => format!(
                "transfer of {} from {} to {} requested",
                Money::new(e.amount, e.currency.clone()),
                e.from_account,
                e.to_account
            ),
            TransferEvent::TransferRejected(e) => format!("transfer rejected: {}", e.reason),
            TransferEvent::TransferDebited(_) => "source debited".to_owned(),
            TransferEvent::TransferCompleted(_) => "destination credited: completed".to_owned(),
            TransferEvent::TransferCreditFailed(e) => format!("credit failed: {}", e.reason),
            TransferEvent::TransferCompensated(_) => "undone: compensated".to_owned(),
        }
    }
}
