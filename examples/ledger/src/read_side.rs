//! [`ReadSide`]: where the read models live. The [`Ledger`](crate::Ledger)'s queries go
//! through it and do not care which one it is.
//!
//! - [`ReadSide::Memory`]: a [`LedgerView`] in this process's memory, fed by es-core's
//!   [`ProjectionRunner`] (any store; rebuilt from the log when the ledger opens);
//! - [`ReadSide::Tables`]: PostgreSQL tables fed by es-postgres's transactional runner
//!   ([`TableReadModels`]), shared by every process on the same schema and kept across runs.
//!
//! Every query first catches the read models up with the log (at least to a given position
//! for read-your-writes), then reads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use es_core::{Error, EventStore, Progress, ProjectionRunner};
use tokio::sync::Mutex;

use crate::domain::Currency;
use crate::read_model::{
    AccountRow, CurrencyTotals, LedgerView, ReadModels, StatementLine, TransferRow,
};
use crate::tables::TableReadModels;

/// The read models, in memory or in PostgreSQL tables.
pub enum ReadSide<S> {
    /// In this process's memory.
    Memory(Mutex<ProjectionRunner<S, LedgerView>>),
    /// In PostgreSQL tables, updated by a transactional projection.
    Tables(TableReadModels),
}

impl<S> std::fmt::Debug for ReadSide<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(_) => f.write_str("ReadSide::Memory"),
            Self::Tables(tables) => f.debug_tuple("ReadSide::Tables").field(tables).finish(),
        }
    }
}

impl<S: EventStore> ReadSide<S> {
    /// Read models in memory whose checkpoint is named `view_name`, rebuilt from the log.
    ///
    /// The checkpoint lives in `store`: on a store shared with other processes give each
    /// process its own name, since these read models live and die with the process.
    pub async fn memory(store: S, view_name: &str) -> Result<Self, Error> {
        let mut runner = ProjectionRunner::new(store, LedgerView::new(view_name));
        runner.rebuild(|_| {}).await?;
        Ok(Self::Memory(Mutex::new(runner)))
    }

    /// Catches up at least to global `position` and to the head of the log, waiting up to
    /// `limit` for the log to show them; returns the position the read models reached.
    pub async fn catch_up_to(&self, position: u64, limit: Duration) -> Result<u64, Error> {
        match self {
            Self::Memory(runner) => in_memory(runner, position, limit, |m| m.position).await,
            Self::Tables(tables) => tables.catch_up(position, limit).await,
        }
    }

    /// One account's row, once the read models include `position`.
    pub async fn account(
        &self,
        account_id: &str,
        position: u64,
        limit: Duration,
    ) -> Result<Option<AccountRow>, Error> {
        match self {
            Self::Memory(runner) => {
                in_memory(runner, position, limit, |m| {
                    m.accounts.get(account_id).cloned()
                })
                .await
            }
            Self::Tables(tables) => {
                tables.catch_up(position, limit).await?;
                tables.account(account_id).await
            }
        }
    }

    /// Every account's row, by id. Like every query, first catches up at least to global
    /// `position` (and to the head of the log).
    pub async fn accounts(&self, position: u64, limit: Duration) -> Result<Vec<AccountRow>, Error> {
        match self {
            Self::Memory(runner) => {
                in_memory(runner, position, limit, |m| {
                    m.accounts.values().cloned().collect()
                })
                .await
            }
            Self::Tables(tables) => {
                tables.catch_up(position, limit).await?;
                tables.accounts().await
            }
        }
    }

    /// An account's statement, `None` if there is no such account.
    pub async fn statement(
        &self,
        account_id: &str,
        position: u64,
        limit: Duration,
    ) -> Result<Option<Vec<StatementLine>>, Error> {
        match self {
            Self::Memory(runner) => {
                in_memory(runner, position, limit, |m| {
                    m.accounts
                        .contains_key(account_id)
                        .then(|| m.statements.get(account_id).cloned().unwrap_or_default())
                })
                .await
            }
            Self::Tables(tables) => {
                tables.catch_up(position, limit).await?;
                tables.statement(account_id).await
            }
        }
    }

    /// Totals per currency.
    pub async fn totals(
        &self,
        position: u64,
        limit: Duration,
    ) -> Result<BTreeMap<Currency, CurrencyTotals>, Error> {
        match self {
            Self::Memory(runner) => in_memory(runner, position, limit, |m| m.totals.clone()).await,
            Self::Tables(tables) => {
                tables.catch_up(position, limit).await?;
                tables.totals().await
            }
        }
    }

    /// Every transfer, by id.
    pub async fn transfers(
        &self,
        position: u64,
        limit: Duration,
    ) -> Result<Vec<TransferRow>, Error> {
        match self {
            Self::Memory(runner) => {
                in_memory(runner, position, limit, |m| {
                    m.transfers.values().cloned().collect()
                })
                .await
            }
            Self::Tables(tables) => {
                tables.catch_up(position, limit).await?;
                tables.transfers().await
            }
        }
    }

    /// All read models, caught up, as one consistent [`ReadModels`] value.
    pub async fn snapshot(&self, position: u64, limit: Duration) -> Result<ReadModels, Error> {
        match self {
            Self::Memory(runner) => in_memory(runner, position, limit, ReadModels::clone).await,
            Self::Tables(tables) => {
                tables.catch_up(position, limit).await?;
                tables.snapshot().await
            }
        }
    }

    /// Empties the read models and replays the whole log from position 0, calling
    /// `on_progress` after every batch (the tables fail if the log stalls for `limit`).
    pub async fn rebuild(
        &self,
        limit: Duration,
        on_progress: impl FnMut(Progress) + Send,
    ) -> Result<Progress, Error> {
        match self {
            Self::Memory(runner) => runner.lock().await.rebuild(on_progress).await,
            Self::Tables(tables) => tables.rebuild(limit, on_progress).await,
        }
    }
}

/// Catches the in-memory models up at least to global `position` (waiting up to `limit` for
/// the log to show it), then runs `read` on them.
async fn in_memory<S: EventStore, T>(
    runner: &Mutex<ProjectionRunner<S, LedgerView>>,
    position: u64,
    limit: Duration,
    read: impl FnOnce(&ReadModels) -> T,
) -> Result<T, Error> {
    let mut runner = runner.lock().await;
    let deadline = Instant::now() + limit;
    loop {
        runner.catch_up().await?;
        let models = runner.projection().models();
        if models.position >= position || Instant::now() >= deadline {
            return Ok(read(models));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
