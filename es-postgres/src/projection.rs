//! Projections whose read models live in the same database: transactional (checkpoint and
//! effects commit together) and inline (inside the append's own transaction).

use std::future::Future;
use std::time::{Duration, Instant};

use es_core::{BoxError, Error, Progress, RecordedEvent};
use futures::future::BoxFuture;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgConnection;

use crate::store::{PostgresStore, backend};

/// A projection that runs inside every append's transaction (see
/// [`PostgresStore::with_inline_projection`]): when the append returns, the read model already
/// holds its events. Boxed futures keep it object-safe, so a store can hold several.
///
/// ```
/// use es_core::{BoxError, RecordedEvent};
/// use es_postgres::InlineProjection;
/// use futures::future::BoxFuture;
/// use sqlx::PgConnection;
///
/// struct StreamLengths;
///
/// impl InlineProjection for StreamLengths {
///     fn name(&self) -> &str { "stream-lengths" }
///     fn apply<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [RecordedEvent])
///         -> BoxFuture<'a, Result<(), BoxError>> {
///         Box::pin(async move {
///             if let Some(last) = events.last() {
///                 sqlx::query("INSERT INTO stream_lengths (id, len) VALUES ($1, $2) \
///                              ON CONFLICT (id) DO UPDATE SET len = excluded.len")
///                     .bind(last.stream.to_string())
///                     .bind(last.version as i64)
///                     .execute(&mut *tx)
///                     .await?;
///             }
///             Ok(())
///         })
///     }
/// }
/// # let _ = StreamLengths;
/// ```
pub trait InlineProjection: Send + Sync + 'static {
    /// Stable name, used in errors.
    fn name(&self) -> &str;

    /// Folds the events one append wrote into the read model, on the append's transaction.
    /// An error rolls the append back.
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), BoxError>>;
}

/// A projection whose read model lives in the store's database: each handler call receives
/// the transaction in which [`TransactionalRunner`] also advances the checkpoint, so every
/// event's effects are committed exactly once.
///
/// ```
/// use es_core::{BoxError, RecordedEvent};
/// use es_postgres::TransactionalProjection;
/// use sqlx::PgConnection;
///
/// struct Deposits;
///
/// impl TransactionalProjection for Deposits {
///     fn name(&self) -> &str { "deposits" }
///     fn event_names(&self) -> Option<&[&str]> { Some(&["MoneyDeposited"]) }
///     async fn handle(&mut self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
///         sqlx::query("INSERT INTO deposits (event_id) VALUES ($1)")
///             .bind(event.event_id)
///             .execute(&mut *tx)
///             .await?;
///         Ok(())
///     }
///     async fn reset(&mut self, tx: &mut PgConnection) -> Result<(), BoxError> {
///         sqlx::query("TRUNCATE deposits").execute(&mut *tx).await?;
///         Ok(())
///     }
/// }
/// # let _ = Deposits;
/// ```
pub trait TransactionalProjection: Send {
    /// Stable name; the key of its checkpoint.
    fn name(&self) -> &str;

    /// Names of the events it wants; others advance the checkpoint without a call.
    fn event_names(&self) -> Option<&[&str]> {
        None
    }

    /// Applies one event to the read model on `tx`.
    fn handle(
        &mut self,
        tx: &mut PgConnection,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Empties the read model on `tx` before a rebuild (in the same transaction that resets
    /// the checkpoint).
    fn reset(&mut self, tx: &mut PgConnection)
    -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Feeds a [`TransactionalProjection`] from the global log: one transaction per batch that
/// locks the checkpoint row, applies the batch and moves the checkpoint. Two runners of the
/// same projection take turns on the lock instead of applying a batch twice.
pub struct TransactionalRunner<P> {
    store: PostgresStore,
    projection: P,
    batch_size: usize,
}

impl<P: TransactionalProjection> TransactionalRunner<P> {
    /// A runner reading batches of 500 events.
    pub fn new(store: PostgresStore, projection: P) -> Self {
        Self {
            store,
            projection,
            batch_size: 500,
        }
    }

    /// Events per transaction.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// Gives the projection back.
    pub fn into_projection(self) -> P {
        self.projection
    }

    /// Applies one batch after the checkpoint; returns how many events it read (0: caught up).
    pub async fn step(&mut self) -> Result<usize, Error> {
        Ok(self.apply_batch().await?.map_or(0, |(n, _)| n))
    }

    /// One batch in one transaction: how many events and the last position, or `None` when
    /// there was nothing after the checkpoint.
    async fn apply_batch(&mut self) -> Result<Option<(usize, u64)>, Error> {
        let name = self.projection.name().to_owned();
        let mut tx = self.store.pool().begin().await.map_err(backend)?;
        let after: i64 = sqlx::query_scalar(AssertSqlSafe(self.store.lock_checkpoint_sql()))
            .bind(&name)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let after = u64::try_from(after).unwrap_or(0);
        let batch = self
            .store
            .read_all_in(&mut tx, after, self.batch_size)
            .await?;
        let Some(last) = batch.last().map(|e| e.position) else {
            tx.rollback().await.map_err(backend)?;
            return Ok(None);
        };
        for event in &batch {
            let wanted = self
                .projection
                .event_names()
                .is_none_or(|names| names.contains(&event.event_name.as_str()));
            if wanted {
                self.projection
                    .handle(&mut tx, event)
                    .await
                    .map_err(|source| Error::Projection {
                        projection: name.clone(),
                        position: event.position,
                        source,
                    })?;
            }
        }
        sqlx::query(AssertSqlSafe(self.store.save_checkpoint_sql()))
            .bind(&name)
            .bind(i64::try_from(last).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some((batch.len(), last)))
    }

    /// Applies batches until the log has nothing more after the checkpoint.
    pub async fn catch_up(&mut self) -> Result<Progress, Error> {
        self.catch_up_with(|_| {}).await
    }

    /// Like [`TransactionalRunner::catch_up`], calling `on_progress` after every batch
    /// (`total` is estimated from the head position when the run began).
    pub async fn catch_up_with(
        &mut self,
        mut on_progress: impl FnMut(Progress) + Send,
    ) -> Result<Progress, Error> {
        let began = Instant::now();
        let start = es_core::EventStore::load_checkpoint(&self.store, self.projection.name())
            .await?
            .unwrap_or(0);
        let head = es_core::EventStore::head_position(&self.store).await?;
        let mut progress = Progress {
            done: 0,
            total: head.saturating_sub(start),
            position: start,
            elapsed: Duration::ZERO,
        };
        while let Some((n, last)) = self.apply_batch().await? {
            progress.done += n as u64;
            progress.total = progress.total.max(progress.done);
            progress.position = last;
            progress.elapsed = began.elapsed();
            on_progress(progress);
        }
        progress.elapsed = began.elapsed();
        Ok(progress)
    }

    /// Empties the read model and resets the checkpoint in one transaction, then catches up.
    pub async fn rebuild(&mut self) -> Result<Progress, Error> {
        self.rebuild_with(|_| {}).await
    }

    /// Like [`TransactionalRunner::rebuild`], calling `on_progress` after every batch.
    pub async fn rebuild_with(
        &mut self,
        on_progress: impl FnMut(Progress) + Send,
    ) -> Result<Progress, Error> {
        let name = self.projection.name().to_owned();
        let mut tx = self.store.pool().begin().await.map_err(backend)?;
        sqlx::query(AssertSqlSafe(self.store.lock_checkpoint_sql()))
            .bind(&name)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        self.projection
            .reset(&mut tx)
            .await
            .map_err(|source| Error::Projection {
                projection: name.clone(),
                position: 0,
                source,
            })?;
        sqlx::query(AssertSqlSafe(self.store.save_checkpoint_sql()))
            .bind(&name)
            .bind(0i64)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        self.catch_up_with(on_progress).await
    }

    /// Catches up, then keeps applying new events as they commit (woken by the store's
    /// notifications, polling every `poll` otherwise) until `stop` resolves.
    pub async fn run_until(
        &mut self,
        poll: Duration,
        stop: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let mut listener = match sqlx::postgres::PgListener::connect_with(self.store.pool()).await {
            Ok(mut l) => match l.listen(self.store.channel()).await {
                Ok(()) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN failed; polling only");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "no listener connection; polling only");
                None
            }
        };
        let mut stop = std::pin::pin!(stop);
        loop {
            while self.step().await? > 0 {}
            let wait = async {
                match listener.as_mut() {
                    Some(l) => {
                        if let Ok(Err(e)) = tokio::time::timeout(poll, l.recv()).await {
                            tracing::warn!(error = %e, "listener failed; polling only");
                            listener = None;
                        }
                    }
                    None => tokio::time::sleep(poll).await,
                }
            };
            tokio::select! {
                () = &mut stop => return Ok(()),
                () = wait => {}
            }
        }
    }
}
