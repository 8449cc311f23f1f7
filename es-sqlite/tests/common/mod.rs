//! What the es-sqlite tests share: a small account aggregate, seeding, and a read model kept
//! in tables of the store's own file.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

use es_core::prelude::*;
use es_core::{BoxError, Envelope, EventHandler, NewEvent};
use es_sqlite::{SqliteStore, Tx};

#[event]
pub struct Opened {
    pub owner: String,
}

#[event]
pub struct Deposited {
    pub amount: i64,
}

#[event]
pub struct Withdrawn {
    pub amount: i64,
}

/// The aggregate whose events the read models consume.
#[derive(Aggregate, Default)]
#[aggregate(name = "Account", events(Opened, Deposited, Withdrawn))]
pub struct Account {
    balance: i64,
}

impl Apply<Opened> for Account {
    fn apply(&mut self, _: &Opened) {}
}
impl Apply<Deposited> for Account {
    fn apply(&mut self, e: &Deposited) {
        self.balance += e.amount;
    }
}
impl Apply<Withdrawn> for Account {
    fn apply(&mut self, e: &Withdrawn) {
        self.balance -= e.amount;
    }
}

pub async fn temporary() -> SqliteStore {
    SqliteStore::temporary().await.expect("a temporary store")
}

fn new_event<E: Event>(event: &E) -> NewEvent {
    NewEvent::from_event(event, Metadata::by_user("seed")).expect("encode")
}

/// Opens account `id` and deposits `deposits`, one append each; the last position.
pub async fn seed(store: &SqliteStore, id: &str, deposits: &[i64]) -> u64 {
    let stream = StreamId::new("Account", id);
    let mut last = store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![new_event(&Opened { owner: id.into() })],
        )
        .await
        .expect("open")[0]
        .position;
    for amount in deposits {
        last = store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![new_event(&Deposited { amount: *amount })],
            )
            .await
            .expect("deposit")[0]
            .position;
    }
    last
}

/// Appends an event of another aggregate type, which the read model never sees.
pub async fn noise(store: &SqliteStore) -> u64 {
    let event = NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_name: "Noise".into(),
        schema_version: 1,
        payload: serde_json::value::to_raw_value(&serde_json::json!({})).expect("json"),
        metadata: Metadata::new(),
    };
    store
        .append(
            &StreamId::new("Other", "n"),
            ExpectedVersion::Any,
            vec![event],
        )
        .await
        .expect("noise")[0]
        .position
}

/// Balances per account and one row per handled event, in tables of the store's file,
/// written in the delivery's transaction. `table` prefixes the tables, so several read
/// models can share a file.
#[derive(Clone)]
pub struct Balances {
    pub table: &'static str,
    pub fail_on_amount: Arc<Mutex<Option<i64>>>,
}

impl Balances {
    pub async fn create(store: &SqliteStore, table: &'static str) -> Self {
        let mut tx = store.begin().await.expect("begin");
        for statement in [
            format!(
                "CREATE TABLE IF NOT EXISTS {table}_balances (account TEXT PRIMARY KEY, balance INTEGER NOT NULL)"
            ),
            format!("CREATE TABLE IF NOT EXISTS {table}_handled (position INTEGER NOT NULL)"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .expect("create");
        }
        tx.commit().await.expect("commit");
        Self {
            table,
            fail_on_amount: Arc::default(),
        }
    }

    pub fn fail_on(&self, amount: Option<i64>) {
        *self.fail_on_amount.lock().unwrap() = amount;
    }

    /// Balances by account, as committed.
    pub async fn balances(&self, store: &SqliteStore) -> std::collections::HashMap<String, i64> {
        sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(format!(
            "SELECT account, balance FROM {}_balances",
            self.table
        )))
        .fetch_all(store.reader())
        .await
        .expect("balances")
        .into_iter()
        .collect()
    }

    /// The handled positions as committed, with repeats, in order.
    pub async fn handled(&self, store: &SqliteStore) -> Vec<u64> {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
            "SELECT position FROM {}_handled ORDER BY position",
            self.table
        )))
        .fetch_all(store.reader())
        .await
        .expect("handled")
        .into_iter()
        .map(|p| p as u64)
        .collect()
    }
}

impl EventHandler<Tx> for Balances {
    type Event = AccountEvent;

    async fn handle(&mut self, tx: &mut Tx, e: &Envelope<AccountEvent>) -> Result<(), BoxError> {
        let delta = match &e.event {
            AccountEvent::Deposited(d) => d.amount,
            AccountEvent::Withdrawn(w) => -w.amount,
            AccountEvent::Opened(_) => 0,
        };
        if *self.fail_on_amount.lock().unwrap() == Some(delta) {
            return Err(format!("refusing amount {delta}").into());
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {}_balances (account, balance) VALUES (?1, ?2) \
             ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance",
            self.table
        )))
        .bind(&e.record.stream.aggregate_id)
        .bind(delta)
        .execute(&mut **tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {}_handled (position) VALUES (?1)",
            self.table
        )))
        .bind(e.position() as i64)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn reset(&mut self, tx: &mut Tx) -> Result<(), BoxError> {
        for table in ["balances", "handled"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {}_{table}",
                self.table
            )))
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}
