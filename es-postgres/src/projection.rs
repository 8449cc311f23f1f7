//! Inline projections: read models updated inside the append's own transaction.

use es_core::{BoxError, RecordedEvent};
use futures::future::BoxFuture;
use sqlx::postgres::PgConnection;

/// A projection that runs inside every append's transaction (see
/// [`PostgresStore::with_inline_projection`](crate::PostgresStore::with_inline_projection)):
/// when the append returns, the read model already holds its events. Boxed futures keep it
/// object-safe, so a store can hold several.
///
/// For read models updated after the commit, in batches and with their own checkpoint, run an
/// [`es_core::EventHandler`] with [`ExactlyOnce`](crate::ExactlyOnce) delivery instead.
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
///                     .bind(i64::try_from(last.version)?)
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
    /// An error rolls the append back. It runs only for events this append wrote: an
    /// identical retry that finds them stored does not run it again.
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), BoxError>>;
}
