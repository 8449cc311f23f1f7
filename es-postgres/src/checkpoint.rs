//! Consumer checkpoints and parked events of a [`PostgresStore`].

use es_core::{
    CheckpointStore, Error, ParkedEvent, check_checkpoint, check_i64, check_name, check_stream,
};
use sqlx::{AssertSqlSafe, PgConnection};

use crate::error;
use crate::rows::{self, ParkedRow};
use crate::store::PostgresStore;

/// Text PostgreSQL can hold: NUL becomes U+FFFD (an error message is free text from a
/// handler; it must not make parking fail).
fn storable_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}").into()
    } else {
        text.into()
    }
}

impl PostgresStore {
    /// Parks `parked` for `consumer` on `conn` (in the caller's transaction, or autocommit).
    pub(crate) async fn park_on(
        &self,
        conn: &mut PgConnection,
        consumer: &str,
        parked: &ParkedEvent,
        phase: error::Phase,
    ) -> Result<(), Error> {
        check_checkpoint(consumer, parked.position)?;
        check_stream(&parked.stream)?;
        check_i64(parked.version, "parked version")?;
        // Both checked above.
        let position = i64::try_from(parked.position)
            .map_err(|_| Error::Invalid(format!("position {} exceeds i64", parked.position)))?;
        let version = i64::try_from(parked.version)
            .map_err(|_| Error::Invalid(format!("version {} exceeds i64", parked.version)))?;
        // More attempts than i32 holds are recorded as i32::MAX.
        let attempts = i32::try_from(parked.attempts).unwrap_or(i32::MAX);
        sqlx::query(AssertSqlSafe(self.inner.sql.park.clone()))
            .bind(consumer)
            .bind(position)
            .bind(parked.event_id)
            .bind(&parked.stream.aggregate_type)
            .bind(&parked.stream.aggregate_id)
            .bind(version)
            .bind(storable_text(&parked.event_name))
            .bind(storable_text(&parked.error))
            .bind(attempts)
            .bind(parked.parked_at)
            .execute(&mut *conn)
            .await
            .map_err(|e| error::classify(e, phase))?;
        Ok(())
    }

    /// Removes a parked event on `conn`; whether there was one.
    pub(crate) async fn unpark_on(
        &self,
        conn: &mut PgConnection,
        consumer: &str,
        position: u64,
        phase: error::Phase,
    ) -> Result<bool, Error> {
        let Ok(position) = i64::try_from(position) else {
            return Ok(false);
        };
        let done = sqlx::query(AssertSqlSafe(self.inner.sql.unpark.clone()))
            .bind(consumer)
            .bind(position)
            .execute(&mut *conn)
            .await
            .map_err(|e| error::classify(e, phase))?;
        Ok(done.rows_affected() > 0)
    }
}

impl CheckpointStore for PostgresStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, Error> {
        check_name(name, "consumer name")?;
        let position: Option<i64> =
            sqlx::query_scalar(AssertSqlSafe(self.inner.sql.load_checkpoint.clone()))
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(error::uncommitted)?;
        position
            .map(|p| rows::position(p, "checkpoint"))
            .transpose()
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), Error> {
        check_checkpoint(name, position)?;
        let position = i64::try_from(position)
            .map_err(|_| Error::Invalid(format!("checkpoint {position} exceeds i64")))?;
        sqlx::query(AssertSqlSafe(self.inner.sql.save_checkpoint.clone()))
            .bind(name)
            .bind(position)
            .execute(&self.pool)
            .await
            .map_err(error::committing)?;
        Ok(())
    }

    async fn park(&self, consumer: &str, parked: &ParkedEvent) -> Result<(), Error> {
        check_checkpoint(consumer, parked.position)?;
        let mut conn = self.pool.acquire().await.map_err(error::acquire)?;
        self.park_on(&mut conn, consumer, parked, error::Phase::Committing)
            .await
    }

    async fn parked(&self, consumer: &str) -> Result<Vec<ParkedEvent>, Error> {
        check_name(consumer, "consumer name")?;
        let rows: Vec<ParkedRow> = sqlx::query_as(AssertSqlSafe(self.inner.sql.parked.clone()))
            .bind(consumer)
            .fetch_all(&self.pool)
            .await
            .map_err(error::uncommitted)?;
        rows.into_iter().map(ParkedEvent::try_from).collect()
    }

    async fn unpark(&self, consumer: &str, position: u64) -> Result<bool, Error> {
        check_name(consumer, "consumer name")?;
        let mut conn = self.pool.acquire().await.map_err(error::acquire)?;
        self.unpark_on(&mut conn, consumer, position, error::Phase::Committing)
            .await
    }
}
