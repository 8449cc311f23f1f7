//! [`PgTx`]: a transaction that a dropped future can never leave open on a pooled connection.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use es_core::Error;
use sqlx::pool::PoolConnection;
use sqlx::{Executor, PgConnection, PgPool, Postgres};

use crate::error;
use crate::sql;
use crate::wakeup::Signals;

/// A transaction on a pooled connection, opened by [`PostgresStore::begin`](crate::PostgresStore::begin).
///
/// It dereferences to the [`PgConnection`], so any sqlx query runs in it
/// (`sqlx::query(..).execute(&mut **tx)` or `.execute(tx.conn())`), and
/// [`PostgresStore::append_in`](crate::PostgresStore::append_in) appends in it.
///
/// **Cancellation.** From the moment `BEGIN` is queued until [`PgTx::commit`] or
/// [`PgTx::rollback`] has its answer, the transaction counts as open. Dropped while open (its
/// future cancelled at any await point, an error, a panic), it marks its connection to be
/// closed instead of returned to the pool: PostgreSQL then ends the session and rolls the
/// transaction back, and no later borrower can ever run inside it. A commit whose answer was
/// lost is reported as [`Error::OutcomeUnknown`].
///
/// sqlx's own `Pool::begin` is not used anywhere in this crate: sqlx 0.9 counts a transaction
/// as open only after `BEGIN` has been answered, so a future dropped during that round trip
/// returns the connection to the pool inside a server-side transaction.
///
/// Do not call sqlx's `begin()` on the dereferenced connection, nor send `COMMIT` or
/// `ROLLBACK` yourself: sqlx does not know this transaction, so it would issue a plain `BEGIN`
/// rather than a savepoint. Use `SAVEPOINT` statements for nested work.
pub struct PgTx {
    conn: PoolConnection<Postgres>,
    open: bool,
    appended: bool,
    signals: Arc<Signals>,
}

impl fmt::Debug for PgTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTx")
            .field("open", &self.open)
            .field("appended", &self.appended)
            .finish_non_exhaustive()
    }
}

impl PgTx {
    /// Takes a connection from `pool` and opens a transaction on it.
    pub(crate) async fn begin(pool: &PgPool, signals: Arc<Signals>) -> Result<Self, Error> {
        let conn = pool.acquire().await.map_err(error::acquire)?;
        // Open before BEGIN is sent: a drop from here on closes the connection.
        let mut tx = Self {
            conn,
            open: true,
            appended: false,
            signals,
        };
        tx.conn
            .execute(sqlx::raw_sql(sql::BEGIN))
            .await
            .map_err(error::uncommitted)?;
        Ok(tx)
    }

    /// The connection the transaction runs on.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Commits. [`Error::OutcomeUnknown`] if the answer was lost (the transaction committed
    /// whole or not at all: read to find out, or retry appends with the same event ids). A
    /// transaction in which a statement failed does not commit: PostgreSQL would roll it back
    /// and call that a commit, so this returns the failure instead.
    ///
    /// Appends made in the transaction wake the store's followers once it committed.
    pub async fn commit(mut self) -> Result<(), Error> {
        self.conn
            .execute(sqlx::raw_sql(sql::COMMIT))
            .await
            .map_err(error::committing)?;
        self.open = false;
        if self.appended {
            self.signals.committed();
        }
        Ok(())
    }

    /// Rolls back. If the rollback fails, the connection is closed rather than reused.
    pub async fn rollback(mut self) -> Result<(), Error> {
        self.conn
            .execute(sqlx::raw_sql(sql::ROLLBACK))
            .await
            .map_err(error::uncommitted)?;
        self.open = false;
        Ok(())
    }

    /// Rolls back, logging a failure (the connection is then closed, not reused): for paths
    /// that already have an answer to return.
    pub(crate) async fn discard(self) {
        if let Err(error) = self.rollback().await {
            tracing::debug!(%error, "rollback failed; the connection is closed");
        }
    }

    /// Records that events were appended in this transaction (followers are woken after the
    /// commit).
    pub(crate) fn appended(&mut self) {
        self.appended = true;
    }
}

impl Deref for PgTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for PgTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        if self.open {
            // The server ends the session, which rolls the transaction back. The connection is
            // never handed to another borrower.
            self.conn.close_on_drop();
        }
    }
}
