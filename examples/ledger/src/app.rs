//! [`Ledger`]: the application service the CLI, the HTTP API, the demo and the tests share.
//!
//! Generic over the store and blind to its database: commands go through es-core
//! [`Repository`]s, idempotent by [`CommandKey`]; transfers are driven by the process manager's
//! consumers; queries read a [`ReadSide`] once it includes the caller's writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use es_core::{
    AsOf, CommandKey, Committed, Error, EventSet, ExecuteError, Leases, LocalLeases, LogEvent,
    Metadata, ParkedEvent, Partition, Progress, RecordedEvent, Repository, Status, StreamId,
    StreamQuery,
};
use serde::Serialize;
use tokio::time::{Instant, timeout_at};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{
    Account, AccountEvent, AccountStatus, Currency, LedgerError, Money, Transfer, TransferStatus,
    check_text, check_time, validate_account_id,
};
use crate::effects::{LedgerEvent, TransferRow};
pub use crate::process::Store;
use crate::process::{self, Partitions, Stepped, TransferProcess, Watching};
pub use crate::read_models::Page;
use crate::read_models::memory::{self, MemoryViews, ViewHandler};
use crate::read_models::{
    AccountRow, CurrencyTotals, ReadModels, ReadSide, Running, Scope, StatementLine,
};

/// How often [`Ledger::wait_for_transfer`] checks a transfer whose steps it is not told of.
pub const TRANSFER_POLL: Duration = Duration::from_millis(20);
/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A domain rule refused the command, or the input is invalid.
    #[error(transparent)]
    Domain(#[from] LedgerError),
    /// The account or transfer does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The store failed or refused (a conflict through every retry, a limit every store
    /// applies), or a wait timed out.
    #[error(transparent)]
    Store(#[from] Error),
    /// The idempotency key was used before for another request.
    #[error("this idempotency key was used for a different request")]
    KeyReused,
    /// The read models broke an invariant (a bug, never a user error).
    #[error("read model inconsistent: {0}")]
    Inconsistent(String),
}

/// A command's context: who asks (metadata) and the key that makes it safe to retry. A
/// retry with the same key returns the first outcome instead of acting again.
#[derive(Debug, Clone)]
pub struct Cmd {
    /// User, correlation and causation recorded on every event.
    pub meta: Metadata,
    /// The command's idempotency key.
    pub key: CommandKey,
    /// Whether the caller gave the key (then a retry must be the same request).
    pub keyed: bool,
}

impl Cmd {
    /// A command under a fresh key.
    pub fn new(meta: Metadata) -> Self {
        Self {
            meta,
            key: CommandKey::new(),
            keyed: false,
        }
    }

    /// The same command under the caller's `key` (e.g. an `Idempotency-Key` header).
    pub fn with_key(self, key: CommandKey) -> Self {
        Self {
            key,
            keyed: true,
            ..self
        }
    }

    /// Runs `execute` under this key; with a caller's key, records what was asked (a hash of
    /// the user and `request`) on the events, and refuses a retry that asks something else.
    async fn once<F>(self, request: impl std::fmt::Debug, execute: F) -> Result<Committed, AppError>
    where
        F: AsyncFnOnce(CommandKey, Metadata) -> Result<Committed, ExecuteError<LedgerError>>,
    {
        let mut meta = self.meta;
        if let Some(user) = &meta.user_id {
            check_text("user id", user, 200)?;
        }
        let asked = self.keyed.then(|| {
            let text = format!("{:?} {request:?}", meta.user_id);
            Uuid::new_v5(&Uuid::NAMESPACE_OID, text.as_bytes()).to_string()
        });
        if let Some(asked) = &asked {
            meta = meta.with_extra("request", asked.as_str());
        }
        let committed = execute(self.key, meta).await.map_err(rejected)?;
        let stored = committed
            .events
            .first()
            .and_then(|e| e.metadata.extra.get("request"));
        match (asked, stored) {
            (Some(asked), Some(stored)) if stored != asked.as_str() => Err(AppError::KeyReused),
            _ => Ok(committed),
        }
    }
}

impl From<Metadata> for Cmd {
    fn from(meta: Metadata) -> Self {
        Self::new(meta)
    }
}

/// A command on one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    /// Open it.
    Open {
        /// Owner's name.
        owner: String,
        /// Its one currency.
        currency: Currency,
        /// How far the balance may go below zero, in minor units.
        overdraft_limit: i64,
    },
    /// Pay money in.
    Deposit(Money, String),
    /// Pay money out.
    Withdraw(Money, String),
    /// Freeze it, with a reason.
    Freeze(String),
    /// Unfreeze it, with a reason.
    Unfreeze(String),
    /// Close it (at a zero balance), with a reason.
    Close(String),
}

impl AccountCommand {
    fn decide(&self, a: &Account) -> Result<Option<AccountEvent>, LedgerError> {
        Ok(Some(match self {
            AccountCommand::Open {
                owner,
                currency,
                overdraft_limit,
            } => a.open(owner, currency.clone(), *overdraft_limit)?.into(),
            AccountCommand::Deposit(amount, reference) => a.deposit(amount, reference)?.into(),
            AccountCommand::Withdraw(amount, reference) => a.withdraw(amount, reference)?.into(),
            AccountCommand::Freeze(reason) => a.freeze(reason)?.into(),
            AccountCommand::Unfreeze(reason) => a.unfreeze(reason)?.into(),
            AccountCommand::Close(reason) => a.close(reason)?.into(),
        }))
    }
}

/// What a successful command wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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

/// The outcome of a transfer request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TransferOutcome {
    /// The transfer id.
    pub transfer_id: Uuid,
    /// Where it is (final unless the process manager is behind).
    pub status: TransferStatus,
    /// Why it was rejected or compensated.
    pub reason: Option<String>,
    /// The request's correlation id: every event of the transfer carries it.
    pub correlation_id: Option<Uuid>,
}

/// One entry of an audit trail: who did what, when, why.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
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
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// An account's balance at a point in its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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

/// One page of a list, and the cursor that asks for the next (`None` on the last page).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Paged<T> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// Pass it as `after` for the next page.
    pub next: Option<String>,
}

impl<T> Paged<T> {
    /// The first `limit` of `items` (fetched with one more, to tell whether a next page
    /// exists); the cursor is `cursor` of the last item kept.
    fn of<C: ToString>(mut items: Vec<T>, limit: usize, cursor: impl Fn(&T) -> C) -> Self {
        let more = items.len() > limit;
        items.truncate(limit);
        let next = more
            .then(|| items.last().map(|i| cursor(i).to_string()))
            .flatten();
        Self { items, next }
    }
}

/// How a ledger runs; [`Options::default`] suits one process on any store.
pub struct Options {
    /// Single-active leases of the process manager's partitions (the store's own, so that
    /// several processes share the work; [`LocalLeases`] by default).
    pub leases: Arc<dyn Leases>,
    /// Where the read models live; `None`: in memory, rebuilt at start.
    pub read_side: Option<Box<dyn ReadSide>>,
    /// How the process manager runs.
    pub partitions: Partitions,
    /// How long a caller waits for the read models or a transfer (default 10 s).
    pub wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        let leases = Arc::new(LocalLeases::new());
        Self {
            leases,
            read_side: None,
            partitions: Partitions::default(),
            wait: secs(10),
        }
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The ledger application over any [`Store`]. Clones share everything.
pub struct Ledger<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Ledger<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S> {
    store: S,
    accounts: Repository<Account, S>,
    transfers: Repository<Transfer, S>,
    read_side: Box<dyn ReadSide>,
    process: Vec<Running>,
    /// The steps the process manager takes here, for [`Ledger::wait_for_transfer`].
    stepped: Arc<Stepped>,
    /// How many partitions the process manager has (wherever it runs).
    partitions: u32,
    /// The highest position this ledger wrote or waited for: queries wait for it.
    written: AtomicU64,
    wait: Duration,
}

impl<S: Store> Ledger<S> {
    /// Opens the ledger on `store`: the read models (in memory: replayed from the log) and the
    /// process manager, which also finishes any transfer a previous run left half-way.
    pub async fn open(store: S, options: Options) -> Result<Self, AppError> {
        let accounts = Repository::<Account, S>::new(store.clone()).with_state_cache(10_000);
        let transfers = Repository::<Transfer, S>::new(store.clone()).with_state_cache(10_000);
        let read_side = match options.read_side {
            Some(read_side) => read_side,
            None => Box::new(MemoryViews::open(store.clone()).await?),
        };
        let process = TransferProcess::new(accounts.clone(), transfers.clone());
        let handles = process::spawn(&store, &process, &options.leases, options.partitions);
        let inner = Inner {
            process: handles.into_iter().map(Running::new).collect(),
            stepped: process.stepped().clone(),
            partitions: match options.partitions.count {
                0 => Partitions::default().count,
                count => count,
            },
            written: AtomicU64::new(store.head_position().await?),
            store,
            accounts,
            transfers,
            read_side,
            wait: options.wait,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Where the read models live.
    pub fn read_side(&self) -> &dyn ReadSide {
        &*self.inner.read_side
    }

    /// Runs a command on account `id`.
    pub async fn on_account(
        &self,
        cmd: impl Into<Cmd>,
        id: &str,
        command: AccountCommand,
    ) -> Result<Receipt, AppError> {
        validate_account_id(id)?;
        let accounts = &self.inner.accounts;
        let execute = async |key, meta| {
            accounts
                .execute_once(id, key, meta, |a| command.decide(a))
                .await
        };
        let committed = cmd.into().once((id, &command), execute).await;
        Ok(self.receipt(
            id.to_owned(),
            committed.map_err(|e| e.not_found(format!("account {id}")))?,
        ))
    }

    /// Requests a transfer and waits for its outcome: completed, rejected or compensated (or
    /// where it is when the wait runs out). The transfer id derives from the command key, so
    /// a retry with the same key finds the same transfer.
    pub async fn transfer(
        &self,
        cmd: impl Into<Cmd>,
        from: &str,
        to: &str,
        amount: &Money,
        reference: &str,
    ) -> Result<TransferOutcome, AppError> {
        let cmd = cmd.into();
        // Watched before it is requested, so that no step can pass unseen and the first
        // look at the transfer can wait for one.
        let watching = self.inner.stepped.watch(transfer_id(&cmd));
        self.request_transfer(cmd, from, to, amount, reference)
            .await?;
        self.wait(&watching, false).await
    }

    /// Records a transfer request; the process manager takes it from there.
    pub async fn request_transfer(
        &self,
        cmd: impl Into<Cmd>,
        from: &str,
        to: &str,
        amount: &Money,
        reference: &str,
    ) -> Result<Receipt, AppError> {
        let cmd = cmd.into();
        let id = transfer_id(&cmd).to_string();
        let transfers = &self.inner.transfers;
        let request = |t: &Transfer| t.request(from, to, amount, reference);
        // A new transfer as a rule: decided without reading its (empty) stream first.
        let execute = async |key, meta| transfers.create_once(&id, key, meta, request).await;
        let committed = cmd.once((from, to, amount, reference), execute).await?;
        Ok(self.receipt(id.clone(), committed))
    }

    /// Waits until the transfer is final, then until the read models include its latest
    /// event (not everything this ledger wrote meanwhile). It checks after each step this
    /// process's manager takes for the transfer, and every [`TRANSFER_POLL`] (another process
    /// may hold the transfer's partition).
    pub async fn wait_for_transfer(&self, transfer_id: Uuid) -> Result<TransferOutcome, AppError> {
        self.wait(&self.inner.stepped.watch(transfer_id), true)
            .await
    }

    /// [`Ledger::wait_for_transfer`] on a watch already set; `look_first`: look at the
    /// transfer before waiting for a step (or [`TRANSFER_POLL`]).
    async fn wait(
        &self,
        watching: &Watching<'_>,
        look_first: bool,
    ) -> Result<TransferOutcome, AppError> {
        let deadline = Instant::now() + self.inner.wait;
        let mut look = look_first;
        loop {
            if !look {
                let poll = deadline.min(Instant::now() + TRANSFER_POLL);
                let _ = timeout_at(poll, watching.step_taken()).await;
            }
            look = false;
            let (outcome, position, done) = self.transfer_state(watching.transfer_id()).await?;
            if done || Instant::now() >= deadline {
                self.wrote(position);
                self.inner
                    .read_side
                    .wait_for(position, self.inner.wait)
                    .await?;
                return Ok(outcome);
            }
        }
    }

    /// A transfer's outcome, the position of its latest event, and whether the process is
    /// done with it.
    async fn transfer_state(&self, id: Uuid) -> Result<(TransferOutcome, u64, bool), AppError> {
        let history = self.inner.transfers.history(&id.to_string()).await?;
        let (Some(first), Some(last)) = (history.first(), history.last()) else {
            return Err(AppError::NotFound(format!("transfer {id}")));
        };
        let mut transfer = Transfer::default();
        for event in &history {
            es_core::Aggregate::apply_event(&mut transfer, &event.decode()?);
        }
        let status = transfer.status();
        let outcome = TransferOutcome {
            transfer_id: id,
            status,
            reason: transfer.reason().map(str::to_owned),
            correlation_id: first.metadata.correlation_id,
        };
        Ok((outcome, last.position, status.is_final()))
    }

    /// The current state of a transfer, from its aggregate.
    pub async fn transfer_outcome(&self, transfer_id: Uuid) -> Result<TransferOutcome, AppError> {
        Ok(self.transfer_state(transfer_id).await?.0)
    }

    /// Waits until the partitions of the process manager that run here (not those another
    /// process holds) have reacted to every event up to the head of the log, and to the
    /// events they wrote meanwhile; then until the read models include them all.
    pub async fn wait_idle(&self) -> Result<(), AppError> {
        let deadline = Instant::now() + self.inner.wait;
        loop {
            let head = self.inner.store.head_position().await?;
            for partition in &self.inner.process {
                partition.reached(head, deadline).await?;
            }
            if self.inner.store.head_position().await? == head {
                self.wrote(head);
                return self.floor().await;
            }
        }
    }

    /// Every consumer's status: the read models' and each process-manager partition's.
    pub fn status(&self) -> Vec<Status> {
        let process = self.inner.process.iter().map(Running::status);
        std::iter::once(self.inner.read_side.status())
            .chain(process)
            .collect()
    }

    /// The events the process manager parked, in every process (read from the store).
    pub async fn parked(&self) -> Result<Vec<ParkedEvent>, AppError> {
        let mut parked = Vec::new();
        for partition in Partition::all(self.inner.partitions) {
            let name = format!(
                "{}[{}/{}]",
                process::PROCESS,
                partition.index(),
                partition.count()
            );
            parked.extend(self.inner.store.parked(&name).await?);
        }
        Ok(parked)
    }

    /// Stops the consumers (process manager and read models) after their current batches,
    /// saving their checkpoints.
    pub async fn shutdown(&self) -> Result<(), AppError> {
        let stopped = futures::future::join_all(self.inner.process.iter().map(Running::shutdown));
        stopped.await.into_iter().collect::<Result<(), _>>()?;
        Ok(self.inner.read_side.shutdown().await?)
    }

    /// The read models `scope` asks for, once they include every position this ledger wrote.
    async fn read(&self, scope: Scope<'_>) -> Result<ReadModels, AppError> {
        self.floor().await?;
        Ok(self.inner.read_side.read(scope).await?)
    }

    /// One account's row once the read models include global `position`.
    pub async fn account_after(&self, id: &str, position: u64) -> Result<AccountRow, AppError> {
        validate_account_id(id)?;
        self.wrote(position);
        let row = self
            .read(Scope::Account(id))
            .await?
            .accounts
            .into_values()
            .next();
        row.ok_or_else(|| AppError::NotFound(format!("account {id}")))
    }

    /// One account's current balance and status.
    pub async fn account(&self, id: &str) -> Result<AccountRow, AppError> {
        self.account_after(id, 0).await
    }

    /// Every account's balance.
    pub async fn balances(&self) -> Result<Vec<AccountRow>, AppError> {
        Ok(self
            .read(Scope::Accounts)
            .await?
            .accounts
            .into_values()
            .collect())
    }

    /// An account's statement: its movements with the running balance, by version.
    pub async fn statement(
        &self,
        id: &str,
        page: Page<u64>,
    ) -> Result<Paged<StatementLine>, AppError> {
        validate_account_id(id)?;
        let lines = self.read(Scope::Statement(id, page.plus_one())).await?;
        let lines = lines.statements.into_values().next();
        let lines = lines.ok_or_else(|| AppError::NotFound(format!("account {id}")))?;
        Ok(Paged::of(lines, page.limit, |l| l.version))
    }

    /// Ledger-wide totals per currency.
    pub async fn totals(&self) -> Result<BTreeMap<Currency, CurrencyTotals>, AppError> {
        Ok(self.read(Scope::Totals).await?.totals)
    }

    /// The transfers, as the read side sees them, by id.
    pub async fn transfers(&self, page: Page<Uuid>) -> Result<Paged<TransferRow>, AppError> {
        let rows = self
            .read(Scope::Transfers(page.plus_one()))
            .await?
            .transfers;
        Ok(Paged::of(rows.into_values().collect(), page.limit, |t| {
            t.id
        }))
    }

    /// Every read model as one consistent value.
    pub async fn read_models(&self) -> Result<ReadModels, AppError> {
        self.read(Scope::All).await
    }

    /// Checks the read models' invariants (money conserved, statements match balances).
    pub async fn check(&self) -> Result<(), AppError> {
        let models = self.read_models().await?;
        models
            .check()
            .map_err(|problems| AppError::Inconsistent(problems.join("; ")))
    }

    /// An account's history, by version: who did what, when, as part of which flow.
    pub async fn audit(&self, id: &str, page: Page<u64>) -> Result<Paged<AuditEntry>, AppError> {
        validate_account_id(id)?;
        let after = page.after.unwrap_or(0);
        let mut query = StreamQuery::after(after);
        query.to_version = Some(after.saturating_add(page.plus_one().limit as u64));
        let stream = StreamId::new("Account", id);
        let history = self.inner.store.read_stream(&stream, &query).await?;
        let mut currency = match after {
            0 => None,
            _ => self.load_account(id).await?.currency().cloned(),
        };
        if history.is_empty() && currency.is_none() {
            self.load_account(id).await?; // not found, unless past the end
        }
        let entries = history.iter().map(|e| audit_entry(e, &mut currency));
        Ok(Paged::of(
            entries.collect::<Result<_, _>>()?,
            page.limit,
            |e| e.version,
        ))
    }

    /// Every event of one flow (a request and everything it caused), across streams, in
    /// global order: from the read models' index by correlation id, as far as they have seen.
    pub async fn trace(
        &self,
        correlation_id: Uuid,
        page: Page<u64>,
    ) -> Result<Paged<AuditEntry>, AppError> {
        let index = self
            .read(Scope::Trace(correlation_id, page.plus_one()))
            .await?;
        let refs: Vec<(u64, Uuid)> = index.traces.into_values().flatten().collect();
        let refs = Paged::of(refs, page.limit, |(position, _)| *position);
        let mut currencies = BTreeMap::new();
        let mut items = Vec::with_capacity(refs.items.len());
        for (position, event_id) in refs.items {
            let event = self.inner.store.read_event(event_id).await?;
            let lost = || AppError::Inconsistent(format!("trace: no event at {position}"));
            let event = event.ok_or_else(lost)?;
            let account = &event.stream.aggregate_id;
            let mut currency = match event.stream.aggregate_type.as_str() {
                "Account" if !currencies.contains_key(account) => {
                    let found = self.load_account(account).await?.currency().cloned();
                    currencies.entry(account.clone()).or_insert(found).clone()
                }
                _ => currencies.get(account).cloned().flatten(),
            };
            items.push(audit_entry(&event, &mut currency)?);
        }
        Ok(Paged {
            items,
            next: refs.next,
        })
    }

    /// An account's balance as of a stream version or a moment.
    pub async fn balance_as_of(&self, id: &str, as_of: AsOf) -> Result<BalanceAt, AppError> {
        validate_account_id(id)?;
        if let AsOf::Time(time) = as_of {
            check_time(time)?;
        }
        let loaded = self.inner.accounts.load_as_of(id, as_of).await?;
        if loaded.version == 0 {
            self.load_account(id).await?; // no such account at all: not found
        }
        let currency = loaded.currency().cloned();
        let balance = loaded.balance();
        Ok(BalanceAt {
            account_id: id.to_owned(),
            version: loaded.version,
            balance,
            balance_display: currency
                .as_ref()
                .map_or_else(|| balance.to_string(), |c| Money::format_minor(balance, c)),
            currency,
            status: loaded.status(),
        })
    }

    /// The current account aggregate (not the read model).
    pub async fn load_account(&self, id: &str) -> Result<Account, AppError> {
        validate_account_id(id)?;
        let loaded = self.inner.accounts.load(id).await?;
        if !loaded.exists() {
            return Err(AppError::NotFound(format!("account {id}")));
        }
        Ok(loaded.state)
    }

    /// Empties the read models and replays the whole log into them, calling `on_progress`
    /// after every batch; then checks their invariants.
    pub async fn rebuild(
        &self,
        mut on_progress: impl FnMut(Progress) + Send,
    ) -> Result<Progress, AppError> {
        let progress = self.inner.read_side.rebuild(&mut on_progress).await?;
        self.check().await?;
        Ok(progress)
    }

    /// Replays the whole log into a fresh, private, in-memory copy of the read models, to
    /// compare with the live ones.
    pub async fn fresh_read_models(&self) -> Result<ReadModels, AppError> {
        self.floor().await?;
        let mut view = memory::consumer(self.inner.store.clone(), ViewHandler::default());
        view.catch_up().await?;
        Ok(view.handler().models())
    }

    /// Notes that global `position` was written: later queries wait for it.
    fn wrote(&self, position: u64) {
        self.inner.written.fetch_max(position, Ordering::Relaxed);
    }

    /// Waits until the read models include every position this ledger wrote.
    async fn floor(&self) -> Result<(), AppError> {
        let position = self.inner.written.load(Ordering::Relaxed);
        Ok(self
            .inner
            .read_side
            .wait_for(position, self.inner.wait)
            .await?)
    }

    fn receipt(&self, id: String, committed: es_core::Committed) -> Receipt {
        let events = &committed.events;
        let position = events.last().map_or(0, |e| e.position);
        self.wrote(position);
        Receipt {
            id,
            version: committed.version,
            events: events.iter().map(|e| e.event_name.clone()).collect(),
            correlation_id: events.first().and_then(|e| e.metadata.correlation_id),
            position,
        }
    }
}

/// The id of the transfer a request with this command's key creates (a retry finds the same).
fn transfer_id(cmd: &Cmd) -> Uuid {
    cmd.key.event_id(&StreamId::new("Transfer", "request"), 0)
}

fn rejected(error: ExecuteError<LedgerError>) -> AppError {
    match error {
        ExecuteError::Rejected(e) => AppError::Domain(e),
        ExecuteError::Store(e) => e.into(),
    }
}

impl AppError {
    /// `NotFound(what)` for a domain error that says the account does not exist.
    fn not_found(self, what: String) -> Self {
        match self {
            AppError::Domain(LedgerError::AccountNotFound) => AppError::NotFound(what),
            other => other,
        }
    }
}

/// An audit entry for `event`; `currency` is the account's, learnt from its opening.
fn audit_entry(
    event: &RecordedEvent,
    currency: &mut Option<Currency>,
) -> Result<AuditEntry, AppError> {
    let (description, data) = match LedgerEvent::from_record(event).transpose()? {
        Some(LedgerEvent::Account(e)) => {
            if let AccountEvent::AccountOpened(opened) = &e {
                *currency = Some(opened.currency.clone());
            }
            (e.describe(currency.as_ref()), e.encode())
        }
        Some(LedgerEvent::Transfer(e)) => (e.describe(), e.encode()),
        None => (event.event_name.clone(), Ok(event.payload.clone())),
    };
    // The payload upcast to the current schema.
    let data = data
        .ok()
        .and_then(|raw| serde_json::from_str(raw.get()).ok());
    Ok(AuditEntry {
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
        data: data.unwrap_or_default(),
    })
}
