//! [`Transactional`]: the consumer runtime's exactly-once delivery on SQLite.

use chrono::Utc;
use es_core::{
    CheckpointStore, Delivery, Error, ParkedEvent, check_checkpoint, check_name, check_parked,
};

use crate::error::{Failure, db, retry_busy};
use crate::rows::{clamp_i64, micros};
use crate::store::park_query;
use crate::tx::Tx;
use crate::{SqliteStore, sql};

/// Exactly-once delivery: each batch runs in one SQLite write transaction ([`Tx`]) that
/// holds the handler's writes and moves the consumer's checkpoint, so both commit together
/// or not at all, across crashes and whatever future is dropped.
///
/// [`Delivery::begin`] takes the file's write lock and reads the checkpoint in the same
/// transaction, so two runners of one consumer (in any processes) never handle the same
/// batch twice. While a batch runs, other writers wait: keep batches short.
///
/// A handler that appends events does it through
/// [`SqliteStore::append_in`](crate::SqliteStore::append_in) with the `Tx` it is given:
/// calling [`append`](es_core::StreamStore::append) on the store instead would wait for the
/// write lock this transaction holds.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use es_core::prelude::*;
/// use es_core::{BoxError, Consumer, Envelope, EventHandler, NewEvent};
/// use es_sqlite::{SqliteStore, Tx};
///
/// #[event] pub struct Deposited { pub amount: i64 }
/// #[derive(Aggregate, Default)]
/// #[aggregate(events(Deposited))]
/// pub struct Wallet { balance: i64 }
/// impl Apply<Deposited> for Wallet { fn apply(&mut self, e: &Deposited) { self.balance += e.amount; } }
///
/// /// Balances in a table of the store's own file, moved with the checkpoint.
/// struct Balances;
/// impl EventHandler<Tx> for Balances {
///     type Event = WalletEvent;
///     async fn handle(&mut self, tx: &mut Tx, e: &Envelope<WalletEvent>) -> Result<(), BoxError> {
///         let WalletEvent::Deposited(d) = &e.event;
///         sqlx::query("INSERT INTO balances VALUES (?1, ?2) \
///                      ON CONFLICT (id) DO UPDATE SET balance = balance + excluded.balance")
///             .bind(&e.record.stream.aggregate_id)
///             .bind(d.amount)
///             .execute(&mut **tx)
///             .await?;
///         Ok(())
///     }
/// }
///
/// let store = SqliteStore::temporary().await?;
/// let mut tx = store.begin().await?;
/// sqlx::query("CREATE TABLE balances (id TEXT PRIMARY KEY, balance INTEGER NOT NULL)")
///     .execute(&mut *tx)
///     .await
///     .map_err(es_core::Error::backend)?;
/// tx.commit().await?;
///
/// let deposit = NewEvent::from_event(&Deposited { amount: 5 }, Metadata::new())?;
/// store.append(&StreamId::new("Wallet", "w-1"), ExpectedVersion::NoStream, vec![deposit]).await?;
/// let mut balances = Consumer::new("balances", store.clone(), store.transactional(), Balances);
/// balances.catch_up().await?;
/// let balance: i64 = sqlx::query_scalar("SELECT balance FROM balances WHERE id = 'w-1'")
///     .fetch_one(store.reader())
///     .await
///     .map_err(es_core::Error::backend)?;
/// assert_eq!(balance, 5);
/// # Ok::<(), es_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Transactional {
    store: SqliteStore,
}

impl SqliteStore {
    /// The exactly-once [`Delivery`] of consumers whose handlers write into this file.
    pub fn transactional(&self) -> Transactional {
        Transactional {
            store: self.clone(),
        }
    }
}

impl Transactional {
    /// The store the transactions run on.
    pub fn store(&self) -> &SqliteStore {
        &self.store
    }
}

impl Delivery for Transactional {
    type Tx = Tx;
    const ATOMIC: bool = true;

    async fn begin(&self, consumer: &str) -> Result<(Tx, u64), Error> {
        check_name(consumer, "consumer name")?;
        let inner = &self.store.inner;
        retry_busy(inner.options.lock_patience, || async {
            let mut tx = Tx::begin(&inner.writer, &inner.wakeup).await?;
            let position: Option<i64> = sqlx::query_scalar(sql::LOAD_CHECKPOINT)
                .bind(consumer)
                .fetch_optional(&mut *tx)
                .await
                .map_err(Failure::db)?;
            Ok((tx, position.map_or(0, |p| u64::try_from(p).unwrap_or(0))))
        })
        .await
    }

    async fn commit(
        &self,
        mut tx: Tx,
        consumer: &str,
        position: u64,
        _flush: bool,
    ) -> Result<(), Error> {
        if let Err(error) = check_checkpoint(consumer, position) {
            tx.rollback().await?;
            return Err(error);
        }
        sqlx::query(sql::SAVE_CHECKPOINT)
            .bind(consumer)
            .bind(clamp_i64(position))
            .bind(micros(Utc::now()))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await
    }

    async fn rollback(&self, tx: Tx) -> Result<(), Error> {
        tx.rollback().await
    }

    async fn park(&self, tx: &mut Tx, consumer: &str, parked: &ParkedEvent) -> Result<(), Error> {
        check_parked(consumer, parked)?;
        park_query(consumer, parked)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn unpark(&self, tx: &mut Tx, consumer: &str, position: u64) -> Result<bool, Error> {
        check_name(consumer, "consumer name")?;
        let Ok(position) = i64::try_from(position) else {
            return Ok(false);
        };
        let done = sqlx::query(sql::UNPARK)
            .bind(consumer)
            .bind(position)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn parked(&self, consumer: &str) -> Result<Vec<ParkedEvent>, Error> {
        self.store.parked(consumer).await
    }
}
