//! The global log of a [`PostgresStore`]: filtered pages below the safe frontier, the head,
//! and wake-ups.

use es_core::{Error, GlobalLog, LogFilter, LogPage, RecordedEvent, Wakeup};
use sqlx::{AssertSqlSafe, PgConnection};

use crate::error;
use crate::rows::{self, LogRow};
use crate::store::{PostgresStore, clamp_i64, storable_names};

impl PostgresStore {
    /// [`GlobalLog::read_log`] on a connection the caller controls (for example inside its
    /// own transaction). The transaction must be READ COMMITTED (PostgreSQL's default): the
    /// read takes its snapshot after computing the safe frontier, which a REPEATABLE READ
    /// snapshot taken earlier would defeat, so such reads are refused with [`Error::Invalid`].
    pub async fn read_log_in(
        &self,
        conn: &mut PgConnection,
        after: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogPage, Error> {
        let empty = LogPage {
            events: Vec::new(),
            scanned_to: after,
        };
        if limit == 0 {
            return Ok(empty);
        }
        // Nothing is stored beyond i64::MAX.
        let Ok(after_i64) = i64::try_from(after) else {
            return Ok(empty);
        };
        // A bound beyond i64::MAX bounds nothing that can be stored.
        let before = filter
            .before_position
            .filter(|&before| i64::try_from(before).is_ok());
        if before.is_some_and(|before| before <= after.saturating_add(1)) {
            return Ok(empty);
        }
        let rows: Vec<LogRow> = sqlx::query_as(AssertSqlSafe(self.inner.sql.read_log.clone()))
            .bind(after_i64)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(storable_names(&filter.aggregate_types))
            .bind(storable_names(&filter.event_names))
            .bind(filter.recorded_from)
            .bind(before.map(clamp_i64))
            .fetch_all(&mut *conn)
            .await
            .map_err(error::uncommitted)?;
        let mut frontier = None;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                // The first unreadable row fails the page: what precedes it is delivered by a
                // read bounded before it (see GlobalLogExt::subscribe and the consumer runtime).
                LogRow::Event(event) => events.push(RecordedEvent::try_from(event)?),
                LogRow::Frontier(at) => frontier = Some(rows::position(at, "frontier")?),
            }
        }
        let Some(frontier) = frontier else {
            return Err(Error::backend("es_read_log returned no frontier"));
        };
        let scanned_to = match events.last() {
            Some(last) if events.len() == limit => last.position,
            _ => {
                // Every position below the frontier (and below `before`) was considered.
                let end = before.map_or(frontier, |before| frontier.min(before));
                end.saturating_sub(1)
            }
        };
        Ok(LogPage {
            events,
            scanned_to: scanned_to.max(after),
        })
    }
}

impl GlobalLog for PostgresStore {
    async fn read_log(
        &self,
        after: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogPage, Error> {
        if limit == 0 {
            return Ok(LogPage {
                events: Vec::new(),
                scanned_to: after,
            });
        }
        let mut conn = self.pool.acquire().await.map_err(error::acquire)?;
        self.read_log_in(&mut conn, after, limit, filter).await
    }

    async fn head_position(&self) -> Result<u64, Error> {
        let head: i64 = sqlx::query_scalar(AssertSqlSafe(self.inner.sql.head_position.clone()))
            .fetch_one(&self.pool)
            .await
            .map_err(error::uncommitted)?;
        rows::position(head, "head position")
    }

    fn wakeup(&self) -> Wakeup {
        self.inner.listener.wakeup()
    }
}
