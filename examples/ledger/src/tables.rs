//! The read models in PostgreSQL tables, kept by an es-postgres
//! [`TransactionalProjection`]: every batch of events and the checkpoint commit in one
//! transaction, so each event's effect lands exactly once, across crashes and with several
//! processes (the runners take turns on the checkpoint row's lock).
//!
//! The tables live in the event store's schema and are created at start-up if missing:
//!
//! | table | one row per | key |
//! |---|---|---|
//! | `ledger_balances` | account: owner, currency, balance, overdraft limit, status, version | `account_id` |
//! | `ledger_statement` | movement: position, time, description, amount, running balance, transfer, who, correlation | `(account_id, version)` |
//! | `ledger_totals` | currency: net inflow, sum of balances, money in flight | `currency` |
//! | `ledger_transfers` | transfer: accounts, amount, status, reason, who, correlation | `transfer_id` |
//!
//! The checkpoint is the store's `checkpoints` row named [`TABLES_PROJECTION`]: a stable name,
//! shared by every process that serves the same schema.
//!
//! The statement's key makes a duplicated movement an error rather than a silent double
//! count. Amounts are `bigint`, so an overflow fails the batch like the in-memory checked
//! arithmetic does.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use es_core::{Aggregate, BoxError, Error, EventStore, Progress, RecordedEvent};
use es_postgres::sqlx::postgres::PgRow;
use es_postgres::sqlx::{self, AssertSqlSafe, PgConnection, Row};
use es_postgres::{PostgresStore, TransactionalProjection, TransactionalRunner};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::domain::{Account, AccountEvent, Currency, Money, Transfer, TransferEvent};
use crate::domain::{AccountStatus, TransferStatus};
use crate::read_model::{AccountRow, CurrencyTotals, ReadModels, StatementLine, TransferRow};

/// The name of the tables' checkpoint (stable: the tables outlive any one process).
pub const TABLES_PROJECTION: &str = "ledger-read-models";

/// Every statement, with the (validated) schema spliced in once.
#[derive(Debug)]
struct Sql {
    create: String,
    truncate: String,
    open_account: String,
    update_account: String,
    totals_and_line: String,
    request_transfer: String,
    update_transfer: String,
    ensure_checkpoint: String,
    lock_checkpoint: String,
    reset_checkpoint: String,
    load_checkpoint: String,
    accounts: String,
    account: String,
    statement: String,
    statements: String,
    totals: String,
    transfers: String,
}

const ACCOUNT_COLUMNS: &str =
    "account_id, owner, currency, balance, overdraft_limit, status, version";
const LINE_COLUMNS: &str = "account_id, version, position, recorded_at, description, amount, \
     balance, transfer_id, user_id, correlation_id";
const TRANSFER_COLUMNS: &str = "transfer_id, from_account, to_account, amount, currency, status, \
     reason, requested_at, requested_by, correlation_id";

impl Sql {
    /// `schema` must be a plain identifier; a [`PostgresStore`] validates its own.
    fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        Self {
            create: format!(
                "CREATE TABLE IF NOT EXISTS {s}.ledger_balances ( \
                   account_id text PRIMARY KEY, owner text NOT NULL, currency text NOT NULL, \
                   balance bigint NOT NULL, overdraft_limit bigint NOT NULL, \
                   status text NOT NULL, version bigint NOT NULL); \
                 CREATE TABLE IF NOT EXISTS {s}.ledger_statement ( \
                   account_id text NOT NULL, version bigint NOT NULL, position bigint NOT NULL, \
                   recorded_at timestamptz NOT NULL, description text NOT NULL, \
                   amount bigint NOT NULL, balance bigint NOT NULL, transfer_id uuid, \
                   user_id text, correlation_id uuid, PRIMARY KEY (account_id, version)); \
                 CREATE TABLE IF NOT EXISTS {s}.ledger_totals ( \
                   currency text PRIMARY KEY, net_inflow bigint NOT NULL DEFAULT 0, \
                   balances bigint NOT NULL DEFAULT 0, in_flight bigint NOT NULL DEFAULT 0); \
                 CREATE TABLE IF NOT EXISTS {s}.ledger_transfers ( \
                   transfer_id uuid PRIMARY KEY, from_account text NOT NULL, \
                   to_account text NOT NULL, amount bigint NOT NULL, currency text NOT NULL, \
                   status text NOT NULL, reason text, requested_at timestamptz NOT NULL, \
                   requested_by text, correlation_id uuid);"
            ),
            truncate: format!(
                "TRUNCATE {s}.ledger_balances, {s}.ledger_statement, {s}.ledger_totals, \
                 {s}.ledger_transfers"
            ),
            open_account: format!(
                "WITH a AS ( \
                   INSERT INTO {s}.ledger_balances ({ACCOUNT_COLUMNS}) \
                   VALUES ($1, $2, $3, 0, $4, 'open', $5)) \
                 INSERT INTO {s}.ledger_totals (currency) VALUES ($3) \
                 ON CONFLICT (currency) DO NOTHING"
            ),
            update_account: format!(
                "UPDATE {s}.ledger_balances \
                 SET version = $2, status = coalesce($3, status), balance = balance + $4 \
                 WHERE account_id = $1 RETURNING currency, balance"
            ),
            // The totals move whether or not a statement line is written (a data-modifying
            // CTE always runs); the line is written only when the balance changed.
            totals_and_line: format!(
                "WITH t AS ( \
                   INSERT INTO {s}.ledger_totals AS t (currency, net_inflow, balances, in_flight) \
                   VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (currency) DO UPDATE SET \
                     net_inflow = t.net_inflow + excluded.net_inflow, \
                     balances = t.balances + excluded.balances, \
                     in_flight = t.in_flight + excluded.in_flight) \
                 INSERT INTO {s}.ledger_statement ({LINE_COLUMNS}) \
                 SELECT $5, $6, $7, $8, $9, $3::bigint, $10, $11, $12, $13 \
                 WHERE $3::bigint <> 0"
            ),
            request_transfer: format!(
                "INSERT INTO {s}.ledger_transfers ({TRANSFER_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, 'requested', NULL, $6, $7, $8)"
            ),
            update_transfer: format!(
                "UPDATE {s}.ledger_transfers SET status = $2, reason = coalesce($3, reason) \
                 WHERE transfer_id = $1"
            ),
            ensure_checkpoint: format!(
                "INSERT INTO {s}.checkpoints (name, position) VALUES ($1, 0) \
                 ON CONFLICT (name) DO NOTHING"
            ),
            lock_checkpoint: format!(
                "SELECT position FROM {s}.checkpoints WHERE name = $1 FOR UPDATE"
            ),
            reset_checkpoint: format!(
                "UPDATE {s}.checkpoints SET position = 0, updated_at = clock_timestamp() \
                 WHERE name = $1"
            ),
            load_checkpoint: format!("SELECT position FROM {s}.checkpoints WHERE name = $1"),
            accounts: format!(
                "SELECT {ACCOUNT_COLUMNS} FROM {s}.ledger_balances ORDER BY account_id COLLATE \"C\""
            ),
            account: format!(
                "SELECT {ACCOUNT_COLUMNS} FROM {s}.ledger_balances WHERE account_id = $1"
            ),
            statement: format!(
                "SELECT {LINE_COLUMNS} FROM {s}.ledger_statement WHERE account_id = $1 \
                 ORDER BY version"
            ),
            statements: format!(
                "SELECT {LINE_COLUMNS} FROM {s}.ledger_statement \
                 ORDER BY account_id COLLATE \"C\", version"
            ),
            totals: format!(
                "SELECT currency, net_inflow, balances, in_flight FROM {s}.ledger_totals"
            ),
            transfers: format!(
                "SELECT {TRANSFER_COLUMNS} FROM {s}.ledger_transfers ORDER BY transfer_id"
            ),
        }
    }
}

/// The [`TransactionalProjection`] that writes the tables. It keeps no state of its own: every
/// event is applied with SQL on the runner's transaction.
#[derive(Debug, Clone)]
pub struct TablesProjection {
    sql: std::sync::Arc<Sql>,
}

impl TablesProjection {
    async fn apply_account(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        let decoded: AccountEvent = event.decode()?;
        let id = event.stream.aggregate_id.as_str();
        let version = to_i64(event.version)?;
        if let AccountEvent::AccountOpened(opened) = &decoded {
            sqlx::query(AssertSqlSafe(self.sql.open_account.clone()))
                .bind(id)
                .bind(&opened.owner)
                .bind(opened.currency.as_str())
                .bind(opened.overdraft_limit)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            return Ok(());
        }
        let status = match &decoded {
            AccountEvent::AccountFrozen(_) => Some(AccountStatus::Frozen),
            AccountEvent::AccountUnfrozen(_) => Some(AccountStatus::Open),
            AccountEvent::AccountClosed(_) => Some(AccountStatus::Closed),
            _ => None,
        };
        let (net_inflow, in_flight) = match &decoded {
            AccountEvent::MoneyDeposited(e) => (e.amount, 0),
            AccountEvent::MoneyWithdrawn(e) => (-e.amount, 0),
            AccountEvent::TransferSent(e) => (0, e.amount),
            AccountEvent::TransferReceived(e) => (0, -e.amount),
            AccountEvent::TransferRefunded(e) => (0, -e.amount),
            _ => (0, 0),
        };
        let change = decoded.balance_change();
        let row = sqlx::query(AssertSqlSafe(self.sql.update_account.clone()))
            .bind(id)
            .bind(version)
            .bind(status.map(AccountStatus::as_str))
            .bind(change)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(format!(
                "{} at version {}: account never opened",
                event.stream, event.version
            )
            .into());
        };
        if change == 0 && net_inflow == 0 && in_flight == 0 {
            return Ok(());
        }
        let currency: Currency = row.try_get::<String, _>(0)?.parse()?;
        let balance: i64 = row.try_get(1)?;
        let transfer_id = match &decoded {
            AccountEvent::TransferSent(e) => Some(e.transfer_id),
            AccountEvent::TransferReceived(e) => Some(e.transfer_id),
            AccountEvent::TransferRefunded(e) => Some(e.transfer_id),
            _ => None,
        };
        sqlx::query(AssertSqlSafe(self.sql.totals_and_line.clone()))
            .bind(currency.as_str())
            .bind(net_inflow)
            .bind(change)
            .bind(in_flight)
            .bind(id)
            .bind(version)
            .bind(to_i64(event.position)?)
            .bind(event.recorded_at)
            .bind(decoded.describe(Some(&currency)))
            .bind(balance)
            .bind(transfer_id)
            .bind(event.metadata.user_id.as_deref())
            .bind(event.metadata.correlation_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    async fn apply_transfer(
        &self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        let decoded: TransferEvent = event.decode()?;
        let id: Uuid = event.stream.aggregate_id.parse()?;
        if let TransferEvent::TransferRequested(e) = &decoded {
            sqlx::query(AssertSqlSafe(self.sql.request_transfer.clone()))
                .bind(id)
                .bind(&e.from_account)
                .bind(&e.to_account)
                .bind(e.amount)
                .bind(e.currency.as_str())
                .bind(event.recorded_at)
                .bind(event.metadata.user_id.as_deref())
                .bind(event.metadata.correlation_id)
                .execute(&mut *tx)
                .await?;
            return Ok(());
        }
        let (status, reason) = match decoded {
            TransferEvent::TransferRequested(_) => (TransferStatus::Requested, None),
            TransferEvent::TransferRejected(e) => (TransferStatus::Rejected, Some(e.reason)),
            TransferEvent::TransferDebited(_) => (TransferStatus::Debited, None),
            TransferEvent::TransferCompleted(_) => (TransferStatus::Completed, None),
            TransferEvent::TransferCreditFailed(e) => {
                (TransferStatus::CreditFailed, Some(e.reason))
            }
            TransferEvent::TransferCompensated(_) => (TransferStatus::Compensated, None),
        };
        let updated = sqlx::query(AssertSqlSafe(self.sql.update_transfer.clone()))
            .bind(id)
            .bind(status.as_str())
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(format!("{}: transfer never requested", event.stream).into());
        }
        Ok(())
    }
}

impl TransactionalProjection for TablesProjection {
    fn name(&self) -> &str {
        TABLES_PROJECTION
    }

    async fn handle(
        &mut self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        let aggregate_type = event.stream.aggregate_type.as_str();
        if aggregate_type == Account::TYPE {
            self.apply_account(tx, event).await
        } else if aggregate_type == Transfer::TYPE {
            self.apply_transfer(tx, event).await
        } else {
            Ok(())
        }
    }

    async fn reset(&mut self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(AssertSqlSafe(self.sql.truncate.clone()))
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// The read models in PostgreSQL: the runner that keeps the tables, and the queries on them.
pub struct TableReadModels {
    store: PostgresStore,
    sql: std::sync::Arc<Sql>,
    runner: Mutex<TransactionalRunner<TablesProjection>>,
}

impl std::fmt::Debug for TableReadModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableReadModels")
            .field("schema", &self.store.schema())
            .finish_non_exhaustive()
    }
}

fn backend(error: sqlx::Error) -> Error {
    Error::backend(error)
}

fn to_i64(value: u64) -> Result<i64, BoxError> {
    Ok(i64::try_from(value)?)
}

fn to_u64(value: i64) -> Result<u64, Error> {
    u64::try_from(value)
        .map_err(|_| Error::Invalid(format!("negative position or version {value}")))
}

/// A row value the tables should never hold (the projection only writes valid ones).
fn bad(what: &str, value: &str) -> Error {
    Error::Invalid(format!(
        "read model table holds an invalid {what}: {value:?}"
    ))
}

fn parse_currency(text: String) -> Result<Currency, Error> {
    text.parse().map_err(|_| bad("currency", &text))
}

/// Statuses are stored as their `as_str` names, which are also their serde names.
fn parse_status<T: DeserializeOwned>(text: String) -> Result<T, Error> {
    serde_json::from_value(serde_json::Value::String(text.clone()))
        .map_err(|_| bad("status", &text))
}

fn account_row(row: &PgRow) -> Result<AccountRow, Error> {
    let currency = parse_currency(row.try_get(2).map_err(backend)?)?;
    let balance: i64 = row.try_get(3).map_err(backend)?;
    Ok(AccountRow {
        id: row.try_get(0).map_err(backend)?,
        owner: row.try_get(1).map_err(backend)?,
        balance_display: Money::format_minor(balance, &currency),
        currency,
        balance,
        overdraft_limit: row.try_get(4).map_err(backend)?,
        status: parse_status(row.try_get(5).map_err(backend)?)?,
        version: to_u64(row.try_get(6).map_err(backend)?)?,
    })
}

fn statement_line(row: &PgRow) -> Result<(String, StatementLine), Error> {
    Ok((
        row.try_get(0).map_err(backend)?,
        StatementLine {
            version: to_u64(row.try_get(1).map_err(backend)?)?,
            position: to_u64(row.try_get(2).map_err(backend)?)?,
            recorded_at: row.try_get(3).map_err(backend)?,
            description: row.try_get(4).map_err(backend)?,
            amount: row.try_get(5).map_err(backend)?,
            balance: row.try_get(6).map_err(backend)?,
            transfer_id: row.try_get(7).map_err(backend)?,
            user_id: row.try_get(8).map_err(backend)?,
            correlation_id: row.try_get(9).map_err(backend)?,
        },
    ))
}

fn totals_row(row: &PgRow) -> Result<(Currency, CurrencyTotals), Error> {
    Ok((
        parse_currency(row.try_get(0).map_err(backend)?)?,
        CurrencyTotals {
            net_inflow: row.try_get(1).map_err(backend)?,
            balances: row.try_get(2).map_err(backend)?,
            in_flight: row.try_get(3).map_err(backend)?,
        },
    ))
}

fn transfer_row(row: &PgRow) -> Result<TransferRow, Error> {
    Ok(TransferRow {
        id: row.try_get(0).map_err(backend)?,
        from_account: row.try_get(1).map_err(backend)?,
        to_account: row.try_get(2).map_err(backend)?,
        amount: row.try_get(3).map_err(backend)?,
        currency: parse_currency(row.try_get(4).map_err(backend)?)?,
        status: parse_status(row.try_get(5).map_err(backend)?)?,
        reason: row.try_get(6).map_err(backend)?,
        requested_at: row.try_get(7).map_err(backend)?,
        requested_by: row.try_get(8).map_err(backend)?,
        correlation_id: row.try_get(9).map_err(backend)?,
    })
}

impl TableReadModels {
    /// Creates the tables in `store`'s schema if they are missing (serialised with other
    /// processes starting at the same moment) and catches them up with the log.
    pub async fn open(store: PostgresStore) -> Result<Self, Error> {
        let sql = std::sync::Arc::new(Sql::new(store.schema()));
        let mut tx = store.pool().begin().await.map_err(backend)?;
        // Concurrent CREATE TABLE IF NOT EXISTS can still collide on the catalog: take turns.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("ledger-tables:{}", store.schema()))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::raw_sql(AssertSqlSafe(sql.create.clone()))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        let projection = TablesProjection { sql: sql.clone() };
        let models = Self {
            runner: Mutex::new(TransactionalRunner::new(store.clone(), projection)),
            store,
            sql,
        };
        models.step_while_any().await?;
        Ok(models)
    }

    /// Applies batches until the log shows nothing more after the checkpoint; returns the
    /// checkpoint.
    async fn step_while_any(&self) -> Result<u64, Error> {
        let mut runner = self.runner.lock().await;
        Ok(runner.catch_up().await?.position)
    }

    /// Applies every event up to the head of the log as it is now, and at least up to
    /// `position` (waiting up to `limit` for them); returns the checkpoint reached.
    ///
    /// The head alone is not enough for read-your-writes: es-postgres reports it below a
    /// frontier that in-flight appends of *other schemas* of the database can hold down (see
    /// [`TableReadModels::catch_up_to`]), so a caller passes the last position it wrote.
    pub async fn catch_up(&self, position: u64, limit: Duration) -> Result<u64, Error> {
        let head = self.store.head_position().await?;
        self.catch_up_to(head.max(position), limit).await
    }

    /// Catches up until the tables include global `position` or `limit` has passed; returns
    /// the checkpoint reached.
    ///
    /// An empty batch does not prove the tables caught up: es-postgres reads the log only
    /// below a frontier that every in-flight append *in the whole database* holds back (its
    /// lock keys do not name the schema), so an append in another schema with lower
    /// positions can hide this schema's newest events for a moment. Hence the target and
    /// the retries.
    pub async fn catch_up_to(&self, position: u64, limit: Duration) -> Result<u64, Error> {
        let deadline = Instant::now() + limit;
        loop {
            let reached = self.step_while_any().await?;
            if reached >= position || Instant::now() >= deadline {
                return Ok(reached);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Truncates the tables and resets the checkpoint in one transaction (holding the
    /// checkpoint row's lock, so no runner of another process applies a batch in between),
    /// then replays the log from position 0 up to at least where the tables were, calling
    /// `on_progress` after every batch.
    ///
    /// es-postgres's `TransactionalRunner::rebuild` does the same without progress reports,
    /// hence the reset here.
    /// Fails if the log shows nothing more for `limit` before the head seen at the start.
    pub async fn rebuild(
        &self,
        limit: Duration,
        mut on_progress: impl FnMut(Progress) + Send,
    ) -> Result<Progress, Error> {
        let mut runner = self.runner.lock().await;
        let began = Instant::now();
        let mut tx = self.store.pool().begin().await.map_err(backend)?;
        sqlx::query(AssertSqlSafe(self.sql.ensure_checkpoint.clone()))
            .bind(TABLES_PROJECTION)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let applied: i64 = sqlx::query_scalar(AssertSqlSafe(self.sql.lock_checkpoint.clone()))
            .bind(TABLES_PROJECTION)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query(AssertSqlSafe(self.sql.reset_checkpoint.clone()))
            .bind(TABLES_PROJECTION)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query(AssertSqlSafe(self.sql.truncate.clone()))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        // At least as far as the tables had got (the head as reported may lag behind it).
        let head = self.store.head_position().await?.max(to_u64(applied)?);
        let mut progress = Progress {
            done: 0,
            total: head,
            position: 0,
            elapsed: Duration::ZERO,
        };
        // Up to the head seen now (see `catch_up_to` for why an empty batch is not the end).
        let mut stalled_since = Instant::now();
        loop {
            let read = runner.step().await?;
            if read == 0 {
                if progress.position >= head {
                    break;
                }
                if stalled_since.elapsed() >= limit {
                    return Err(Error::Invalid(format!(
                        "rebuild stalled at position {} of {head}: the log showed nothing \
                         more for {limit:?}",
                        progress.position
                    )));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            stalled_since = Instant::now();
            progress.done += read as u64;
            progress.total = progress.total.max(progress.done);
            progress.position = self
                .store
                .load_checkpoint(TABLES_PROJECTION)
                .await?
                .unwrap_or(0);
            progress.elapsed = began.elapsed();
            on_progress(progress);
        }
        progress.elapsed = began.elapsed();
        Ok(progress)
    }

    /// One account's row.
    pub async fn account(&self, account_id: &str) -> Result<Option<AccountRow>, Error> {
        let row = sqlx::query(AssertSqlSafe(self.sql.account.clone()))
            .bind(account_id)
            .fetch_optional(self.store.pool())
            .await
            .map_err(backend)?;
        row.as_ref().map(account_row).transpose()
    }

    /// Every account's row, by id.
    pub async fn accounts(&self) -> Result<Vec<AccountRow>, Error> {
        let rows = sqlx::query(AssertSqlSafe(self.sql.accounts.clone()))
            .fetch_all(self.store.pool())
            .await
            .map_err(backend)?;
        rows.iter().map(account_row).collect()
    }

    /// One account's statement, or `None` if there is no such account.
    pub async fn statement(&self, account_id: &str) -> Result<Option<Vec<StatementLine>>, Error> {
        if self.account(account_id).await?.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(AssertSqlSafe(self.sql.statement.clone()))
            .bind(account_id)
            .fetch_all(self.store.pool())
            .await
            .map_err(backend)?;
        let lines = rows
            .iter()
            .map(|row| statement_line(row).map(|(_, line)| line))
            .collect::<Result<_, _>>()?;
        Ok(Some(lines))
    }

    /// Totals per currency.
    pub async fn totals(&self) -> Result<BTreeMap<Currency, CurrencyTotals>, Error> {
        let rows = sqlx::query(AssertSqlSafe(self.sql.totals.clone()))
            .fetch_all(self.store.pool())
            .await
            .map_err(backend)?;
        rows.iter().map(totals_row).collect()
    }

    /// Every transfer, by id.
    pub async fn transfers(&self) -> Result<Vec<TransferRow>, Error> {
        let rows = sqlx::query(AssertSqlSafe(self.sql.transfers.clone()))
            .fetch_all(self.store.pool())
            .await
            .map_err(backend)?;
        rows.iter().map(transfer_row).collect()
    }

    /// Every table and the checkpoint, read in one snapshot (a repeatable-read, read-only
    /// transaction), as [`ReadModels`].
    pub async fn snapshot(&self) -> Result<ReadModels, Error> {
        let mut tx = self.store.pool().begin().await.map_err(backend)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let mut models = ReadModels::default();
        let position: Option<i64> =
            sqlx::query_scalar(AssertSqlSafe(self.sql.load_checkpoint.clone()))
                .bind(TABLES_PROJECTION)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        models.position = to_u64(position.unwrap_or(0))?;
        for row in sqlx::query(AssertSqlSafe(self.sql.accounts.clone()))
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?
        {
            let account = account_row(&row)?;
            models.accounts.insert(account.id.clone(), account);
        }
        for row in sqlx::query(AssertSqlSafe(self.sql.statements.clone()))
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?
        {
            let (id, line) = statement_line(&row)?;
            models.statements.entry(id).or_default().push(line);
        }
        for row in sqlx::query(AssertSqlSafe(self.sql.totals.clone()))
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?
        {
            let (currency, totals) = totals_row(&row)?;
            models.totals.insert(currency, totals);
        }
        for row in sqlx::query(AssertSqlSafe(self.sql.transfers.clone()))
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?
        {
            let transfer = transfer_row(&row)?;
            models.transfers.insert(transfer.id, transfer);
        }
        tx.rollback().await.map_err(backend)?;
        Ok(models)
    }
}
