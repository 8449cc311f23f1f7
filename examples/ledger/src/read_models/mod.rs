//! The read models: balances, statements with running balances, totals per currency and
//! transfers, fed by the global log through the [`effects`](crate::effects) of each event.
//!
//! Two implementations of [`ReadSide`] answer the same queries: [`memory::MemoryViews`] in
//! this process's memory (any store; rebuilt at every start) and
//! [`tables::TableViews`] in PostgreSQL tables (exactly once, shared by every process on a
//! schema). The per-currency totals are computed independently of the balances (money paid
//! in minus money paid out), so [`ReadModels::check`] proves conservation rather than
//! restating it: the sum of balances plus the money in flight must equal the net inflow.

pub mod memory;
pub mod tables;

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};
use std::time::Duration;

use std::sync::{Mutex, PoisonError};

use es_core::{ConsumerHandle, ConsumerState, Error, Progress, RecordedEvent, Status};
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};
use uuid::Uuid;

use crate::domain::Currency;
use crate::effects::Effect;
pub use crate::effects::{AccountRow, StatementLine, TransferRow};

/// Ledger-wide figures for one currency, in minor units. `i128`: sums over many accounts
/// can pass 64 bits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CurrencyTotals {
    /// Deposits minus withdrawals: the money that entered the ledger.
    pub net_inflow: i128,
    /// Sum of all balances.
    pub balances: i128,
    /// Debited from a source, not yet credited nor refunded.
    pub in_flight: i128,
}

impl CurrencyTotals {
    /// Whether money is conserved: balances plus in-flight equal the net inflow.
    pub fn balanced(&self) -> bool {
        self.balances + self.in_flight == self.net_inflow
    }
}

/// All read models of the ledger, as one value.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ReadModels {
    /// Current balances by account id.
    pub accounts: BTreeMap<String, AccountRow>,
    /// Statements by account id.
    pub statements: BTreeMap<String, Vec<StatementLine>>,
    /// Totals by currency.
    pub totals: BTreeMap<Currency, CurrencyTotals>,
    /// Transfers by id.
    pub transfers: BTreeMap<Uuid, TransferRow>,
    /// The index of flows: by correlation id, the event ids by global position.
    pub traces: BTreeMap<Uuid, BTreeMap<u64, Uuid>>,
}

impl ReadModels {
    /// Applies one event's effect, all or nothing: an effect that does not fit (an account
    /// never opened, a balance beyond 64 bits) changes nothing and is an error.
    pub fn apply(&mut self, effect: Effect) -> Result<(), String> {
        match effect {
            Effect::Open(row) => {
                self.totals.entry(row.currency.clone()).or_default();
                self.statements.entry(row.id.clone()).or_default();
                self.accounts.insert(row.id.clone(), row);
            }
            Effect::Account {
                id,
                version,
                status,
                movement,
            } => {
                let row = self
                    .accounts
                    .get_mut(&id)
                    .ok_or(format!("account {id} never opened"))?;
                if version <= row.version {
                    return Ok(()); // seen before
                }
                if let Some(m) = movement {
                    let balance = i64::try_from(i128::from(row.balance) + m.change)
                        .map_err(|_| format!("account {id}: balance beyond 64 bits"))?;
                    let line = m.line(version, &row.currency, balance);
                    let line = line.ok_or(format!("account {id}: amount beyond 64 bits"))?;
                    let totals = self.totals.entry(row.currency.clone()).or_default();
                    totals.net_inflow += m.net_inflow;
                    totals.in_flight += m.in_flight;
                    totals.balances += m.change;
                    row.set_balance(balance);
                    self.statements.entry(id).or_default().push(line);
                }
                row.status = status.unwrap_or(row.status);
                row.version = version;
            }
            Effect::Request(row) => {
                self.transfers.insert(row.id, row);
            }
            Effect::Transfer { id, status, reason } => {
                let row = self
                    .transfers
                    .get_mut(&id)
                    .ok_or(format!("transfer {id} unknown"))?;
                row.status = status;
                row.reason = reason.or(row.reason.take());
            }
        }
        Ok(())
    }

    /// Indexes `record` under its correlation id, if it has one.
    pub fn index(&mut self, record: &RecordedEvent) {
        if let Some(correlation) = record.metadata.correlation_id {
            let flow = self.traces.entry(correlation).or_default();
            flow.insert(record.position, record.event_id);
        }
    }

    /// Checks the invariants: per currency, balances plus in-flight equal the net inflow and
    /// the balances equal the sum of the rows; each statement line's balance is the sum of
    /// the amounts up to it, and the last one and the sum of all amounts equal the account's
    /// balance. Returns every violation found.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut sums: BTreeMap<&Currency, i128> = BTreeMap::new();
        for row in self.accounts.values() {
            *sums.entry(&row.currency).or_default() += i128::from(row.balance);
            let lines = self
                .statements
                .get(&row.id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let last = lines.last().map_or(0, |l| l.balance);
            let total: i128 = lines.iter().map(|l| i128::from(l.amount)).sum();
            let mut running = 0i128;
            if let Some(line) = lines.iter().find(|l| {
                running += i128::from(l.amount);
                running != i128::from(l.balance)
            }) {
                problems.push(format!(
                    "{}: the line of version {} leaves {} but its amounts sum to {running}",
                    row.id, line.version, line.balance
                ));
            }
            if last != row.balance || total != i128::from(row.balance) {
                problems.push(format!(
                    "{}: balance {} but statement ends at {last} and sums to {total}",
                    row.id, row.balance
                ));
            }
        }
        for (currency, t) in &self.totals {
            let sum = sums.get(currency).copied().unwrap_or(0);
            if sum != t.balances {
                problems.push(format!(
                    "{currency}: balances {} but rows sum to {sum}",
                    t.balances
                ));
            }
            if !t.balanced() {
                problems.push(format!(
                    "{currency}: balances {} + in flight {} != net inflow {}",
                    t.balances, t.in_flight, t.net_inflow
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// A page of a list: the items after the cursor `after` (`None`: from the start), at most
/// `limit` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page<C> {
    /// The cursor: the key of the last item of the previous page.
    pub after: Option<C>,
    /// How many items at most.
    pub limit: usize,
}

impl<C> Page<C> {
    /// Every item.
    pub fn all() -> Self {
        Self {
            after: None,
            limit: usize::MAX,
        }
    }

    /// The same page with one more item, which tells whether a next page exists.
    pub fn plus_one(self) -> Self {
        let limit = self.limit.saturating_add(1);
        Self { limit, ..self }
    }
}

/// Which read models a query needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One account's row.
    Account(&'a str),
    /// Every account's row.
    Accounts,
    /// One account's row and a page of its statement, by version.
    Statement(&'a str, Page<u64>),
    /// The totals per currency.
    Totals,
    /// A page of the transfers, by id.
    Transfers(Page<Uuid>),
    /// A page of one flow's index, by position.
    Trace(Uuid, Page<u64>),
    /// Everything.
    All,
}

impl ReadModels {
    /// The part of the read models `scope` asks for.
    pub fn select(&self, scope: Scope<'_>) -> ReadModels {
        let mut part = ReadModels::default();
        match scope {
            Scope::Account(id) | Scope::Statement(id, _) => {
                let row = self.accounts.get(id).cloned();
                part.accounts.extend(row.map(|row| (row.id.clone(), row)));
                if let (Scope::Statement(_, page), Some(lines)) = (scope, self.statements.get(id)) {
                    let after = page.after.unwrap_or(0);
                    let lines = lines.iter().filter(|l| l.version > after).take(page.limit);
                    part.statements
                        .insert(id.to_owned(), lines.cloned().collect());
                }
            }
            Scope::Accounts => part.accounts.clone_from(&self.accounts),
            Scope::Totals => part.totals.clone_from(&self.totals),
            Scope::Transfers(page) => {
                let after = page.after.map_or(Unbounded, Excluded);
                let rows = self.transfers.range((after, Unbounded)).take(page.limit);
                part.transfers = rows.map(|(id, row)| (*id, row.clone())).collect();
            }
            Scope::Trace(id, page) => {
                let after = page.after.map_or(Unbounded, Excluded);
                let flow = self
                    .traces
                    .get(&id)
                    .into_iter()
                    .flat_map(|f| f.range((after, Unbounded)));
                let flow = flow.take(page.limit).map(|(p, e)| (*p, *e)).collect();
                part.traces.insert(id, flow);
            }
            Scope::All => return self.clone(),
        }
        part
    }
}

/// A progress callback of a rebuild.
pub type OnProgress<'a> = &'a mut (dyn FnMut(Progress) + Send);

/// Where the read models live, seen by the [`Ledger`](crate::Ledger): queries, waits for
/// read-your-writes, status and rebuild. Boxed futures keep it object-safe, so the ledger
/// holds any read side without knowing its database.
pub trait ReadSide: Send + Sync {
    /// Waits until the read models include global `position`, or fails after `timeout`.
    fn wait_for(&self, position: u64, timeout: Duration) -> BoxFuture<'_, Result<(), Error>>;

    /// The read models `scope` asks for (the rest left empty), as one consistent value.
    fn read<'a>(&'a self, scope: Scope<'a>) -> BoxFuture<'a, Result<ReadModels, Error>>;

    /// Empties the read models and replays the whole log into them.
    fn rebuild<'a>(&'a self, on_progress: OnProgress<'a>)
    -> BoxFuture<'a, Result<Progress, Error>>;

    /// The status of the consumer that feeds them (parked events included).
    fn status(&self) -> Status;

    /// Stops the consumer that feeds them, after its current batch.
    fn shutdown(&self) -> BoxFuture<'_, Result<(), Error>>;
}

/// A spawned consumer seen from outside: its status, waits on it, and its shutdown.
pub struct Running {
    status: watch::Receiver<Status>,
    handle: Mutex<Option<ConsumerHandle>>,
}

impl Running {
    /// Watches `handle`'s consumer.
    pub fn new(handle: ConsumerHandle) -> Self {
        Self {
            status: handle.watch(),
            handle: Mutex::new(Some(handle)),
        }
    }

    /// The consumer's status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Waits until the consumer has handled `position` (`Ok(true)`), or another runner holds
    /// its lease (`Ok(false)`); fails if it stopped, or at `deadline`.
    pub async fn reached(&self, position: u64, deadline: Instant) -> Result<bool, Error> {
        let mut status = self.status.clone();
        let ended = |s: &Status| {
            matches!(
                s.state,
                ConsumerState::WaitingForLease | ConsumerState::Stopped | ConsumerState::ShutDown
            )
        };
        let done = |s: &Status| s.checkpoint >= position || ended(s);
        match timeout_at(deadline, status.wait_for(done)).await {
            Ok(Ok(s)) if s.checkpoint >= position => Ok(true),
            Ok(Ok(s)) if s.state == ConsumerState::WaitingForLease => Ok(false),
            Ok(Ok(s)) => {
                let error = s.last_error.as_deref().unwrap_or_default();
                Err(Error::Invalid(format!(
                    "{} ended at {}: {error}",
                    s.name, s.checkpoint
                )))
            }
            Ok(Err(_)) => Err(Error::Invalid("the consumer is gone".into())),
            Err(_) => {
                let name = self.status().name;
                Err(Error::Timeout(format!(
                    "{name} did not reach position {position} in time"
                )))
            }
        }
    }

    /// Stops the consumer after its current batch and waits for it.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let handle = self
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match handle {
            Some(handle) => handle.shutdown().await,
            None => Ok(()),
        }
    }
}
