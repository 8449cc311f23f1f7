//! The read models in PostgreSQL tables of the event store's schema (created by the sqlx
//! migration in `examples/ledger/migrations/`, statements in `examples/ledger/sql/`), kept by
//! the consumer `ledger-tables` through es-postgres's [`ExactlyOnce`] delivery: each batch's
//! rows and the checkpoint commit in one transaction, so every event lands exactly once,
//! across crashes and with every process on the schema running the consumer (they take turns
//! on the checkpoint row). The rows are what [`effect`] says, as in memory.

use std::time::Duration;

use es_core::{BoxError, Consumer, Envelope, Error, EventHandler, Progress, Status};
use es_postgres::{ExactlyOnce, PgTx, PostgresStore};
use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, FromRow, PgConnection};

use super::{
    AccountRow, CurrencyTotals, OnProgress, ReadModels, ReadSide, Running, Scope, StatementLine,
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
    transfers
);

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
        let bad = |what: &str| Error::Invalid(format!("ledger_totals holds a bad {what}"));
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

async fn fetch<R>(conn: &mut PgConnection, sql: &str, id: Option<&str>) -> Result<Vec<R>, Error>
where
    R: for<'r> FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let mut query = sqlx::query_as(AssertSqlSafe(sql.to_owned()));
    if let Some(id) = id {
        query = query.bind(id);
    }
    query.fetch_all(conn).await.map_err(backend)
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
        self.apply(tx.conn(), effect(event)?).await
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
        let id = match scope {
            Scope::Account(id) | Scope::Statement(id) => Some(id),
            _ => None,
        };
        let (accounts, lines) = match id {
            Some(_) => (&sql.account, &sql.statement),
            None => (&sql.accounts, &sql.statements),
        };
        if !matches!(scope, Scope::Totals | Scope::Transfers) {
            for row in fetch::<AccountRow>(conn, accounts, id).await? {
                models.accounts.insert(row.id.clone(), displayed(row));
            }
        }
        if matches!(scope, Scope::Statement(_) | Scope::All) {
            for id in models.accounts.keys() {
                models.statements.insert(id.clone(), Vec::new());
            }
            for Line { account_id, line } in fetch(conn, lines, id).await? {
                models.statements.entry(account_id).or_default().push(line);
            }
        }
        if matches!(scope, Scope::Totals | Scope::All) {
            for totals in fetch::<Totals>(conn, &sql.totals, None).await? {
                let (currency, totals) = totals.parse()?;
                models.totals.insert(currency, totals);
            }
        }
        if matches!(scope, Scope::Transfers | Scope::All) {
            for row in fetch::<TransferRow>(conn, &sql.transfers, None).await? {
                models.transfers.insert(row.id, row);
            }
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
