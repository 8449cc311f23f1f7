//! The transfer process manager: reacts to `Transfer` events and issues the next command.
//!
//! It is a [`Projection`] over the global log, run by es-core's
//! [`ProjectionRunner`](es_core::ProjectionRunner), so it resumes from a checkpoint after a restart and sees
//! every transfer event in order. Delivery is at least once, so every step is idempotent:
//!
//! - it acts only on the *latest* event of a transfer (an older one was superseded and its
//!   step already taken), and decides from the transfer's current state, not the event;
//! - the account commands it issues remember transfer ids (`send_transfer`,
//!   `receive_transfer`, `settle_transfer`, `refund_transfer` decide nothing the second time);
//! - the transfer's own steps accept a repeat of the step already taken.
//!
//! Every command it issues carries [`Metadata::caused_by`] the event it reacts to: the same
//! correlation id and user as the original request, and the event's id as causation id.

use es_core::{Aggregate, EventSet, EventStore};
use es_core::{BoxError, ExecuteError, Metadata, Projection, RecordedEvent, Repository};
use uuid::Uuid;

use crate::domain::{Account, LedgerError, Transfer, TransferStatus};

/// The name of the process manager's checkpoint.
pub const PROCESS_NAME: &str = "transfer-process";

/// Drives transfers from request to completion or compensation.
pub struct TransferProcess<S> {
    accounts: Repository<Account, S>,
    transfers: Repository<Transfer, S>,
}

impl<S: EventStore> TransferProcess<S> {
    /// A process manager issuing commands through these repositories.
    pub fn new(accounts: Repository<Account, S>, transfers: Repository<Transfer, S>) -> Self {
        Self {
            accounts,
            transfers,
        }
    }

    /// Takes the next step of the transfer `event` belongs to, if `event` is its latest.
    pub async fn react(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        if event.stream.aggregate_type != Transfer::TYPE {
            return Ok(());
        }
        let id = event.stream.aggregate_id.as_str();
        let transfer_id: Uuid = id.parse()?;
        let transfer = self.transfers.load(id).await?;
        if transfer.version != event.version {
            // A later event of this transfer exists; the step for this one was taken.
            return Ok(());
        }
        let Some(amount) = transfer.amount() else {
            return Ok(());
        };
        let meta = Metadata::caused_by(event).with_extra("process", PROCESS_NAME);
        let (from, to) = (transfer.from_account(), transfer.to_account());
        match transfer.status() {
            TransferStatus::Requested => {
                let debit = self
                    .accounts
                    .execute(from, meta.clone(), |a| {
                        a.send_transfer(transfer_id, to, &amount)
                    })
                    .await;
                match debit {
                    Ok(_) => self.step(id, meta, |t| t.mark_debited()).await,
                    Err(ExecuteError::Rejected(why)) => {
                        let reason = why.to_string();
                        self.step(id, meta, |t| t.reject(&reason)).await
                    }
                    Err(ExecuteError::Store(e)) => Err(e.into()),
                }
            }
            TransferStatus::Debited => {
                let credit = self
                    .accounts
                    .execute(to, meta.clone(), |a| {
                        a.receive_transfer(transfer_id, from, &amount)
                    })
                    .await;
                match credit {
                    Ok(_) => self.step(id, meta, |t| t.complete()).await,
                    Err(ExecuteError::Rejected(why)) => {
                        let reason = format!("{to}: {why}");
                        self.step(id, meta, |t| t.credit_failed(&reason)).await
                    }
                    Err(ExecuteError::Store(e)) => Err(e.into()),
                }
            }
            TransferStatus::Completed => {
                self.accounts
                    .execute(from, meta, |a| a.settle_transfer(transfer_id))
                    .await?;
                Ok(())
            }
            TransferStatus::CreditFailed => {
                let reason = transfer.reason().unwrap_or("credit failed").to_owned();
                self.accounts
                    .execute(from, meta.clone(), |a| {
                        a.refund_transfer(transfer_id, &reason)
                    })
                    .await?;
                self.step(id, meta, |t| t.compensate()).await
            }
            TransferStatus::None | TransferStatus::Rejected | TransferStatus::Compensated => Ok(()),
        }
    }

    async fn step<R>(
        &self,
        id: &str,
        meta: Metadata,
        decide: impl FnMut(&Transfer) -> Result<R, LedgerError> + Send,
    ) -> Result<(), BoxError>
    where
        R: es_core::IntoEvents<<Transfer as Aggregate>::Event>,
    {
        self.transfers.execute(id, meta, decide).await?;
        Ok(())
    }
}

impl<S: EventStore> Projection for TransferProcess<S> {
    fn name(&self) -> &str {
        PROCESS_NAME
    }

    fn event_names(&self) -> Option<&[&str]> {
        Some(<<Transfer as Aggregate>::Event as EventSet>::NAMES)
    }

    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.react(event).await
    }

    async fn reset(&mut self) -> Result<(), BoxError> {
        // The process keeps no state of its own: its state lives in the Transfer aggregates.
        Ok(())
    }
}
