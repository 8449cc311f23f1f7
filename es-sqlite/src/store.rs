//! [`SqliteStore`]: the es-core store traits on one SQLite file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use es_core::{
    CheckpointStore, Error, ExpectedVersion, GlobalLog, Limits, LogFilter, LogPage, NewEvent,
    ParkedEvent, RecordedEvent, ReplayEvent, Snapshot, SnapshotStore, StreamId, StreamQuery,
    StreamStore, Wakeup, WakeupSender, check_checkpoint, check_name, check_parked, check_stream,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, SqliteConnection};
use uuid::Uuid;

use crate::error::{Failure, db, is_unique_violation, retry_busy};
use crate::options::{Durability, StoreOptions};
use crate::rows::{ceil_micros, clamp_i64, decode_load, micros, now};
use crate::sql::{self, AppendHead, EventRow, LoadRow, LogRow, ParkedRow, SnapshotRow};
use crate::temp::TempDir;
use crate::tx::Tx;
use crate::watcher::Watcher;

/// How long the writer connection waits inside SQLite for another process's write lock
/// before the store's retry loop takes over. SQLite's busy handler sleeps 1, 2, 5, 10 ms
/// and then ever longer, up to 100 ms, between tries: a waiting process then rarely meets
/// the short gap between a busy process's transactions. Slices of this length, retried
/// after a millisecond or two, keep trying every few milliseconds for as long as the store
/// waits ([`StoreOptions::lock_patience`]).
const WRITER_BUSY_SLICE: std::time::Duration = std::time::Duration::from_millis(20);

/// The schema's migrations, embedded from `es-sqlite/migrations`; [`SqliteStore::open`] runs
/// them.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// An [`EventStore`](es_core::EventStore) in one SQLite file. Clones share the same
/// connections.
///
/// See the [crate docs](crate) for the schema, the guarantees and how several processes
/// share a file.
///
/// ```no_run
/// # async fn demo() -> Result<(), es_core::Error> {
/// use es_core::{ExpectedVersion, Metadata, NewEvent, StreamId, StreamQuery, StreamStore};
/// use es_sqlite::SqliteStore;
///
/// let store = SqliteStore::open("events.db").await?; // creates and migrates the file
/// let stream = StreamId::new("Counter", "c-1");
/// let event = NewEvent {
///     event_id: uuid::Uuid::now_v7(),
///     event_name: "Incremented".into(),
///     schema_version: 1,
///     payload: serde_json::value::to_raw_value(&serde_json::json!({ "by": 2 }))
///         .map_err(es_core::Error::Encode)?,
///     metadata: Metadata::by_user("u-1"),
/// };
/// store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
/// assert_eq!(store.read_stream(&stream, &StreamQuery::all()).await?.len(), 1);
/// # Ok(())
/// # }
/// # let _ = demo;
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    path: PathBuf,
    pub(crate) reader: SqlitePool,
    pub(crate) writer: SqlitePool,
    pub(crate) wakeup: WakeupSender,
    pub(crate) options: StoreOptions,
    _watcher: Watcher,
    /// Last: the directory of a temporary store goes once everything else is dropped.
    _temp: Option<TempDir>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("durability", &self.inner.options.durability)
            .finish_non_exhaustive()
    }
}

/// The outcome of an append attempt inside a write transaction.
enum Appended {
    /// The batch was inserted from this version and position on, at this time.
    New {
        first_version: u64,
        first_position: u64,
        recorded_at: DateTime<Utc>,
    },
    /// Every event was already stored with the same content: the events as first stored.
    Stored(Vec<RecordedEvent>),
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` with default [`StoreOptions`], and
    /// brings its schema up to date.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(path, StoreOptions::default()).await
    }

    /// Opens (creating if needed) the store at `path`, and brings its schema up to date.
    /// Several processes may open the same file; see the [crate docs](crate).
    pub async fn open_with(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, Error> {
        Self::open_inner(path.as_ref().to_owned(), options, None).await
    }

    /// A store in a fresh file in a new directory under the system's temporary directory,
    /// removed when the last clone of the store is dropped: for tests and demos.
    pub async fn temporary() -> Result<Self, Error> {
        Self::temporary_with(StoreOptions::default()).await
    }

    /// [`SqliteStore::temporary`] with `options`.
    pub async fn temporary_with(options: StoreOptions) -> Result<Self, Error> {
        let dir = TempDir::new().map_err(Error::backend)?;
        let path = dir.path().join("events.db");
        Self::open_inner(path, options, Some(dir)).await
    }

    async fn open_inner(
        path: PathBuf,
        options: StoreOptions,
        temp: Option<TempDir>,
    ) -> Result<Self, Error> {
        let synchronous = match options.durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        };
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(options.create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .foreign_keys(true);
        // Reads wait inside SQLite (they rarely meet a lock in WAL mode, and callers may use
        // the reader pool directly); the writer waits a short slice at a time and the store's
        // own loop tries again (see `error::retry_busy`).
        let read_only = connect
            .clone()
            .busy_timeout(options.busy_timeout)
            .pragma("query_only", "ON");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(options.lock_patience)
            .test_before_acquire(false)
            .connect_lazy_with(connect.busy_timeout(WRITER_BUSY_SLICE));
        migrate(&writer, &options).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.readers)
            .min_connections(0)
            .acquire_timeout(options.lock_patience)
            .test_before_acquire(false)
            .connect_lazy_with(read_only.clone());
        let wakeup = WakeupSender::new();
        let watcher = Watcher::spawn(read_only, options.change_poll, wakeup.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                reader,
                writer,
                wakeup,
                options,
                _watcher: watcher,
                _temp: temp,
            }),
        })
    }

    /// The file this store keeps its data in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The input limits this store enforces.
    pub fn limits(&self) -> &Limits {
        &self.inner.options.limits
    }

    /// The pool of read-only connections, for queries of read models kept in the same file.
    pub fn reader(&self) -> &SqlitePool {
        &self.inner.reader
    }

    /// Begins a write transaction on the store's writer connection, retrying while another
    /// process holds the file's write lock (see [`StoreOptions::lock_patience`]).
    pub async fn begin(&self) -> Result<Tx, Error> {
        retry_busy(self.inner.options.lock_patience, || {
            Tx::begin(&self.inner.writer, &self.inner.wakeup)
        })
        .await
    }

    /// Appends inside `tx`, with the same checks and outcomes as
    /// [`StreamStore::append`]; the events are committed (and followers woken) with `tx`.
    ///
    /// A failed append leaves `tx` as it was. Dropping this future midway makes
    /// [`Tx::commit`] refuse (the transaction may hold part of the batch): roll back.
    pub async fn append_in(
        &self,
        tx: &mut Tx,
        stream: &StreamId,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.limits().check_append(stream, expected, &mut events)?;
        tx.appending = true;
        sqlx::query("SAVEPOINT es_append")
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        let outcome = append_into(tx, stream, expected, &events).await;
        let finish = match outcome {
            Ok(Appended::New { .. }) => "RELEASE es_append",
            _ => "ROLLBACK TO es_append; RELEASE es_append",
        };
        sqlx::query(finish).execute(&mut **tx).await.map_err(db)?;
        tx.appending = false;
        match outcome.map_err(|failure| match failure {
            Failure::Error(error) => error,
            Failure::Busy(error) => db(error),
        })? {
            Appended::New {
                first_version,
                first_position,
                recorded_at,
            } => {
                tx.appended |= !events.is_empty();
                Ok(recorded(
                    stream,
                    events,
                    first_version,
                    first_position,
                    recorded_at,
                ))
            }
            Appended::Stored(stored) => Ok(stored),
        }
    }

    /// The events consumer `consumer` parked, by position.
    async fn parked_events(&self, consumer: &str) -> Result<Vec<ParkedEvent>, Error> {
        check_name(consumer, "consumer name")?;
        let rows: Vec<ParkedRow> = self
            .read(|conn| sqlx::query_as(sql::PARKED).bind(consumer).fetch_all(conn))
            .await?;
        rows.into_iter().map(ParkedRow::decode).collect()
    }

    /// Runs `statement` on a reader connection, retrying while the file is busy.
    async fn read<'a, T, F, Fut>(&'a self, statement: F) -> Result<T, Error>
    where
        F: Fn(&'a SqlitePool) -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        let pool = &self.inner.reader;
        retry_busy(self.inner.options.lock_patience, || {
            let run = statement(pool);
            async move { run.await.map_err(Failure::db) }
        })
        .await
    }

    /// Runs one autocommit write statement on the writer connection, retrying while the file
    /// is busy; the number of rows it changed.
    pub(crate) async fn write_one<'a, F>(&'a self, statement: F) -> Result<u64, Error>
    where
        F: Fn() -> sqlx::query::Query<'a, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    {
        retry_busy(self.inner.options.lock_patience, || {
            let query = statement();
            async move {
                let mut conn = self
                    .inner
                    .writer
                    .acquire()
                    .await
                    .map_err(|e| Failure::Error(db(e)))?;
                let done = query.execute(&mut *conn).await.map_err(Failure::db)?;
                Ok(done.rows_affected())
            }
        })
        .await
    }
}

/// Creates or updates the schema in one immediate transaction, so that processes opening a
/// new file together migrate it once.
async fn migrate(writer: &SqlitePool, options: &StoreOptions) -> Result<(), Error> {
    retry_busy(options.lock_patience, || async {
        let mut conn = writer.acquire().await.map_err(|e| Failure::Error(db(e)))?;
        // sqlx's own transaction here (not `Tx`): the migrator nests its per-migration
        // transactions as savepoints inside it. Dropped midway, it queues a ROLLBACK that the
        // connection's worker runs before anything else.
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Failure::db)?;
        match MIGRATOR.run(&mut *tx).await {
            Ok(()) => {}
            Err(sqlx::migrate::MigrateError::Execute(error)) => return Err(Failure::db(error)),
            Err(error) => return Err(Failure::Error(Error::backend(error))),
        }
        tx.commit().await.map_err(Failure::db)
    })
    .await
}

/// The records of a batch inserted from `first_version` and `first_position`.
fn recorded(
    stream: &StreamId,
    events: Vec<NewEvent>,
    first_version: u64,
    first_position: u64,
    recorded_at: DateTime<Utc>,
) -> Vec<RecordedEvent> {
    events
        .into_iter()
        .zip(0u64..)
        .map(|(event, offset)| {
            event.into_recorded(
                stream.clone(),
                first_version + offset,
                first_position + offset,
                recorded_at,
            )
        })
        .collect()
}

/// One append in an open write transaction: reads the stream's version and the log's head
/// (under the write lock, so nothing changes them until the commit), checks the expectation,
/// and inserts the batch at the next versions and positions. Stored ids are found on the
/// way: through the expectation failing, or the unique key on `event_id`.
async fn append_into(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<Appended, Failure> {
    let head: AppendHead = sqlx::query_as(sql::APPEND_HEAD)
        .bind(&stream.aggregate_type)
        .bind(&stream.aggregate_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(Failure::db)?;
    let actual = u64::try_from(head.version).unwrap_or(0);
    if !expected.accepts(actual) {
        return match stored_batch(conn, stream, events).await? {
            Some(stored) => Ok(Appended::Stored(stored)),
            None => Err(Failure::Error(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual,
            })),
        };
    }
    let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
    if head.version.checked_add(count).is_none() || head.head.checked_add(count).is_none() {
        return Err(Failure::Error(Error::Invalid(format!(
            "appending {count} events to {stream} would pass the largest storable version or position"
        ))));
    }
    let recorded_at = now();
    let at = micros(recorded_at);
    let mut done = 0;
    while done < events.len() {
        let remaining = events.len() - done;
        let rows = sql::INSERT_CHUNKS
            .into_iter()
            .find(|&rows| rows <= remaining)
            .unwrap_or(1);
        let mut insert = sqlx::query(sql::insert_events(rows));
        let first = i64::try_from(done).unwrap_or(i64::MAX);
        for (offset, event) in (first..).zip(&events[done..done + rows]) {
            let extra = if event.metadata.extra.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&event.metadata.extra).map_err(Error::Encode)?)
            };
            insert = insert
                .bind(head.head + 1 + offset)
                .bind(event.event_id)
                .bind(&stream.aggregate_type)
                .bind(&stream.aggregate_id)
                .bind(head.version + 1 + offset)
                .bind(&event.event_name)
                .bind(i64::from(event.schema_version))
                .bind(event.payload.get())
                .bind(event.metadata.correlation_id)
                .bind(event.metadata.causation_id)
                .bind(event.metadata.user_id.as_deref())
                .bind(extra)
                .bind(at);
        }
        match insert.execute(&mut *conn).await {
            Ok(_) => done += rows,
            Err(error) if is_unique_violation(&error) => {
                // An id is stored already (the write lock rules out a concurrent version).
                return match stored_batch(conn, stream, events).await? {
                    Some(stored) => Ok(Appended::Stored(stored)),
                    None => Err(Failure::Error(db(error))),
                };
            }
            Err(error) => return Err(Failure::db(error)),
        }
    }
    Ok(Appended::New {
        first_version: actual + 1,
        first_position: u64::try_from(head.head).unwrap_or(0) + 1,
        recorded_at,
    })
}

/// If the batch's ids are stored: the stored events when every id is stored with the same
/// content (an idempotent retry), [`Error::DuplicateEventId`] when one has other content or
/// only some are stored; `None` when none is.
async fn stored_batch(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    events: &[NewEvent],
) -> Result<Option<Vec<RecordedEvent>>, Failure> {
    if events.is_empty() {
        return Ok(None);
    }
    let ids = serde_json::to_string(
        &events
            .iter()
            .map(|e| e.event_id.simple().to_string())
            .collect::<Vec<_>>(),
    )
    .map_err(Error::Encode)?;
    let rows: Vec<EventRow> = sqlx::query_as(sql::EVENTS_BY_IDS)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(Failure::db)?;
    let mut by_id: HashMap<Uuid, RecordedEvent> = HashMap::with_capacity(rows.len());
    for row in rows {
        let event = row.decode()?;
        by_id.insert(event.event_id, event);
    }
    let mut stored = Vec::with_capacity(by_id.len());
    for event in events {
        if let Some(recorded) = by_id.remove(&event.event_id) {
            if !event.same_content_as(stream, &recorded) {
                return Err(Failure::Error(Error::DuplicateEventId {
                    event_id: event.event_id,
                    stream: recorded.stream,
                }));
            }
            stored.push(recorded);
        }
    }
    match stored.first() {
        None => Ok(None),
        Some(_) if stored.len() == events.len() => Ok(Some(stored)),
        Some(first) => Err(Failure::Error(Error::DuplicateEventId {
            event_id: first.event_id,
            stream: first.stream.clone(),
        })),
    }
}

/// The distinct values of a list filter (a repeated value would read its events twice).
fn distinct(items: &[String]) -> Vec<String> {
    let mut items = items.to_vec();
    items.sort_unstable();
    items.dedup();
    items
}

/// A list filter as the JSON array `json_each` expands.
fn json_list(items: &[String]) -> Result<String, Error> {
    serde_json::to_string(items).map_err(Error::Encode)
}

impl StreamStore for SqliteStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.limits().check_append(stream, expected, &mut events)?;
        if events.is_empty() {
            let actual = self.stream_version(stream).await?;
            return if expected.accepts(actual) {
                Ok(Vec::new())
            } else {
                Err(Error::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual,
                })
            };
        }
        let batch = &events;
        let outcome = retry_busy(self.inner.options.lock_patience, move || async move {
            let mut tx = Tx::begin(&self.inner.writer, &self.inner.wakeup).await?;
            let outcome = append_into(&mut tx, stream, expected, batch).await?;
            match outcome {
                Appended::New { .. } => {
                    tx.appended = true;
                    tx.commit().await?;
                }
                Appended::Stored(_) => tx.rollback().await?,
            }
            Ok(outcome)
        })
        .await?;
        Ok(match outcome {
            Appended::New {
                first_version,
                first_position,
                recorded_at,
            } => recorded(stream, events, first_version, first_position, recorded_at),
            Appended::Stored(stored) => stored,
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        query: &StreamQuery,
    ) -> Result<Vec<RecordedEvent>, Error> {
        check_stream(stream)?;
        let Ok(from) = i64::try_from(query.from_version) else {
            return Ok(Vec::new());
        };
        let to = query.to_version.map_or(i64::MAX, clamp_i64);
        let until = query.recorded_until.map_or(i64::MAX, micros);
        let names = query.event_names.as_deref().map(json_list).transpose()?;
        let rows: Vec<EventRow> = self
            .read(|pool| {
                sqlx::query_as(sql::READ_STREAM)
                    .bind(&stream.aggregate_type)
                    .bind(&stream.aggregate_id)
                    .bind(from)
                    .bind(to)
                    .bind(until)
                    .bind(names.as_deref())
                    .fetch_all(pool)
            })
            .await?;
        rows.into_iter().map(EventRow::decode).collect()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, Error> {
        check_stream(stream)?;
        let version: i64 = self
            .read(|pool| {
                sqlx::query_scalar(sql::STREAM_VERSION)
                    .bind(&stream.aggregate_type)
                    .bind(&stream.aggregate_id)
                    .fetch_one(pool)
            })
            .await?;
        Ok(u64::try_from(version).unwrap_or(0))
    }

    async fn read_event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>, Error> {
        let row: Option<EventRow> = self
            .read(|pool| {
                sqlx::query_as(sql::READ_EVENT)
                    .bind(event_id)
                    .fetch_optional(pool)
            })
            .await?;
        row.map(EventRow::decode).transpose()
    }
}

impl SnapshotStore for SqliteStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, Error> {
        check_stream(stream)?;
        let row: Option<SnapshotRow> = self
            .read(|pool| {
                sqlx::query_as(sql::LOAD_SNAPSHOT)
                    .bind(&stream.aggregate_type)
                    .bind(&stream.aggregate_id)
                    .fetch_optional(pool)
            })
            .await?;
        row.map(|row| row.decode(stream)).transpose()
    }

    async fn save_snapshot(&self, mut snapshot: Snapshot) -> Result<(), Error> {
        self.limits().check_snapshot(&mut snapshot)?;
        let version = clamp_i64(snapshot.version);
        let taken_at = micros(snapshot.taken_at);
        let snapshot = &snapshot;
        self.write_one(|| {
            sqlx::query(sql::SAVE_SNAPSHOT)
                .bind(&snapshot.stream.aggregate_type)
                .bind(&snapshot.stream.aggregate_id)
                .bind(version)
                .bind(i64::from(snapshot.state_version))
                .bind(snapshot.state.get())
                .bind(taken_at)
        })
        .await?;
        Ok(())
    }

    async fn load_stream(
        &self,
        stream: &StreamId,
        state_version: Option<u32>,
    ) -> Result<(Option<Snapshot>, Vec<ReplayEvent>), Error> {
        check_stream(stream)?;
        let state_version = state_version.map(i64::from);
        let rows: Vec<LoadRow> = self
            .read(|pool| {
                sqlx::query_as(sql::LOAD_STREAM)
                    .bind(&stream.aggregate_type)
                    .bind(&stream.aggregate_id)
                    .bind(state_version)
                    .fetch_all(pool)
            })
            .await?;
        decode_load(stream, rows)
    }
}

impl GlobalLog for SqliteStore {
    async fn read_log(
        &self,
        after: u64,
        limit: usize,
        filter: &LogFilter,
    ) -> Result<LogPage, Error> {
        let empty = LogPage {
            events: Vec::new(),
            scanned_to: after,
        };
        let Ok(after_i) = i64::try_from(after) else {
            return Ok(empty);
        };
        if limit == 0 {
            return Ok(empty);
        }
        let before = filter.before_position.map_or(i64::MAX, clamp_i64);
        let from = filter.recorded_from.map_or(i64::MIN, ceil_micros);
        let limit_i = i64::try_from(limit).unwrap_or(i64::MAX);
        let types = filter.aggregate_types.as_deref().map(distinct);
        let names = filter.event_names.as_deref().map(distinct);
        let (scan, values) = match (&types, &names) {
            (Some(types), _) if types.len() <= sql::MAX_LOG_BRANCHES => {
                (sql::LogScan::Types(types.len()), types.as_slice())
            }
            (None, Some(names)) if names.len() <= sql::MAX_LOG_BRANCHES => {
                (sql::LogScan::Names(names.len()), names.as_slice())
            }
            _ => (sql::LogScan::Positions, &[][..]),
        };
        let (rows, head) = if matches!(scan, sql::LogScan::Types(0) | sql::LogScan::Names(0)) {
            // An empty list selects nothing: only the head is needed.
            (Vec::new(), self.head_position().await?)
        } else {
            let statement = sql::read_log(scan);
            let types = types.as_deref().map(json_list).transpose()?;
            let names = names.as_deref().map(json_list).transpose()?;
            let rows: Vec<LogRow> = self
                .read(|pool| {
                    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(statement.as_str()))
                        .bind(after_i)
                        .bind(before)
                        .bind(from)
                        .bind(limit_i)
                        .bind(types.as_deref())
                        .bind(names.as_deref());
                    for value in values {
                        query = query.bind(value.as_str());
                    }
                    query.fetch_all(pool)
                })
                .await?;
            let head = rows
                .iter()
                .find(|row| row.kind == 0)
                .map_or(0, |row| u64::try_from(row.position).unwrap_or(0));
            (rows, head)
        };
        let mut events = Vec::with_capacity(rows.len());
        for row in rows.into_iter().filter(|row| row.kind != 0) {
            let position = row.position;
            match row.into_event() {
                Some(event) => events.push(event.decode()?),
                None => {
                    return Err(Error::Backend(
                        format!("the log read returned an incomplete row at position {position}")
                            .into(),
                    ));
                }
            }
        }
        if !events.is_sorted_by_key(|e| e.position) {
            events.sort_by_key(|e| e.position);
        }
        let scanned_to = match events.last() {
            Some(last) if events.len() >= limit => last.position,
            _ => {
                // Everything up to the head of this statement's snapshot was considered; a
                // later commit takes a higher position (see the crate docs).
                let bound = filter
                    .before_position
                    .map_or(u64::MAX, |before| before.saturating_sub(1));
                head.min(bound).max(after)
            }
        };
        Ok(LogPage { events, scanned_to })
    }

    async fn head_position(&self) -> Result<u64, Error> {
        let head: i64 = self
            .read(|pool| sqlx::query_scalar(sql::HEAD_POSITION).fetch_one(pool))
            .await?;
        Ok(u64::try_from(head).unwrap_or(0))
    }

    fn wakeup(&self) -> Wakeup {
        self.inner.wakeup.subscribe(self.inner.options.wakeup_poll)
    }
}

impl CheckpointStore for SqliteStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, Error> {
        check_name(name, "consumer name")?;
        let position: Option<i64> = self
            .read(|pool| {
                sqlx::query_scalar(sql::LOAD_CHECKPOINT)
                    .bind(name)
                    .fetch_optional(pool)
            })
            .await?;
        Ok(position.map(|p| u64::try_from(p).unwrap_or(0)))
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), Error> {
        check_checkpoint(name, position)?;
        let at = micros(Utc::now());
        self.write_one(|| {
            sqlx::query(sql::SAVE_CHECKPOINT)
                .bind(name)
                .bind(clamp_i64(position))
                .bind(at)
        })
        .await?;
        Ok(())
    }

    async fn park(&self, consumer: &str, parked: &ParkedEvent) -> Result<(), Error> {
        check_parked(consumer, parked)?;
        self.write_one(|| park_query(consumer, parked)).await?;
        Ok(())
    }

    async fn parked(&self, consumer: &str) -> Result<Vec<ParkedEvent>, Error> {
        self.parked_events(consumer).await
    }

    async fn unpark(&self, consumer: &str, position: u64) -> Result<bool, Error> {
        check_name(consumer, "consumer name")?;
        let Ok(position) = i64::try_from(position) else {
            return Ok(false);
        };
        let removed = self
            .write_one(|| sqlx::query(sql::UNPARK).bind(consumer).bind(position))
            .await?;
        Ok(removed > 0)
    }
}

/// The statement that parks `parked` for `consumer` (checked by the caller).
pub(crate) fn park_query<'a>(
    consumer: &'a str,
    parked: &'a ParkedEvent,
) -> sqlx::query::Query<'a, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(sql::PARK)
        .bind(consumer)
        .bind(clamp_i64(parked.position))
        .bind(parked.event_id)
        .bind(&parked.stream.aggregate_type)
        .bind(&parked.stream.aggregate_id)
        .bind(clamp_i64(parked.version))
        .bind(&parked.event_name)
        .bind(&parked.error)
        .bind(i64::from(parked.attempts))
        .bind(micros(parked.parked_at))
}
