//! The read models in PostgreSQL tables of the event store's schema (created by the sqlx
//! migration in `examples/ledger/migrations/`, statements in `examples/ledger/sql/`), kept by
//! the consumer `ledger-tables` through es-postgres's [`ExactlyOnce`] delivery: each batch's
//! rows and the checkpoint commit in one transaction, so every event lands exactly once,
//! across crashes and with every process on the schema running the consumer (they take turns
//! on the checkpoint row). The rows are what [`effect`] says, as in memory; a batch is
//! written with one statement per table it touches.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use es_core::{BatchError, BoxError, Consumer, Envelope, Error, EventHandler, Progress, Status};
use es_postgres::{ExactlyOnce, PgTx, PostgresStore};
use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, FromRow, PgConnection};
use uuid::Uuid;

use super::{
    AccountRow, CurrencyTotals, OnProgress, Page, ReadModels, ReadSide, Running, Scope,
    StatementLine,
};
use crate::domain::Currency;
use crate::effects::{Effect, LedgerEvent, Movement, TransferRow, effect};

/// The name of the tables' consumer (and checkpoint), shared by every process on a schema.
pub const TABLES: &str = "ledger-tables";

macro_rules! statements {
    ($($name:ident),*) => {
        /// The statements of `examples/ledger/sql/`, with the (validated) schema spliced in.
        #[derive(Debug)]
        struct Sql { $($name: String),* }

        impl Sql {
            fn new(schema: &str) -> Self {
                let schema = format!("\"{schema}\"");
                let sql = |text: &str| text.replace("{schema}", &schema);
                Self { $($name: sql(include_str!(concat!("../../sql/", stringify!($name), ".sql")))),* }
            }
        }
    };
}

statements!(
    open_accounts,
    change_accounts,
    add_lines,
    move_totals,
    request_transfers,
    step_transfers,
    reset,
    accounts,
    account,
    statement,
    statements,
    totals,
    transfers,
    trace,
    traces,
    index_events
);

fn bad_row(what: &str) -> Error {
    Error::Invalid(format!("a ledger table holds a bad {what}"))
}

#[derive(FromRow)]
struct Line {
    account_id: String,
    #[sqlx(flatten)]
    line: StatementLine,
}

#[derive(FromRow)]
struct Totals {
    currency: String,
    net_inflow: String,
    balances: String,
    in_flight: String,
}

impl Totals {
    fn parse(self) -> Result<(Currency, CurrencyTotals), Error> {
        let bad = bad_row;
        let sum = |text: String| text.parse::<i128>().map_err(|_| bad("sum"));
        let totals = CurrencyTotals {
            net_inflow: sum(self.net_inflow)?,
            balances: sum(self.balances)?,
            in_flight: sum(self.in_flight)?,
        };
        Ok((self.currency.parse().map_err(|_| bad("currency"))?, totals))
    }
}

fn backend(error: sqlx::Error) -> Error {
    Error::backend(error)
}

fn query_as<'q, R>(
    sql: &str,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, R, sqlx::postgres::PgArguments>
where
    R: for<'r> FromRow<'r, sqlx::postgres::PgRow>,
{
    sqlx::query_as(AssertSqlSafe(sql.to_owned()))
}

/// A page's cursor and size as PostgreSQL integers (a cursor beyond `i64::MAX` finds nothing).
fn page(page: Page<u64>) -> (i64, i64) {
    let after = page
        .after
        .map_or(0, |a| i64::try_from(a).unwrap_or(i64::MAX));
    (after, i64::try_from(page.limit).unwrap_or(i64::MAX))
}

fn displayed(mut row: AccountRow) -> AccountRow {
    row.set_balance(row.balance);
    row
}

/// The [`EventHandler`] that writes the events' effects in the batch's transaction.
#[derive(Debug, Clone)]
pub struct TableHandler {
    sql: std::sync::Arc<Sql>,
}

/// What a run of events changes, gathered per table, so that each table takes one statement
/// whatever the number of events.
#[derive(Default)]
struct Changes {
    opened: Vec<AccountRow>,
    accounts: Vec<AccountChange>,
    requested: Vec<TransferRow>,
    transfers: Vec<TransferChange>,
    trace: (Vec<Uuid>, Vec<i64>, Vec<Uuid>),
}

/// One account's changes, in order.
struct AccountChange {
    id: String,
    version: i64,
    status: Option<&'static str>,
    change: i128,
    movements: Vec<(u64, Movement)>,
}

/// One transfer's last status, and its last reason.
struct TransferChange {
    id: Uuid,
    status: &'static str,
    reason: Option<String>,
}

impl Changes {
    fn gather(events: &[Envelope<LedgerEvent>]) -> Result<Self, BoxError> {
        let mut changes = Self::default();
        let (mut accounts, mut transfers) = (HashMap::new(), HashMap::new());
        for event in events {
            match effect(event)? {
                Effect::Open(row) => changes.opened.push(row),
                Effect::Account {
                    id,
                    version,
                    status,
                    movement,
                } => {
                    let at = *accounts.entry(id.clone()).or_insert_with(|| {
                        changes.accounts.push(AccountChange {
                            id,
                            version: 0,
                            status: None,
                            change: 0,
                            movements: Vec::new(),
                        });
                        changes.accounts.len() - 1
                    });
                    let account = &mut changes.accounts[at];
                    account.version = i64::try_from(version)?;
                    account.status = status.map(|s| s.as_str()).or(account.status);
                    if let Some(movement) = movement {
                        account.change = account
                            .change
                            .checked_add(movement.change)
                            .ok_or("balance change out of range")?;
                        account.movements.push((version, movement));
                    }
                }
                Effect::Request(row) => changes.requested.push(row),
                Effect::Transfer { id, status, reason } => {
                    let at = *transfers.entry(id).or_insert_with(|| {
                        changes.transfers.push(TransferChange {
                            id,
                            status: status.as_str(),
                            reason: None,
                        });
                        changes.transfers.len() - 1
                    });
                    let transfer = &mut changes.transfers[at];
                    transfer.status = status.as_str();
                    transfer.reason = reason.or(transfer.reason.take());
                }
            }
            let record = &event.record;
            if let Some(correlation) = record.metadata.correlation_id {
                changes.trace.0.push(correlation);
                changes.trace.1.push(i64::try_from(record.position)?);
                changes.trace.2.push(record.event_id);
            }
        }
        Ok(changes)
    }
}

impl TableHandler {
    /// Writes what `events` change, one statement per table touched.
    async fn write(
        &self,
        conn: &mut PgConnection,
        events: &[Envelope<LedgerEvent>],
    ) -> Result<(), BoxError> {
        let (sql, changes) = (&self.sql, Changes::gather(events)?);
        let query = |text: &String| sqlx::query(AssertSqlSafe(text.clone()));
        if !changes.opened.is_empty() {
            let opened = query(&sql.open_accounts).bind(Json(&changes.opened));
            opened.execute(&mut *conn).await?;
        }
        if !changes.accounts.is_empty() {
            self.move_accounts(conn, &changes.accounts).await?;
        }
        if !changes.requested.is_empty() {
            let requested = query(&sql.request_transfers).bind(Json(&changes.requested));
            requested.execute(&mut *conn).await?;
        }
        if !changes.transfers.is_empty() {
            let transfers = &changes.transfers;
            let stepped = query(&sql.step_transfers)
                .bind(transfers.iter().map(|t| t.id).collect::<Vec<_>>())
                .bind(transfers.iter().map(|t| t.status).collect::<Vec<_>>())
                .bind(
                    transfers
                        .iter()
                        .map(|t| t.reason.clone())
                        .collect::<Vec<_>>(),
                );
            if stepped.execute(&mut *conn).await?.rows_affected() != transfers.len() as u64 {
                return Err("a transfer moved on before it was requested".into());
            }
        }
        if !changes.trace.0.is_empty() {
            let (correlations, positions, event_ids) = changes.trace;
            let index = query(&sql.index_events).bind(correlations);
            index.bind(positions).bind(event_ids).execute(conn).await?;
        }
        Ok(())
    }

    /// Moves the accounts, then writes their statement lines (each line's balance counted
    /// back from the account's new one) and their currencies' totals.
    async fn move_accounts(
        &self,
        conn: &mut PgConnection,
        accounts: &[AccountChange],
    ) -> Result<(), BoxError> {
        let changes = accounts
            .iter()
            .map(|a| i64::try_from(a.change))
            .collect::<Result<Vec<_>, _>>()?;
        let moved: Vec<(String, String, i64)> =
            sqlx::query_as(AssertSqlSafe(self.sql.change_accounts.clone()))
                .bind(accounts.iter().map(|a| a.id.as_str()).collect::<Vec<_>>())
                .bind(accounts.iter().map(|a| a.version).collect::<Vec<_>>())
                .bind(accounts.iter().map(|a| a.status).collect::<Vec<_>>())
                .bind(changes)
                .fetch_all(&mut *conn)
                .await?;
        let moved: HashMap<String, (String, i64)> = moved
            .into_iter()
            .map(|(id, currency, balance)| (id, (currency, balance)))
            .collect();
        let (mut lines, mut totals) = (Vec::new(), BTreeMap::<String, [i128; 3]>::new());
        for account in accounts {
            let Some((currency, balance)) = moved.get(&account.id) else {
                return Err(format!("account {} never opened", account.id).into());
            };
            let (parsed, mut balance) = (currency.parse::<Currency>()?, *balance);
            let sums = totals.entry(currency.clone()).or_default();
            for (version, movement) in account.movements.iter().rev() {
                let line = movement
                    .line(*version, &parsed, balance)
                    .ok_or("amount too large")?;
                balance = balance
                    .checked_sub(line.amount)
                    .ok_or("balance out of range")?;
                let deltas = [movement.net_inflow, movement.change, movement.in_flight];
                for (sum, delta) in sums.iter_mut().zip(deltas) {
                    *sum = sum.checked_add(delta).ok_or("total out of range")?;
                }
                let mut line = serde_json::to_value(line)?;
                line["account_id"] = account.id.clone().into();
                lines.push(line);
            }
        }
        if lines.is_empty() {
            return Ok(());
        }
        let add = sqlx::query(AssertSqlSafe(self.sql.add_lines.clone()));
        add.bind(Json(lines)).execute(&mut *conn).await?;
        let column = |i: usize| {
            totals
                .values()
                .map(|s| s[i].to_string())
                .collect::<Vec<_>>()
        };
        sqlx::query(AssertSqlSafe(self.sql.move_totals.clone()))
            .bind(totals.keys().collect::<Vec<_>>())
            .bind(column(0))
            .bind(column(1))
            .bind(column(2))
            .execute(conn)
            .await?;
        Ok(())
    }
}

impl EventHandler<PgTx> for TableHandler {
    type Event = LedgerEvent;

    async fn handle(
        &mut self,
        tx: &mut PgTx,
        event: &Envelope<LedgerEvent>,
    ) -> Result<(), BoxError> {
        self.write(tx.conn(), std::slice::from_ref(event)).await
    }

    /// The whole batch in one statement per table. If that fails, the batch's events one at
    /// a time from a savepoint, so that the runtime learns which event fails.
    async fn handle_batch(
        &mut self,
        tx: &mut PgTx,
        events: &[Envelope<LedgerEvent>],
    ) -> Result<(), BatchError> {
        let at_start = |error: sqlx::Error| BatchError {
            index: 0,
            error: error.into(),
        };
        if events.len() > 1 {
            let savepoint = sqlx::query("SAVEPOINT ledger_batch");
            savepoint.execute(tx.conn()).await.map_err(at_start)?;
            match self.write(tx.conn(), events).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::debug!(%error, "a batch failed; writing its events one at a time");
                    let back = sqlx::query("ROLLBACK TO SAVEPOINT ledger_batch");
                    back.execute(tx.conn()).await.map_err(at_start)?;
                }
            }
        }
        for (index, event) in events.iter().enumerate() {
            let handled = self.handle(tx, event).await;
            handled.map_err(|error| BatchError { index, error })?;
        }
        Ok(())
    }

    async fn reset(&mut self, tx: &mut PgTx) -> Result<(), BoxError> {
        sqlx::query(AssertSqlSafe(self.sql.reset.clone()))
            .execute(tx.conn())
            .await?;
        Ok(())
    }
}

/// The read models in the tables of `store`'s schema.
pub struct TableViews {
    store: PostgresStore,
    handler: TableHandler,
    running: Running,
}

impl TableViews {
    /// Creates the tables if needed (the sqlx migration, tracked apart from the store's own)
    /// and runs the consumer that keeps them, on its own task.
    pub async fn open(store: PostgresStore) -> Result<Self, Error> {
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.dangerous_set_table_name("_ledger_migrations");
        let mut conn = store.pool().acquire().await.map_err(backend)?.detach();
        let path = format!("SET search_path TO \"{}\"", store.schema());
        sqlx::query(AssertSqlSafe(path))
            .execute(&mut conn)
            .await
            .map_err(backend)?;
        migrator
            .run_direct(None, &mut conn, false)
            .await
            .map_err(Error::backend)?;
        let handler = TableHandler {
            sql: std::sync::Arc::new(Sql::new(store.schema())),
        };
        let running = Running::new(Self::consumer(&store, handler.clone()).spawn());
        Ok(Self {
            store,
            handler,
            running,
        })
    }

    fn consumer(
        store: &PostgresStore,
        handler: TableHandler,
    ) -> Consumer<TableHandler, PostgresStore, ExactlyOnce> {
        Consumer::new(
            TABLES,
            store.clone(),
            ExactlyOnce::new(store.clone()),
            handler,
        )
    }

    async fn load(&self, conn: &mut PgConnection, scope: Scope<'_>) -> Result<ReadModels, Error> {
        let (sql, mut models) = (&self.handler.sql, ReadModels::default());
        let rows = match scope {
            Scope::Account(id) | Scope::Statement(id, _) => {
                query_as::<AccountRow>(&sql.account)
                    .bind(id)
                    .fetch_all(&mut *conn)
                    .await
            }
            Scope::Accounts | Scope::All => query_as(&sql.accounts).fetch_all(&mut *conn).await,
            _ => Ok(Vec::new()),
        };
        for row in rows.map_err(backend)? {
            models.accounts.insert(row.id.clone(), displayed(row));
        }
        let lines: Vec<Line> = match scope {
            Scope::Statement(id, p) if models.accounts.contains_key(id) => {
                let (after, limit) = page(p);
                let query = query_as(&sql.statement).bind(id).bind(after).bind(limit);
                query.fetch_all(&mut *conn).await.map_err(backend)?
            }
            Scope::All => query_as(&sql.statements)
                .fetch_all(&mut *conn)
                .await
                .map_err(backend)?,
            _ => Vec::new(),
        };
        if matches!(scope, Scope::Statement(..) | Scope::All) {
            for id in models.accounts.keys() {
                models.statements.insert(id.clone(), Vec::new());
            }
        }
        for Line { account_id, line } in lines {
            models.statements.entry(account_id).or_default().push(line);
        }
        if matches!(scope, Scope::Totals | Scope::All) {
            let rows: Vec<Totals> = query_as(&sql.totals)
                .fetch_all(&mut *conn)
                .await
                .map_err(backend)?;
            for totals in rows {
                let (currency, totals) = totals.parse()?;
                models.totals.insert(currency, totals);
            }
        }
        let transfers = match scope {
            Scope::Transfers(p) => Some((p.after, i64::try_from(p.limit).unwrap_or(i64::MAX))),
            Scope::All => Some((None, i64::MAX)),
            _ => None,
        };
        if let Some((after, limit)) = transfers {
            let query = query_as::<TransferRow>(&sql.transfers)
                .bind(after)
                .bind(limit);
            for row in query.fetch_all(&mut *conn).await.map_err(backend)? {
                models.transfers.insert(row.id, row);
            }
        }
        let flows: Vec<(Uuid, i64, Uuid)> = match scope {
            Scope::Trace(id, p) => {
                let (after, limit) = page(p);
                let query = query_as(&sql.trace).bind(id).bind(after).bind(limit);
                query.fetch_all(&mut *conn).await.map_err(backend)?
            }
            Scope::All => query_as(&sql.traces)
                .fetch_all(&mut *conn)
                .await
                .map_err(backend)?,
            _ => Vec::new(),
        };
        if let Scope::Trace(id, _) = scope {
            models.traces.insert(id, BTreeMap::new());
        }
        for (id, position, event_id) in flows {
            let position = u64::try_from(position).map_err(|_| bad_row("position"))?;
            models
                .traces
                .entry(id)
                .or_default()
                .insert(position, event_id);
        }
        Ok(models)
    }
}

impl ReadSide for TableViews {
    fn wait_for(&self, position: u64, timeout: Duration) -> BoxFuture<'_, Result<(), Error>> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.running
            .reached(position, deadline)
            .map(|r| r.map(drop))
            .boxed()
    }

    fn read<'a>(&'a self, scope: Scope<'a>) -> BoxFuture<'a, Result<ReadModels, Error>> {
        async move {
            if scope != Scope::All {
                let mut conn = self.store.pool().acquire().await.map_err(backend)?;
                return self.load(&mut conn, scope).await;
            }
            // Every table in one snapshot: a repeatable-read, read-only transaction.
            let mut tx = self.store.begin().await?;
            let set = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY";
            sqlx::query(set).execute(tx.conn()).await.map_err(backend)?;
            let models = self.load(tx.conn(), scope).await?;
            tx.rollback().await?;
            Ok(models)
        }
        .boxed()
    }

    fn rebuild<'a>(
        &'a self,
        on_progress: OnProgress<'a>,
    ) -> BoxFuture<'a, Result<Progress, Error>> {
        // Truncates and resets the shared checkpoint in one transaction, under the
        // checkpoint row's lock; the live consumers (here and in other processes) then take
        // turns with this one on the replay, each batch applied once.
        let mut consumer = Self::consumer(&self.store, self.handler.clone());
        async move { consumer.rebuild(on_progress).await }.boxed()
    }

    fn status(&self) -> Status {
        self.running.status()
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.running.shutdown().boxed()
    }
}
