//! The read models in PostgreSQL tables of the event store's schema (created by the sqlx
//! migration in `examples/ledger/migrations/`, statements in `examples/ledger/sql/`), kept by
//! the consumer `ledger-tables` through es-postgres's [`ExactlyOnce`] delivery: each batch's
//! rows and the checkpoint commit in one transaction, so every event lands exactly once,
//! across crashes and with every process on the schema running the consumer (they take turns
//! on the checkpoint row). The rows are what [`effect`] says, as in memory.

use std::collections::BTreeMap;
use std::time::Duration;

use es_core::{BoxError, Consumer, Envelope, Error, EventHandler, Progress, Status};
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
use crate::effects::{Effect, LedgerEvent, TransferRow, effect};

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
    open_account,
    account_change,
    movement,
    request_transfer,
    transfer_step,
    reset,
    accounts,
    account,
    statement,
    statements,
    totals,
    transfers,
    trace,
    traces,
    index_event
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

/// The [`EventHandler`] that writes each event's effect in the batch's transaction.
#[derive(Debug, Clone)]
pub struct TableHandler {
    sql: std::sync::Arc<Sql>,
}

impl TableHandler {
    async fn apply(&self, conn: &mut PgConnection, effect: Effect) -> Result<(), BoxError> {
        let sql = &self.sql;
        let query = |text: &String| sqlx::query(AssertSqlSafe(text.clone()));
        match effect {
            Effect::Open(row) => {
                query(&sql.open_account)
                    .bind(Json(row))
                    .execute(conn)
                    .await?;
            }
            Effect::Account {
                id,
                version,
                status,
                movement,
            } => {
                let change = movement
                    .as_ref()
                    .map_or(Ok(0), |m| i64::try_from(m.change))?;
                let updated: Option<(String, i64)> =
                    sqlx::query_as(AssertSqlSafe(sql.account_change.clone()))
                        .bind(&id)
                        .bind(i64::try_from(version)?)
                        .bind(status.map(|s| s.as_str()))
                        .bind(change)
                        .fetch_optional(&mut *conn)
                        .await?;
                let (currency, balance) = updated.ok_or(format!("account {id} never opened"))?;
                let Some(m) = movement else { return Ok(()) };
                let line = m
                    .line(version, &currency.parse()?, balance)
                    .ok_or("amount too large")?;
                let (net_inflow, in_flight) =
                    (i64::try_from(m.net_inflow)?, i64::try_from(m.in_flight)?);
                let movement = query(&sql.movement)
                    .bind(&currency)
                    .bind(net_inflow)
                    .bind(line.amount);
                movement
                    .bind(in_flight)
                    .bind(&id)
                    .bind(Json(line))
                    .execute(conn)
                    .await?;
            }
            Effect::Request(row) => {
                query(&sql.request_transfer)
                    .bind(Json(row))
                    .execute(conn)
                    .await?;
            }
            Effect::Transfer { id, status, reason } => {
                let step = query(&sql.transfer_step)
                    .bind(id)
                    .bind(status.as_str())
                    .bind(reason);
                if step.execute(conn).await?.rows_affected() == 0 {
                    return Err(format!("transfer {id} unknown").into());
                }
            }
        }
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
        self.apply(tx.conn(), effect(event)?).await?;
        let record = &event.record;
        if let Some(correlation) = record.metadata.correlation_id {
            let index = sqlx::query(AssertSqlSafe(self.sql.index_event.clone()));
            let position = i64::try_from(record.position)?;
            let index = index.bind(correlation).bind(position).bind(record.event_id);
            index.execute(tx.conn()).await?;
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
