//! Reading ahead for consumers far behind the head.
//!
//! A consumer catching up (or rebuilding) reads the log page after page, and without help
//! every page costs a round trip, the frontier (a `pg_locks` scan) and the decoding of its
//! rows, while the database waits for the consumer to handle the page before it is asked for
//! the next one. When a read of [`GlobalLog::read_log`](es_core::GlobalLog::read_log) returns
//! a full page well below the frontier it computed, the store starts a task that reads the
//! following pages of the same filter, up to that frontier, with plain indexed reads (no
//! frontier of their own: every position below it is settled, see the crate docs) and
//! decodes them, while the consumer handles the current page. The next read from where the
//! page ended takes its events from that task.
//!
//! Nothing here changes what a read returns: positions below a frontier never change (the
//! table is append-only), so the pages are exactly those a fresh read would give, except that
//! a page that reaches the old frontier reports it as its `scanned_to` (a frontier computed a
//! little earlier, which is just as safe). Any trouble (an unreadable row, a failed read, a
//! task that went idle) makes the next read a fresh one, which reports it as usual.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use es_core::{LogFilter, RecordedEvent};
use futures::StreamExt;
use sqlx::{AssertSqlSafe, PgPool};
use tokio::sync::mpsc;

use crate::rows::EventRow;
use crate::sql::Sql;
use crate::store::{clamp_i64, storable_names};

/// Cursors kept at once (one per consumer catching up; the least recently used goes first).
const MAX_CURSORS: usize = 16;
/// Chunks read ahead of the consumer (with the one being read and the one being handed out,
/// a cursor holds at most about four chunks: some megabytes).
const CHUNKS_AHEAD: usize = 2;
/// Events per read of the task, at least.
const MIN_CHUNK: usize = 4_000;
/// A cursor nobody read for this long is dropped (its task ends).
const IDLE: Duration = Duration::from_secs(60);

/// The store's cursors.
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    cursors: Mutex<Vec<Cursor>>,
}

/// Pages of one filter, read ahead from `after` up to `end` (exclusive).
#[derive(Debug)]
pub(crate) struct Cursor {
    filter: LogFilter,
    after: u64,
    end: u64,
    buffer: VecDeque<RecordedEvent>,
    chunks: mpsc::Receiver<Chunk>,
    finished: bool,
    used: Instant,
}

#[derive(Debug)]
enum Chunk {
    /// The next events, in position order.
    Events(Vec<RecordedEvent>),
    /// Every event below the end was sent.
    End,
    /// The task stopped (a failed read, an unreadable row): read afresh.
    Failed,
}

/// A page taken from a cursor.
pub(crate) struct Page {
    pub(crate) events: Vec<RecordedEvent>,
    /// Where the page ends: the last event's position when it is full, else the cursor's
    /// end minus one.
    pub(crate) scanned_to: u64,
}

impl ReadAhead {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Cursor>> {
        self.cursors.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cursor that continues a read of `filter` after `after`, if one is running.
    pub(crate) fn take(&self, after: u64, filter: &LogFilter) -> Option<Cursor> {
        let mut cursors = self.lock();
        cursors.retain(|c| c.used.elapsed() < IDLE);
        let at = cursors
            .iter()
            .position(|c| c.after == after && c.filter == *filter)?;
        Some(cursors.swap_remove(at))
    }

    /// Keeps `cursor` for the next read.
    pub(crate) fn put(&self, mut cursor: Cursor) {
        cursor.used = Instant::now();
        let mut cursors = self.lock();
        if cursors.len() >= MAX_CURSORS
            && let Some(oldest) = cursors
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.used)
                .map(|(i, _)| i)
        {
            cursors.swap_remove(oldest);
        }
        cursors.push(cursor);
    }

    /// Starts reading `filter` after `after` up to `end` (exclusive) in the background.
    pub(crate) fn start(
        &self,
        pool: &PgPool,
        sql: &Arc<Sql>,
        filter: &LogFilter,
        after: u64,
        end: u64,
        page: usize,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (sender, chunks) = mpsc::channel(CHUNKS_AHEAD);
        runtime.spawn(fill(
            pool.clone(),
            sql.clone(),
            filter.clone(),
            after,
            end,
            page.max(MIN_CHUNK),
            sender,
        ));
        self.put(Cursor {
            filter: filter.clone(),
            after,
            end,
            buffer: VecDeque::new(),
            chunks,
            finished: false,
            used: Instant::now(),
        });
    }
}

impl Cursor {
    /// The next page of up to `limit` events, or `None` when the cursor failed (read afresh).
    pub(crate) async fn page(&mut self, limit: usize) -> Option<Page> {
        let mut events = Vec::with_capacity(limit);
        loop {
            let wanted = limit - events.len();
            if self.buffer.len() >= wanted || self.finished {
                let n = wanted.min(self.buffer.len());
                events.extend(self.buffer.drain(..n));
                break;
            }
            events.extend(self.buffer.drain(..));
            match self.chunks.recv().await {
                Some(Chunk::Events(chunk)) => {
                    if events.is_empty() && chunk.len() == limit {
                        // The common case: a chunk is exactly the page.
                        events = chunk;
                        break;
                    }
                    self.buffer.extend(chunk);
                }
                Some(Chunk::End) => self.finished = true,
                Some(Chunk::Failed) | None => return None,
            }
        }
        let scanned_to = match events.last() {
            Some(last) if events.len() == limit => last.position,
            _ => self.end.saturating_sub(1).max(self.after),
        };
        if let Some(last) = events.last() {
            self.after = last.position;
        }
        Some(Page { events, scanned_to })
    }

    /// Whether every event below the end was handed out.
    pub(crate) fn exhausted(&self) -> bool {
        self.finished && self.buffer.is_empty()
    }

    /// Where the next page starts.
    pub(crate) fn after(&self) -> u64 {
        self.after
    }
}

/// The task behind a cursor: reads chunks of `chunk` events after `after` below `end`,
/// decoded, until none is left, the cursor is dropped, or nobody reads for [`IDLE`].
async fn fill(
    pool: PgPool,
    sql: Arc<Sql>,
    filter: LogFilter,
    mut after: u64,
    end: u64,
    chunk: usize,
    sender: mpsc::Sender<Chunk>,
) {
    let statement = if filter.event_names.is_some() {
        sql.read_range_names.clone()
    } else if filter.aggregate_types.is_some() {
        sql.read_range_types.clone()
    } else {
        sql.read_range_all.clone()
    };
    let types = storable_names(&filter.aggregate_types);
    let names = storable_names(&filter.event_names);
    let send = |item: Chunk| {
        let sender = sender.clone();
        async move {
            matches!(
                tokio::time::timeout(IDLE, sender.send(item)).await,
                Ok(Ok(()))
            )
        }
    };
    loop {
        // Decoded as the rows arrive, straight into the events the consumer gets.
        let mut rows = sqlx::query_as::<_, EventRow>(AssertSqlSafe(statement.clone()))
            .bind(clamp_i64(after))
            .bind(clamp_i64(end))
            .bind(&types)
            .bind(&names)
            .bind(filter.recorded_from)
            .bind(i64::try_from(chunk).unwrap_or(i64::MAX))
            .fetch(&pool);
        let mut events = Vec::with_capacity(chunk);
        let mut unreadable = false;
        let mut failed = false;
        while let Some(row) = rows.next().await {
            match row.map(RecordedEvent::try_from) {
                Ok(Ok(event)) => events.push(event),
                Ok(Err(_)) => {
                    unreadable = true;
                    break;
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        drop(rows);
        if failed {
            send(Chunk::Failed).await;
            return;
        }
        let full = events.len() == chunk;
        if let Some(last) = events.last() {
            after = last.position;
        }
        if !events.is_empty() && !send(Chunk::Events(events)).await {
            return;
        }
        if unreadable {
            send(Chunk::Failed).await;
            return;
        }
        if !full {
            send(Chunk::End).await;
            return;
        }
    }
}
