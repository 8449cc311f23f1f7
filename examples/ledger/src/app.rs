//! [`Ledger`]: the application service the CLI, the HTTP API, the demo and the tests share.
//!
//! Commands go through es-core [`Repository`]s (load, decide, append, retry on conflict);
//! transfers are driven by the [`TransferProcess`]; queries read the read models (in memory
//! or in PostgreSQL tables, see [`ReadSide`]) after catching them up, so a caller always reads
//! its own writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use es_core::{
    AsOf, EventStore, EventStoreExt, ExecuteError, IntoEvents, Metadata, Progress,
    ProjectionRunner, RecordedEvent, Repository,
};
use es_postgres::PostgresStore;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::domain::{
    Account, AccountEvent, AccountStatus, Currency, LedgerError, Money, Transfer, TransferEvent,
    TransferStatus, validate_account_id,
};
use crate::process::TransferProcess;
use crate::read_model::{
    AccountRow, CurrencyTotals, LedgerView, ReadModels, StatementLine, TransferRow,
};
use crate::read_side::ReadSide;
use crate::tables::TableReadModels;

/// How long a caller waits for its own write to show in the global log.
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A domain rule refused the command.
    #[error(transparent)]
    Domain(#[from] LedgerError),
    /// The account or transfer does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The stream stayed contested through every retry.
    #[error("{0}")]
    Conflict(es_core::Error),
    /// The store failed.
    #[error("store error: {0}")]
    Store(es_core::Error),
    /// The read models broke an invariant (a bug, never a user error).
    #[error("read model inconsistent: {0}")]
    Inconsistent(String),
}

impl From<es_core::Error> for AppError {
    fn from(error: es_core::Error) -> Self {
        if error.is_conflict() {
            AppError::Conflict(error)
        } else {
            AppError::Store(error)
        }
    }
}

/// What a successful command wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// The aggregate id (account id or transfer id).
    pub id: String,
    /// The stream version after the command.
    pub version: u64,
    /// The events written (empty when nothing needed to happen).
    pub events: Vec<String>,
    /// The correlation id every event of the command carries.
    pub correlation_id: Option<Uuid>,
    /// Global position of the last event written (0 when none).
    pub position: u64,
}

/// The outcome of a transfer request, after the process ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferOutcome {
    /// The transfer id.
    pub transfer_id: Uuid,
    /// Where it ended.
    pub status: TransferStatus,
    /// Why it was rejected or compensated.
    pub reason: Option<String>,
    /// The request's correlation id: every event of the transfer carries it.
    pub correlation_id: Option<Uuid>,
}

/// One entry of an audit trail: who did what, when, why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Stream, e.g. `Account/alice`.
    pub stream: String,
    /// Stream version.
    pub version: u64,
    /// Global position.
    pub position: u64,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Stored event name.
    pub event: String,
    /// Stored schema version.
    pub schema_version: u32,
    /// A readable description.
    pub description: String,
    /// Who.
    pub user_id: Option<String>,
    /// The flow it belongs to.
    pub correlation_id: Option<Uuid>,
    /// What directly caused it.
    pub causation_id: Option<Uuid>,
    /// The event id.
    pub event_id: Uuid,
    /// The payload, upcast to the current schema.
    pub data: serde_json::Value,
}

/// An account's balance at a point in its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalanceAt {
    /// Account id.
    pub account_id: String,
    /// The stream version the balance reflects.
    pub version: u64,
    /// Balance in minor units.
    pub balance: i64,
    /// Balance as a decimal string.
    pub balance_display: String,
    /// Currency (none if the account did not exist yet).
    pub currency: Option<Currency>,
    /// Status at that point.
    pub status: AccountStatus,
}

/// The ledger application over any [`EventStore`].
pub struct Ledger<S> {
    store: S,
    accounts: Repository<Account, S>,
    transfers: Repository<Transfer, S>,
    process: Arc<Mutex<ProjectionRunner<S, TransferProcess<S>>>>,
    read_side: Arc<ReadSide<S>>,
    /// The highest global position this ledger (or a clone) wrote or waited for: queries
    /// read at least that far, so a caller reads its own writes.
    written: Arc<AtomicU64>,
    /// On PostgreSQL, the store whose advisory lock serialises process-manager runs across
    /// processes (see [`crate::storage::lock_process_manager`]).
    process_lock: Option<PostgresStore>,
}

impl<S: EventStore> Clone for Ledger<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            accounts: self.accounts.clone(),
            transfers: self.transfers.clone(),
            process: self.process.clone(),
            read_side: self.read_side.clone(),
            written: self.written.clone(),
            process_lock: self.process_lock.clone(),
        }
    }
}

impl<S: EventStore> Ledger<S> {
    /// Opens the ledger on `store` with its read models in memory: rebuilds them from the
    /// log and finishes any transfer a previous run left half-way.
    ///
    /// `view_name` names the read models' checkpoint; give each process its own when the
    /// store is shared, since the in-memory read models live and die with the process.
    pub async fn open(store: S, view_name: &str) -> Result<Self, AppError> {
        let read_side = ReadSide::memory(store.clone(), view_name).await?;
        Self::with_read_side(store, read_side).await
    }

    /// Opens the ledger on `store` with the given read models, and finishes any transfer a
    /// previous run left half-way.
    pub async fn with_read_side(store: S, read_side: ReadSide<S>) -> Result<Self, AppError> {
        Self::assemble(store, read_side, None).await
    }

    async fn assemble(
        store: S,
        read_side: ReadSide<S>,
        process_lock: Option<PostgresStore>,
    ) -> Result<Self, AppError> {
        let accounts = Repository::<Account, S>::new(store.clone()).with_state_cache(10_000);
        let transfers = Repository::<Transfer, S>::new(store.clone()).with_state_cache(10_000);
        let process = ProjectionRunner::new(
            store.clone(),
            TransferProcess::new(accounts.clone(), transfers.clone()),
        );
        let ledger = Self {
            store,
            accounts,
            transfers,
            process: Arc::new(Mutex::new(process)),
            read_side: Arc::new(read_side),
            written: Arc::new(AtomicU64::new(0)),
            process_lock,
        };
        ledger.run_processes().await?;
        Ok(ledger)
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Opens an account.
    pub async fn open_account(
        &self,
        meta: Metadata,
        account_id: &str,
        owner: &str,
        currency: Currency,
        overdraft_limit: i64,
    ) -> Result<Receipt, AppError> {
        validate_account_id(account_id)?;
        self.on_account(account_id, meta, |a| {
            a.open(owner, currency.clone(), overdraft_limit)
        })
        .await
    }

    /// Pays money into an account.
    pub async fn deposit(
        &self,
        meta: Metadata,
        account_id: &str,
        amount: &Money,
        reference: &str,
    ) -> Result<Receipt, AppError> {
        self.on_account(account_id, meta, |a| a.deposit(amount, reference))
            .await
    }

    /// Pays money out of an account.
    pub async fn withdraw(
        &self,
        meta: Metadata,
        account_id: &str,
        amount: &Money,
        reference: &str,
    ) -> Result<Receipt, AppError> {
        self.on_account(account_id, meta, |a| a.withdraw(amount, reference))
            .await
    }

    /// Freezes an account.
    pub async fn freeze(
        &self,
        meta: Metadata,
        account_id: &str,
        reason: &str,
    ) -> Result<Receipt, AppError> {
        self.on_account(account_id, meta, |a| a.freeze(reason))
            .await
    }

    /// Unfreezes an account.
    pub async fn unfreeze(
        &self,
        meta: Metadata,
        account_id: &str,
        reason: &str,
    ) -> Result<Receipt, AppError> {
        self.on_account(account_id, meta, |a| a.unfreeze(reason))
            .await
    }

    /// Closes an account (at a zero balance).
    pub async fn close(
        &self,
        meta: Metadata,
        account_id: &str,
        reason: &str,
    ) -> Result<Receipt, AppError> {
        self.on_account(account_id, meta, |a| a.close(reason)).await
    }

    /// Requests a transfer and drives it to its end: completed, rejected, or compensated.
    pub async fn transfer(
        &self,
        meta: Metadata,
        from_account: &str,
        to_account: &str,
        amount: &Money,
        reference: &str,
    ) -> Result<TransferOutcome, AppError> {
        let transfer_id = Uuid::now_v7();
        self.request_transfer(
            meta,
            transfer_id,
            from_account,
            to_account,
            amount,
            reference,
        )
        .await?;
        // A store's global log may show a fresh commit a moment later (PostgreSQL waits
        // for concurrent transactions that took lower positions), so poll until final.
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            self.run_processes().await?;
            let outcome = self.transfer_outcome(transfer_id).await?;
            if outcome.status.is_final() || Instant::now() >= deadline {
                // Let the read models include the transfer's last event (and so every
                // account event before it) before the caller reads balances.
                let last = self.transfers.history(&transfer_id.to_string()).await?;
                let position = last.last().map_or(0, |e| e.position);
                self.wrote(position);
                self.read_side.catch_up_to(position, WAIT_LIMIT).await?;
                return Ok(outcome);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Records a transfer request without driving it (the process picks it up on its next
    /// run, see [`Ledger::run_processes`]).
    pub async fn request_transfer(
        &self,
        meta: Metadata,
        transfer_id: Uuid,
        from_account: &str,
        to_account: &str,
        amount: &Money,
        reference: &str,
    ) -> Result<Receipt, AppError> {
        let id = transfer_id.to_string();
        let committed = self
            .transfers
            .execute(&id, meta, |t| {
                t.request(from_account, to_account, amount, reference)
            })
            .await
            .map_err(|e| execute_error(e, "transfer", &id))?;
        Ok(self.receipt(id, committed))
    }

    /// The current state of a transfer, from its aggregate.
    pub async fn transfer_outcome(&self, transfer_id: Uuid) -> Result<TransferOutcome, AppError> {
        let id = transfer_id.to_string();
        let transfer = self.transfers.load(&id).await?;
        if !transfer.exists() {
            return Err(AppError::NotFound(format!("transfer {id}")));
        }
        let correlation_id = self
            .transfers
            .history(&id)
            .await?
            .first()
            .and_then(|e| e.metadata.correlation_id);
        Ok(TransferOutcome {
            transfer_id,
            status: transfer.status(),
            reason: transfer.reason().map(str::to_owned),
            correlation_id,
        })
    }

    /// Runs the transfer process manager until it has reacted to every event; returns how
    /// many events it read. Runs are serialised (within the process by a mutex, and on
    /// PostgreSQL across processes by an advisory lock), so no two ever race a step.
    pub async fn run_processes(&self) -> Result<u64, AppError> {
        let mut runner = self.process.lock().await;
        let lock = match &self.process_lock {
            Some(store) => Some(crate::storage::lock_process_manager(store).await?),
            None => None,
        };
        let mut total = 0;
        loop {
            let progress = runner.catch_up().await?;
            if progress.done == 0 {
                break;
            }
            total += progress.done;
        }
        if let Some(lock) = lock {
            lock.rollback().await.map_err(es_core::Error::backend)?;
        }
        Ok(total)
    }

    /// Where the read models live.
    pub fn read_side(&self) -> &ReadSide<S> {
        &self.read_side
    }

    /// Every read model, caught up with the log, as one consistent value (from memory, or
    /// read from the PostgreSQL tables in one snapshot).
    pub async fn read_models(&self) -> Result<ReadModels, AppError> {
        Ok(self.read_side.snapshot(self.floor(), WAIT_LIMIT).await?)
    }

    /// One account's row once the read models include global `position` (a write's, so a
    /// caller reads its own writes even when the log shows a commit a moment late).
    pub async fn account_after(
        &self,
        account_id: &str,
        position: u64,
    ) -> Result<AccountRow, AppError> {
        self.read_side
            .account(account_id, position.max(self.floor()), WAIT_LIMIT)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("account {account_id}")))
    }

    /// One account's current balance and status.
    pub async fn account(&self, account_id: &str) -> Result<AccountRow, AppError> {
        self.account_after(account_id, 0).await
    }

    /// Every account's balance.
    pub async fn balances(&self) -> Result<Vec<AccountRow>, AppError> {
        Ok(self.read_side.accounts(self.floor(), WAIT_LIMIT).await?)
    }

    /// An account's statement: every movement with the running balance.
    pub async fn statement(&self, account_id: &str) -> Result<Vec<StatementLine>, AppError> {
        self.read_side
            .statement(account_id, self.floor(), WAIT_LIMIT)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("account {account_id}")))
    }

    /// Ledger-wide totals per currency.
    pub async fn totals(&self) -> Result<BTreeMap<Currency, CurrencyTotals>, AppError> {
        Ok(self.read_side.totals(self.floor(), WAIT_LIMIT).await?)
    }

    /// Every transfer, as the read side sees it.
    pub async fn transfers(&self) -> Result<Vec<TransferRow>, AppError> {
        Ok(self.read_side.transfers(self.floor(), WAIT_LIMIT).await?)
    }

    /// Checks the read models' invariants (money conserved, statements match balances).
    pub async fn check(&self) -> Result<(), AppError> {
        self.read_models()
            .await?
            .check()
            .map_err(|problems| AppError::Inconsistent(problems.join("; ")))
    }

    /// The full history of an account: who did what, when, as part of which flow.
    pub async fn audit(&self, account_id: &str) -> Result<Vec<AuditEntry>, AppError> {
        let history = self.accounts.history(account_id).await?;
        if history.is_empty() {
            return Err(AppError::NotFound(format!("account {account_id}")));
        }
        let mut currency = None;
        history
            .iter()
            .map(|event| {
                let decoded: AccountEvent = event.decode()?;
                if let AccountEvent::AccountOpened(opened) = &decoded {
                    currency = Some(opened.currency.clone());
                }
                let description = decoded.describe(currency.as_ref());
                Ok(audit_entry(event, description, account_payload(&decoded)))
            })
            .collect()
    }

    /// Every event of one flow (a request and everything it caused), across streams, in
    /// global order. Scans the log.
    pub async fn trace(&self, correlation_id: Uuid) -> Result<Vec<AuditEntry>, AppError> {
        // Scan at least as far as the read models have seen (a store may show the log's
        // tail a moment late; see `account_after`).
        let seen = self.read_side.catch_up_to(self.floor(), WAIT_LIMIT).await?;
        let currencies: BTreeMap<String, Currency> = self
            .balances()
            .await?
            .into_iter()
            .map(|row| (row.id, row.currency))
            .collect();
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut events = self.store.stream_all(0, 1_000);
        let mut entries = Vec::new();
        let mut scanned = 0;
        loop {
            let Some(event) = events.next().await else {
                if scanned >= seen || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                events = self.store.stream_all(scanned, 1_000);
                continue;
            };
            let event = event?;
            scanned = event.position;
            if event.metadata.correlation_id != Some(correlation_id) {
                continue;
            }
            let currency = currencies.get(&event.stream.aggregate_id);
            let (description, data) = describe_any(&event, currency)?;
            entries.push(audit_entry(&event, description, data));
        }
        Ok(entries)
    }

    /// An account's balance as of a stream version or a moment.
    pub async fn balance_as_of(
        &self,
        account_id: &str,
        as_of: AsOf,
    ) -> Result<BalanceAt, AppError> {
        validate_account_id(account_id)?;
        let loaded = self.accounts.load_as_of(account_id, as_of).await?;
        let currency = loaded.currency().cloned();
        Ok(BalanceAt {
            account_id: account_id.to_owned(),
            version: loaded.version,
            balance: loaded.balance(),
            balance_display: currency.as_ref().map_or_else(
                || loaded.balance().to_string(),
                |c| Money::format_minor(loaded.balance(), c),
            ),
            currency,
            status: loaded.status(),
        })
    }

    /// The current account aggregate (not the read model): its balance and currency.
    pub async fn load_account(&self, account_id: &str) -> Result<Account, AppError> {
        let loaded = self.accounts.load(account_id).await?;
        if !loaded.exists() {
            return Err(AppError::NotFound(format!("account {account_id}")));
        }
        Ok(loaded.state)
    }

    /// Empties the read models and replays the whole log into them from position 0,
    /// calling `on_progress` after every batch; then checks their invariants.
    pub async fn rebuild(
        &self,
        on_progress: impl FnMut(Progress) + Send,
    ) -> Result<Progress, AppError> {
        let progress = self.read_side.rebuild(WAIT_LIMIT, on_progress).await?;
        self.check().await?;
        Ok(progress)
    }

    /// Replays the whole log into a fresh, private, in-memory copy of the read models (no
    /// checkpoint is touched) and returns it, to compare with the live ones (in memory or in
    /// the PostgreSQL tables).
    pub async fn fresh_read_models(&self) -> Result<ReadModels, AppError> {
        // At least as far as the live read models (the log's reported head can lag, see
        // `crate::tables`): scan again from where it stopped until then.
        let target = self.read_side.catch_up_to(self.floor(), WAIT_LIMIT).await?;
        let mut view = LedgerView::new("ledger-view-verify");
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut scanned = 0;
        loop {
            let mut events = self.store.stream_all(scanned, 1_000);
            while let Some(event) = events.next().await {
                let event = event?;
                scanned = event.position;
                es_core::Projection::handle(&mut view, &event)
                    .await
                    .map_err(|e| AppError::Inconsistent(e.to_string()))?;
            }
            if scanned >= target || Instant::now() >= deadline {
                return Ok(view.models().clone());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Notes that global `position` was written: later queries read at least that far.
    fn wrote(&self, position: u64) {
        self.written.fetch_max(position, Ordering::Relaxed);
    }

    /// The position every query reads at least as far as.
    fn floor(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    fn receipt(&self, id: String, committed: es_core::Committed) -> Receipt {
        let receipt = receipt(id, committed);
        self.wrote(receipt.position);
        receipt
    }

    async fn on_account<R>(
        &self,
        account_id: &str,
        meta: Metadata,
        decide: impl FnMut(&Account) -> Result<R, LedgerError> + Send,
    ) -> Result<Receipt, AppError>
    where
        R: IntoEvents<AccountEvent>,
    {
        validate_account_id(account_id)?;
        let committed = self
            .accounts
            .execute(account_id, meta, decide)
            .await
            .map_err(|e| execute_error(e, "account", account_id))?;
        Ok(self.receipt(account_id.to_owned(), committed))
    }
}

fn execute_error(error: ExecuteError<LedgerError>, kind: &str, id: &str) -> AppError {
    match error {
        ExecuteError::Rejected(LedgerError::AccountNotFound) if kind == "account" => {
            AppError::NotFound(format!("account {id}"))
        }
        ExecuteError::Rejected(LedgerError::TransferNotFound) => {
            AppError::NotFound(format!("transfer {id}"))
        }
        ExecuteError::Rejected(e) => AppError::Domain(e),
        ExecuteError::Store(e) => e.into(),
    }
}

fn receipt(id: String, committed: es_core::Committed) -> Receipt {
    Receipt {
        id,
        position: committed.events.last().map_or(0, |e| e.position),
        version: committed.version,
        correlation_id: committed
            .events
            .first()
            .and_then(|e| e.metadata.correlation_id),
        events: committed
            .events
            .iter()
            .map(|e| e.event_name.clone())
            .collect(),
    }
}

fn audit_entry(event: &RecordedEvent, description: String, data: serde_json::Value) -> AuditEntry {
    AuditEntry {
        stream: event.stream.to_string(),
        version: event.version,
        position: event.position,
        recorded_at: event.recorded_at,
        event: event.event_name.clone(),
        schema_version: event.schema_version,
        description,
        user_id: event.metadata.user_id.clone(),
        correlation_id: event.metadata.correlation_id,
        causation_id: event.metadata.causation_id,
        event_id: event.event_id,
        data,
    }
}

fn account_payload(event: &AccountEvent) -> serde_json::Value {
    use es_core::EventSet;
    event
        .encode()
        .ok()
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn describe_any(
    event: &RecordedEvent,
    currency: Option<&Currency>,
) -> Result<(String, serde_json::Value), AppError> {
    use es_core::{Aggregate, EventSet};
    let aggregate_type = event.stream.aggregate_type.as_str();
    if aggregate_type == Account::TYPE {
        let decoded: AccountEvent = event.decode()?;
        let data = account_payload(&decoded);
        Ok((decoded.describe(currency), data))
    } else if aggregate_type == Transfer::TYPE {
        let decoded: TransferEvent = event.decode()?;
        let data = decoded
            .encode()
            .ok()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(serde_json::Value::Null);
        Ok((decoded.describe(), data))
    } else {
        Ok((event.event_name.clone(), serde_json::Value::Null))
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
            TransferEvent::TransferCompensated(_) => "source refunded: compensated".to_owned(),
        }
    }
}

impl Ledger<PostgresStore> {
    /// Opens the ledger on PostgreSQL with its read models in tables of the store's schema
    /// (created if missing, then caught up with the log; see [`crate::tables`]), and finishes
    /// any transfer a previous run left half-way. Every process serving the schema shares the
    /// tables and their checkpoint.
    pub async fn open_with_tables(store: PostgresStore) -> Result<Self, AppError> {
        let tables = TableReadModels::open(store.clone()).await?;
        Self::assemble(store.clone(), ReadSide::Tables(tables), Some(store)).await
    }
}
