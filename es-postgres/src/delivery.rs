//! [`ExactlyOnce`]: the consumer runtime's delivery whose unit of work is a PostgreSQL
//! transaction, so a handler's writes and the checkpoint commit together.

use es_core::{Delivery, Error, ParkedEvent, check_checkpoint, check_name};
use sqlx::AssertSqlSafe;

use crate::error::{self, Phase};
use crate::rows;
use crate::store::PostgresStore;
use crate::tx::PgTx;

/// Exactly-once delivery for handlers whose effects live in the store's database.
///
/// Each batch runs in one [`PgTx`]: [`Delivery::begin`] opens it and locks the consumer's
/// checkpoint row (creating it at 0 if needed) before reading the checkpoint, the handler
/// writes its read model in it (`EventHandler<PgTx>`), and [`Delivery::commit`] moves the
/// checkpoint in it and commits. So:
///
/// - the read model and the checkpoint move together: a crash, a killed connection or a
///   dropped future between handling and commit rolls both back, and the batch is handled
///   again, once;
/// - two runners of one consumer (no lease, or two holders for a moment after a takeover)
///   never apply a batch twice: the second waits on the row lock and then reads the moved
///   checkpoint;
/// - parked events are written in the same transaction.
///
/// A running consumer holds two pooled connections while it works on a batch (the
/// transaction, and one to read the log).
///
/// ```no_run
/// # async fn demo(store: es_postgres::PostgresStore) -> Result<(), es_core::Error> {
/// use es_core::{AnyEvent, BoxError, Consumer, Envelope, EventHandler};
/// use es_postgres::{ExactlyOnce, PgTx};
///
/// struct Count;
/// impl EventHandler<PgTx> for Count {
///     type Event = AnyEvent;
///     async fn handle(&mut self, tx: &mut PgTx, e: &Envelope<AnyEvent>) -> Result<(), BoxError> {
///         sqlx::query("INSERT INTO seen (event_id) VALUES ($1)")
///             .bind(e.record.event_id)
///             .execute(tx.conn())
///             .await?;
///         Ok(())
///     }
/// }
///
/// let handle = Consumer::new("count", store.clone(), ExactlyOnce::new(store), Count).spawn();
/// # drop(handle); Ok(()) }
/// # let _ = demo;
/// ```
#[derive(Debug, Clone)]
pub struct ExactlyOnce {
    store: PostgresStore,
}

impl ExactlyOnce {
    /// Exactly-once delivery with checkpoints and parked events in `store`'s schema.
    pub fn new(store: PostgresStore) -> Self {
        Self { store }
    }

    /// The store.
    pub fn store(&self) -> &PostgresStore {
        &self.store
    }
}

impl Delivery for ExactlyOnce {
    type Tx = PgTx;
    const ATOMIC: bool = true;

    async fn begin(&self, consumer: &str) -> Result<(PgTx, u64), Error> {
        check_name(consumer, "consumer name")?;
        let mut tx = self.store.begin().await?;
        let locked: Result<i64, _> =
            sqlx::query_scalar(AssertSqlSafe(self.store.inner.sql.lock_checkpoint.clone()))
                .bind(consumer)
                .fetch_one(tx.conn())
                .await;
        match locked {
            Ok(position) => Ok((tx, rows::position(position, "checkpoint")?)),
            Err(e) => {
                tx.discard().await;
                Err(error::uncommitted(e))
            }
        }
    }

    async fn commit(
        &self,
        mut tx: PgTx,
        consumer: &str,
        position: u64,
        _flush: bool,
    ) -> Result<(), Error> {
        check_checkpoint(consumer, position)?;
        let position = i64::try_from(position)
            .map_err(|_| Error::Invalid(format!("checkpoint {position} exceeds i64")))?;
        sqlx::query(AssertSqlSafe(self.store.inner.sql.save_checkpoint.clone()))
            .bind(consumer)
            .bind(position)
            .execute(tx.conn())
            .await
            .map_err(error::uncommitted)?;
        tx.commit().await
    }

    async fn rollback(&self, tx: PgTx) -> Result<(), Error> {
        tx.rollback().await
    }

    async fn park(&self, tx: &mut PgTx, consumer: &str, parked: &ParkedEvent) -> Result<(), Error> {
        self.store
            .park_on(tx.conn(), consumer, parked, Phase::Uncommitted)
            .await
    }

    async fn unpark(&self, tx: &mut PgTx, consumer: &str, position: u64) -> Result<bool, Error> {
        self.store
            .unpark_on(tx.conn(), consumer, position, Phase::Uncommitted)
            .await
    }

    async fn parked(&self, consumer: &str) -> Result<Vec<ParkedEvent>, Error> {
        es_core::CheckpointStore::parked(&self.store, consumer).await
    }
}
