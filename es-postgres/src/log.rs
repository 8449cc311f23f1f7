//! The global log of a [`PostgresStore`]: filtered pages below the safe frontier, the head,
//! and wake-ups.

use es_core::{Error, GlobalLog, LogFilter, LogPage, RecordedEvent, Wakeup};
use sqlx::{AssertSqlSafe, PgConnection, PgExecutor};

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
        Ok(self.read_page(conn, after, limit, filter).await?.0)
    }

    /// A page, and the end (exclusive) of what the read settled: the frontier, or the
    /// filter's `before` bound if lower (`None` when nothing was read).
    async fn read_page(
        &self,
        conn: &mut PgConnection,
        after: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<(LogPage, Option<u64>), Error> {
        let Some(request) = PageRequest::new(after, limit, filter) else {
            return Ok((empty_page(after), None));
        };
        let rows = self
            .page_rows(&mut *conn, &request, filter)
            .await
            .map_err(error::uncommitted)?;
        request.page(rows)
    }

    /// The rows of `es_read_log` for `request`: the events, then the frontier.
    async fn page_rows<'c>(
        &self,
        executor: impl PgExecutor<'c>,
        request: &PageRequest,
        filter: &LogFilter,
    ) -> Result<Vec<LogRow>, sqlx::Error> {
        sqlx::query_as(AssertSqlSafe(self.inner.sql.read_log.clone()))
            .bind(request.after_i64)
            .bind(i64::try_from(request.limit).unwrap_or(i64::MAX))
            .bind(storable_names(&filter.aggregate_types))
            .bind(storable_names(&filter.event_names))
            .bind(filter.recorded_from)
            .bind(request.before.map(clamp_i64))
            .fetch_all(executor)
            .await
    }
}

/// A page with nothing in it, scanned to `after`.
fn empty_page(after: u64) -> LogPage {
    LogPage {
        events: Vec::new(),
        scanned_to: after,
    }
}

/// A read of the log that can return something: `after` within what can be stored, a
/// `limit` above zero, a `before` bound above `after + 1`.
struct PageRequest {
    after: u64,
    after_i64: i64,
    limit: usize,
    /// The filter's `before` bound, if it bounds anything that can be stored.
    before: Option<u64>,
}

impl PageRequest {
    fn new(after: u64, limit: usize, filter: &LogFilter) -> Option<Self> {
        if limit == 0 {
            return None;
        }
        // Nothing is stored beyond i64::MAX.
        let after_i64 = i64::try_from(after).ok()?;
        // A bound beyond i64::MAX bounds nothing that can be stored.
        let before = filter
            .before_position
            .filter(|&before| i64::try_from(before).is_ok());
        if before.is_some_and(|before| before <= after.saturating_add(1)) {
            return None;
        }
        Some(Self {
            after,
            after_i64,
            limit,
            before,
        })
    }

    /// The page `rows` make, and the end (exclusive) of what the read settled.
    fn page(&self, rows: Vec<LogRow>) -> Result<(LogPage, Option<u64>), Error> {
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
        // Every position below `end` was considered.
        let end = self.before.map_or(frontier, |before| frontier.min(before));
        let scanned_to = match events.last() {
            Some(last) if events.len() == self.limit => last.position,
            _ => end.saturating_sub(1),
        };
        Ok((
            LogPage {
                events,
                scanned_to: scanned_to.max(self.after),
            },
            Some(end),
        ))
    }
}

/// Reads of the log are filtered in the database and never pass the frontier (see the crate
/// docs). A consumer far behind the head gets help: after a full page well below the
/// frontier, the following pages up to that frontier are read and decoded in the background
/// while it handles the current one ([`StoreOptions::read_ahead`](crate::StoreOptions::read_ahead)).
impl GlobalLog for PostgresStore {
    async fn read_log(
        &self,
        after: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogPage, Error> {
        if limit == 0 {
            return Ok(empty_page(after));
        }
        let read_ahead = self.inner.read_ahead.as_ref();
        // A failed cursor gives no page: the read below is afresh, and reports any error.
        if let Some(mut cursor) = read_ahead.and_then(|r| r.take(after, filter))
            && let Some(page) = cursor.page(limit).await
        {
            if let Some(read_ahead) = read_ahead
                && !cursor.exhausted()
                && page.events.len() == limit
                && cursor.after() == page.scanned_to
            {
                read_ahead.put(cursor);
            }
            return Ok(LogPage {
                events: page.events,
                scanned_to: page.scanned_to,
            });
        }
        let Some(request) = PageRequest::new(after, limit, filter) else {
            return Ok(empty_page(after));
        };
        let rows = self
            .read(|| self.page_rows(&self.pool, &request, filter))
            .await?;
        let (page, end) = request.page(rows)?;
        if let (Some(read_ahead), Some(end)) = (read_ahead, end)
            && page.events.len() == limit
            && end.saturating_sub(page.scanned_to) > limit as u64
        {
            read_ahead.start(
                &self.pool,
                &self.inner.sql,
                filter,
                page.scanned_to,
                end,
                limit,
            );
        }
        Ok(page)
    }

    async fn head_position(&self) -> Result<u64, Error> {
        let head: i64 = self
            .read(|| {
                sqlx::query_scalar(AssertSqlSafe(self.inner.sql.head_position.clone()))
                    .fetch_one(&self.pool)
            })
            .await?;
        rows::position(head, "head position")
    }

    fn wakeup(&self) -> Wakeup {
        self.inner.listener.wakeup()
    }
}
