//! [`Tx`]: a write transaction on the store's writer connection that can be dropped at any
//! point without leaving the connection inside a transaction.

use std::ops::{Deref, DerefMut};

use es_core::{Error, WakeupSender};
use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection, SqlitePool};

use crate::error::{Failure, commit_failed, db};

/// A write transaction (`BEGIN IMMEDIATE`) on the store's writer connection.
///
/// It derefs to [`SqliteConnection`], so a handler runs its own statements in it:
/// `sqlx::query("...").execute(&mut **tx)`. Appends can join it through
/// [`SqliteStore::append_in`](crate::SqliteStore::append_in); they wake followers when it
/// commits.
///
/// **Dropping it rolls back.** sqlx's own `Transaction` rolls back on drop by queueing a
/// `ROLLBACK` that a later user of the pooled connection runs first; this type instead issues
/// its own `BEGIN IMMEDIATE` and, when dropped before [`Tx::commit`] or [`Tx::rollback`]
/// finished, marks the connection to be closed rather than returned to the pool
/// (`PoolConnection::close_on_drop`). Closing an SQLite connection rolls back whatever it
/// had not committed, and nothing else can run on it meanwhile: a future dropped at any
/// await point never leaves a pooled connection inside a transaction, and a batch is
/// committed whole or not at all.
///
/// Holding a `Tx` holds the file's single write lock: other writers, in this process and in
/// others, wait until it ends. Keep it short.
pub struct Tx {
    conn: PoolConnection<Sqlite>,
    /// `BEGIN` may have run and neither `COMMIT` nor `ROLLBACK` has completed.
    open: bool,
    /// An append into this transaction started and did not finish (its future was dropped):
    /// the transaction may hold part of a batch and must not commit.
    pub(crate) appending: bool,
    /// An append into this transaction succeeded: wake followers after the commit.
    pub(crate) appended: bool,
    wakeup: WakeupSender,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("open", &self.open)
            .field("appended", &self.appended)
            .finish_non_exhaustive()
    }
}

impl Tx {
    /// Takes the writer connection and begins an immediate (write-locking) transaction.
    pub(crate) async fn begin(writer: &SqlitePool, wakeup: &WakeupSender) -> Result<Tx, Failure> {
        let conn = writer.acquire().await.map_err(|e| Failure::Error(db(e)))?;
        let mut tx = Tx {
            conn,
            // From here on a drop closes the connection: the BEGIN below may have run on the
            // connection's worker thread even if this future is dropped before it reports.
            open: true,
            appending: false,
            appended: false,
            wakeup: wakeup.clone(),
        };
        match sqlx::query("BEGIN IMMEDIATE").execute(&mut *tx.conn).await {
            Ok(_) => Ok(tx),
            Err(error) => {
                // A BEGIN that failed started no transaction: the connection can be reused.
                tx.open = false;
                Err(Failure::db(error))
            }
        }
    }

    /// Commits. An error means the outcome is unknown ([`Error::OutcomeUnknown`]): the
    /// connection is closed, and a read tells whether the transaction's writes are there.
    pub async fn commit(mut self) -> Result<(), Error> {
        if self.appending {
            self.finish("ROLLBACK").await.map_err(db)?;
            return Err(Error::Invalid(
                "an append into this transaction was dropped midway; the transaction was rolled back"
                    .into(),
            ));
        }
        self.finish("COMMIT").await.map_err(commit_failed)?;
        if self.appended {
            self.wakeup.notify();
        }
        Ok(())
    }

    /// Rolls back. On error the connection is closed, which rolls back too.
    pub async fn rollback(mut self) -> Result<(), Error> {
        self.finish("ROLLBACK").await.map_err(db)
    }

    async fn finish(&mut self, statement: &'static str) -> Result<(), sqlx::Error> {
        sqlx::query(statement).execute(&mut *self.conn).await?;
        self.open = false;
        Ok(())
    }
}

impl Deref for Tx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            // Not returned to the pool: closing the connection rolls back what it did not
            // commit, after any statement still queued on its worker thread.
            self.conn.close_on_drop();
        }
    }
}
