//! The transfer process manager: a [`Consumer`] of `Transfer` events that issues the next
//! command of each transfer (debit, credit, settle, refund, reverse) and records its outcome.
//!
//! It runs on es-core's consumer runtime, at least once, split into [`Partitions`] by transfer
//! stream (transfers do not wait behind one another), each partition under a single-active
//! lease, so one runner per partition is active across processes. Redelivery is harmless:
//!
//! - it acts only on the *latest* event of a transfer and decides from the transfer's state;
//! - every command it issues is keyed by [`CommandKey::caused_by`] the event and the step, so a
//!   repeat returns the first outcome instead of acting again
//!   ([`Repository::execute_once`]); the account and transfer commands are idempotent too.
//!
//! A refusal is an outcome, recorded on the transfer, never retried: a refused debit rejects
//! the transfer, a refused credit fails it and the source is refunded (compensated), and a
//! refused settlement (the source was never debited) reverses the credit (compensated). The
//! source is settled before the transfer is marked completed, so `Completed` is final.
//! Should two runners ever overlap (a lease lost mid-batch), the one whose step lost the race
//! undoes its own effect: a debit that lands on a rejected transfer is refunded, and a credit
//! that lands on a failed one is reversed. Anything else the domain refuses is a permanent
//! error ([`es_core::permanent`]): the runtime parks the event at once
//! ([`PoisonPolicy::Park`]) and goes on; a store failure is retried with backoff first.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use es_core::{
    AtLeastOnce, BatchError, BoxError, CommandKey, Committed, Consumer, ConsumerHandle, Envelope,
    EventHandler, EventStore, ExecuteError, IntoEvents, Leases, Metadata, Partition, PoisonPolicy,
    RecordedEvent, Repository, RetryPolicy,
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::{Account, LedgerError, Money, Transfer, TransferEvent, TransferStatus};

/// What the ledger runs on: any [`EventStore`] its consumers can share.
pub trait Store: EventStore + Clone + 'static {}

impl<S: EventStore + Clone + 'static> Store for S {}

/// The name of the process manager's consumer (partition `i` of `n` checkpoints as
/// `transfer-process[i/n]`).
pub const PROCESS: &str = "transfer-process";

/// How the process manager runs.
#[derive(Debug, Clone, Copy)]
pub struct Partitions {
    /// How many partitions (each a consumer with its own checkpoint and lease); 0: the
    /// process manager does not run here.
    pub count: u32,
    /// How a failing step is retried before its event is parked.
    pub retry: RetryPolicy,
    /// How often a runner waiting for a partition's lease tries to take it.
    pub lease_poll: Duration,
}

impl Default for Partitions {
    fn default() -> Self {
        let retry = RetryPolicy {
            attempts: 8,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(2),
        };
        Self {
            count: 4,
            retry,
            lease_poll: Duration::from_millis(100),
        }
    }
}

/// Drives transfers from request to a final outcome.
pub struct TransferProcess<S> {
    accounts: Repository<Account, S>,
    transfers: Repository<Transfer, S>,
    stepped: Arc<Stepped>,
    carried: Arc<Carried>,
}

impl<S: Clone> Clone for TransferProcess<S> {
    fn clone(&self) -> Self {
        Self {
            accounts: self.accounts.clone(),
            transfers: self.transfers.clone(),
            stepped: self.stepped.clone(),
            carried: self.carried.clone(),
        }
    }
}

/// Wakes whoever waits for a transfer when this process's manager took a step of it, so that
/// a waiter checks its transfer once per step instead of on every append to the store.
#[derive(Debug, Default)]
pub struct Stepped {
    waiting: Mutex<HashMap<Uuid, Arc<Notify>>>,
}

impl Stepped {
    /// Watches `transfer_id` until the returned guard is dropped.
    pub fn watch(&self, transfer_id: Uuid) -> Watching<'_> {
        let signal = self.lock().entry(transfer_id).or_default().clone();
        Watching {
            stepped: self,
            transfer_id,
            signal,
        }
    }

    fn step_taken(&self, transfer_id: Uuid) {
        if let Some(signal) = self.lock().get(&transfer_id) {
            signal.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Notify>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A watch on one transfer's steps ([`Stepped::watch`]).
#[derive(Debug)]
pub struct Watching<'a> {
    stepped: &'a Stepped,
    transfer_id: Uuid,
    signal: Arc<Notify>,
}

impl Watching<'_> {
    /// The transfer watched.
    pub fn transfer_id(&self) -> Uuid {
        self.transfer_id
    }

    /// Resolves after the next step this process takes for the transfer (or at once, if one
    /// was taken since the last call).
    pub async fn step_taken(&self) {
        self.signal.notified().await;
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        let mut waiting = self.stepped.lock();
        // Ours and the map's: nobody else watches this transfer.
        if Arc::strong_count(&self.signal) <= 2 {
            waiting.remove(&self.transfer_id);
        }
    }
}

/// A consumer named `name` running the process manager over `store`, at least once, with its
/// checkpoint in the store.
pub fn consumer<S: Store>(
    name: &str,
    store: S,
    process: TransferProcess<S>,
) -> Consumer<TransferProcess<S>, S, AtLeastOnce<S>> {
    Consumer::new(name, store.clone(), AtLeastOnce::new(store), process)
}

/// Spawns every partition of the process manager, each under a lease from `leases`.
pub fn spawn<S: Store>(
    store: &S,
    process: &TransferProcess<S>,
    leases: &Arc<dyn Leases>,
    options: Partitions,
) -> Vec<ConsumerHandle> {
    Partition::all(options.count)
        .map(|partition| {
            consumer(PROCESS, store.clone(), process.clone())
                .partition(partition)
                .lease(leases.clone(), options.lease_poll)
                .retry(options.retry)
                .on_poison(PoisonPolicy::Park)
                .spawn()
        })
        .collect()
}

type Outcome = Result<Result<Committed, LedgerError>, BoxError>;

impl<S: Store> TransferProcess<S> {
    /// A process manager issuing commands through these repositories.
    pub fn new(accounts: Repository<Account, S>, transfers: Repository<Transfer, S>) -> Self {
        Self {
            accounts,
            transfers,
            stepped: Arc::default(),
            carried: Arc::default(),
        }
    }

    /// The steps this process manager takes, for those waiting on a transfer.
    pub fn stepped(&self) -> &Arc<Stepped> {
        &self.stepped
    }

    /// Takes the next step of the transfer `record` belongs to, and wakes its waiters.
    async fn react_and_signal(&self, record: &RecordedEvent) -> Result<(), BoxError> {
        let reacted = self.react(record).await;
        if let Ok(transfer_id) = record.stream.aggregate_id.parse() {
            self.stepped.step_taken(transfer_id);
        }
        reacted
    }

    /// Advances the transfer `record` belongs to, if `record` is its latest event: takes its
    /// next step and goes on from the event that step recorded, until the transfer waits for
    /// nothing.
    ///
    /// The events it goes on from are redelivered later; this process remembers them and
    /// skips them without a read. Another process (or this one after a restart) reads the
    /// transfer and skips them as no longer the latest; after a crash mid-way, the last one
    /// is the latest and its steps run again under the same keys.
    pub async fn react(&self, record: &RecordedEvent) -> Result<(), BoxError> {
        if self.carried.forget(record.event_id) {
            return Ok(());
        }
        let id = record.stream.aggregate_id.as_str();
        let transfer = self.transfers.load(id).await?;
        let Some(amount) = transfer
            .amount()
            .filter(|_| transfer.version == record.version)
        else {
            return Ok(()); // a later event exists: the step for this one was taken
        };
        let mut facts = Facts {
            transfer_id: id.parse().map_err(es_core::permanent)?,
            from: transfer.from_account(),
            to: transfer.to_account(),
            amount,
            status: transfer.status(),
            reason: transfer.reason().map(str::to_owned),
        };
        let (mut record, mut carried) = (Cow::Borrowed(record), Vec::new());
        while let Some(next) = self.step(&record, &facts).await? {
            facts.status = match next.decode::<TransferEvent>()? {
                TransferEvent::TransferDebited(_) => TransferStatus::Debited,
                TransferEvent::TransferCreditFailed(failed) => {
                    facts.reason = Some(failed.reason);
                    TransferStatus::CreditFailed
                }
                _ => break,
            };
            carried.push(next.event_id);
            record = Cow::Owned(next);
        }
        // Only now: had a step after one of them failed, its delivery must take that step.
        for event_id in carried {
            self.carried.remember(event_id);
        }
        Ok(())
    }

    /// Takes the step the transfer's state calls for (`record` is its latest event); returns
    /// the event it recorded if the transfer now calls for another step.
    async fn step(
        &self,
        record: &RecordedEvent,
        facts: &Facts<'_>,
    ) -> Result<Option<RecordedEvent>, BoxError> {
        let step = Step {
            process: self,
            record,
            id: &record.stream.aggregate_id,
        };
        let (transfer_id, from, to, amount) =
            (facts.transfer_id, facts.from, facts.to, &facts.amount);
        match facts.status {
            TransferStatus::Requested => {
                match step
                    .account(from, "debit", |a| a.send_transfer(transfer_id, to, amount))
                    .await?
                {
                    Ok(_) => match step.transfer("debited", |t| t.mark_debited()).await? {
                        Ok(committed) => return Ok(committed.events.into_iter().last()),
                        Err(_) => {
                            // Rejected meanwhile by another runner: give the money back.
                            let why = "debited after the transfer was rejected";
                            let undo = |a: &Account| a.refund_transfer(transfer_id, why);
                            refused(step.account(from, "undo-debit", undo).await?)?;
                        }
                    },
                    Err(why) => {
                        // Refused if another runner's debit went through: that one stands.
                        let why = why.to_string();
                        let _ = step.transfer("reject", |t| t.reject(&why)).await?;
                    }
                }
            }
            TransferStatus::Debited => {
                let credit = |a: &Account| a.receive_transfer(transfer_id, from, amount);
                match step.account(to, "credit", credit).await? {
                    Ok(_) => {
                        // Settled before completing, so that `Completed` is final.
                        let settle = |a: &Account| a.settle_transfer(transfer_id);
                        if let Err(why) = step.account(from, "settle", settle).await? {
                            // The source has no such debit in flight: the credit must not stand.
                            let why = format!("{from}: {why}");
                            let reverse = |a: &Account| a.reverse_transfer(transfer_id, &why);
                            refused(step.account(to, "reverse", reverse).await?)?;
                            refused(step.transfer("compensate", |t| t.compensate()).await?)?;
                        } else if step.transfer("complete", |t| t.complete()).await?.is_err() {
                            // Failed meanwhile by another runner: the credit must not stand.
                            let why = "credited after the credit failed";
                            let undo = |a: &Account| a.reverse_transfer(transfer_id, why);
                            refused(step.account(to, "undo-credit", undo).await?)?;
                        }
                    }
                    Err(why) => {
                        let why = format!("{to}: {why}");
                        let failed = step.transfer("credit-failed", |t| t.credit_failed(&why));
                        if let Ok(committed) = failed.await? {
                            return Ok(committed.events.into_iter().last());
                        }
                    }
                }
            }
            TransferStatus::CreditFailed => {
                let why = facts.reason.as_deref().unwrap_or("credit failed");
                let refund = |a: &Account| a.refund_transfer(transfer_id, why);
                refused(step.account(from, "refund", refund).await?)?;
                refused(step.transfer("compensate", |t| t.compensate()).await?)?;
            }
            TransferStatus::None
            | TransferStatus::Rejected
            | TransferStatus::Completed
            | TransferStatus::Compensated => {}
        }
        Ok(None)
    }
}

/// What the steps of one transfer need to know of it.
struct Facts<'a> {
    transfer_id: Uuid,
    from: &'a str,
    to: &'a str,
    amount: Money,
    status: TransferStatus,
    reason: Option<String>,
}

/// The events this process went on from without waiting for their delivery (see
/// [`TransferProcess::react`]), so that their delivery costs no read.
#[derive(Debug, Default)]
struct Carried {
    events: Mutex<HashSet<Uuid>>,
}

impl Carried {
    /// Most events remembered; past it the memory is dropped (their deliveries then read
    /// their transfer, as another process would).
    const MOST: usize = 100_000;

    fn remember(&self, event_id: Uuid) {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if events.len() >= Self::MOST {
            events.clear();
        }
        events.insert(event_id);
    }

    fn forget(&self, event_id: Uuid) -> bool {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events.remove(&event_id)
    }
}

/// A refusal the process cannot turn into an outcome: a permanent error, parked at once
/// (retrying cannot change the domain's answer).
fn refused(outcome: Result<Committed, LedgerError>) -> Result<Committed, BoxError> {
    outcome.map_err(|why| es_core::permanent(format!("step refused: {why}")))
}

/// The commands issued in reaction to one event.
struct Step<'a, S> {
    process: &'a TransferProcess<S>,
    record: &'a RecordedEvent,
    id: &'a str,
}

impl<S: Store> Step<'_, S> {
    fn key(&self, step: &str) -> CommandKey {
        CommandKey::caused_by(self.record.event_id, step)
    }

    fn meta(&self) -> Metadata {
        Metadata::caused_by(self.record).with_extra("process", PROCESS)
    }

    async fn account<R: IntoEvents<<Account as es_core::Aggregate>::Event>>(
        &self,
        account: &str,
        step: &str,
        decide: impl FnMut(&Account) -> Result<R, LedgerError> + Send,
    ) -> Outcome {
        let accounts = &self.process.accounts;
        outcome(
            accounts
                .execute_once(account, self.key(step), self.meta(), decide)
                .await,
        )
    }

    async fn transfer<R: IntoEvents<TransferEvent>>(
        &self,
        step: &str,
        decide: impl FnMut(&Transfer) -> Result<R, LedgerError> + Send,
    ) -> Outcome {
        let transfers = &self.process.transfers;
        outcome(
            transfers
                .execute_once(self.id, self.key(step), self.meta(), decide)
                .await,
        )
    }
}

fn outcome(result: Result<Committed, ExecuteError<LedgerError>>) -> Outcome {
    match result {
        Ok(committed) => Ok(Ok(committed)),
        Err(ExecuteError::Rejected(why)) => Ok(Err(why)),
        Err(ExecuteError::Store(error)) => Err(error.into()),
    }
}

impl<S: Store> EventHandler for TransferProcess<S> {
    type Event = TransferEvent;

    async fn handle(
        &mut self,
        _: &mut (),
        event: &Envelope<TransferEvent>,
    ) -> Result<(), BoxError> {
        self.react_and_signal(&event.record).await
    }

    /// Takes the steps of different transfers side by side (each transfer's in order): a
    /// transfer's steps are a chain of commits, and one partition carries many transfers.
    async fn handle_batch(
        &mut self,
        _: &mut (),
        events: &[Envelope<TransferEvent>],
    ) -> Result<(), BatchError> {
        let process = &*self;
        es_core::handle_by_stream(events, TRANSFERS_IN_PARALLEL, |event| {
            process.react_and_signal(&event.record)
        })
        .await
    }
}

/// How many transfers one partition advances at a time.
const TRANSFERS_IN_PARALLEL: usize = 8;
