//! `PostgresStore`: the [`EventStore`] on PostgreSQL.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use es_core::{
    Error, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, ReplayEvent, Snapshot,
    StreamId, StreamQuery,
};
use serde_json::value::RawValue;
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Connection, Postgres, Row};
use uuid::Uuid;

use crate::notifier::Notifier;
use crate::projection::InlineProjection;
use crate::schema::{Sql, validate_schema};

/// The schema's migrations, embedded from `es-postgres/migrations`.
///
/// They create unqualified objects: [`PostgresStore::migrate`] runs them with `search_path` set
/// to the store's schema. Run them yourself only with that search path.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// How a [`PostgresStore`] is set up.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    schema: String,
    notify: bool,
    notify_interval: std::time::Duration,
    max_connections: u32,
    acquire_timeout: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            schema: "public".to_owned(),
            notify: true,
            notify_interval: std::time::Duration::from_millis(2),
            max_connections: 16,
            acquire_timeout: std::time::Duration::from_secs(30),
        }
    }
}

impl StoreOptions {
    /// Defaults: schema `public`, NOTIFY after appends (at most one per 2 ms), pools of 16
    /// connections.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the store's tables in `schema` (a plain lower-case identifier, validated when the
    /// store is built; several stores can share a database in different schemas).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Whether appends wake subscriptions with a `NOTIFY` on the channel
    /// [`PostgresStore::channel`] (default on). Off, subscriptions still see every event at
    /// their polling interval.
    ///
    /// The `NOTIFY` is not sent inside the append's transaction (PostgreSQL serialises the
    /// commits of notifying transactions across the whole server): the store sends it after
    /// the commit, from a background task on its own pooled connection, coalescing the
    /// appends of one [`notify_interval`](Self::notify_interval). Appends made with
    /// [`PostgresStore::append_in`] and appends with inline projections notify inside their
    /// transaction instead, since only that transaction's commit makes them visible.
    pub fn notify(mut self, notify: bool) -> Self {
        self.notify = notify;
        self
    }

    /// The shortest time between two notifications of one store (default 2 ms): the most a
    /// subscription's wake-up is delayed, traded for one `NOTIFY` round trip per interval
    /// instead of one per append. Zero sends one per append (still coalescing appends that
    /// commit while a `NOTIFY` is in flight).
    pub fn notify_interval(mut self, interval: std::time::Duration) -> Self {
        self.notify_interval = interval;
        self
    }

    /// How long [`PostgresStore::connect_with`]'s pool waits for a connection, including the
    /// first one (default 30 s).
    pub fn acquire_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Pool size for [`PostgresStore::connect_with`] (default 16).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }
}

/// An [`EventStore`] on PostgreSQL. Clones share one connection pool.
///
/// See the [crate docs](crate) for the schema and the global-order design.
///
/// ```no_run
/// # async fn demo() -> Result<(), es_core::Error> {
/// use es_core::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamId, StreamQuery};
/// use es_postgres::PostgresStore;
///
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/postgres").await?;
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
/// let history = store.read_stream(&stream, &StreamQuery::all()).await?;
/// assert_eq!(history.len(), 1);
/// # Ok(())
/// # }
/// # let _ = demo;
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    schema: String,
    sql: Sql,
    notify: bool,
    /// Present when `notify` is on.
    notifier: Option<Arc<Notifier>>,
    inline: Vec<Arc<dyn InlineProjection>>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("notify", &self.inner.notify)
            .field("inline_projections", &self.inner.inline.len())
            .finish_non_exhaustive()
    }
}

/// Wraps a sqlx error as [`Error::Backend`].
pub(crate) fn backend(error: sqlx::Error) -> Error {
    Error::backend(error)
}

/// A stored row that this code cannot turn into a [`RecordedEvent`] (as opposed to a payload
/// the aggregate cannot decode, which [`RecordedEvent::decode`] reports as [`Error::Decode`]).
#[derive(Debug, thiserror::Error)]
#[error("stored event {stream} version {version} has an unreadable column: {source}")]
pub struct BadRow {
    /// Stream of the row.
    pub stream: StreamId,
    /// Stream version of the row.
    pub version: u64,
    /// What sqlx or serde said.
    #[source]
    pub source: sqlx::Error,
}

/// Database integers are `bigint`; the store only ever writes positive values.
fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_i64(value: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::Invalid(format!("{what} {value} exceeds i64::MAX")))
}

/// Reads the event columns of [`crate::schema::EVENT_COLUMNS`] from `row`, starting at column 0.
/// `stream` avoids re-reading the stream columns when the caller knows them.
pub(crate) fn decode_event(row: &PgRow, stream: Option<&StreamId>) -> Result<RecordedEvent, Error> {
    let stream = match stream {
        Some(s) => s.clone(),
        None => StreamId::new(
            row.try_get::<String, _>(2).map_err(backend)?,
            row.try_get::<String, _>(3).map_err(backend)?,
        ),
    };
    let version = to_u64(row.try_get::<i64, _>(4).map_err(backend)?);
    let bad = |source| {
        Error::backend(BadRow {
            stream: stream.clone(),
            version,
            source,
        })
    };
    let position = to_u64(row.try_get::<i64, _>(0).map_err(bad)?);
    let event_id = row.try_get::<Uuid, _>(1).map_err(bad)?;
    let event_name = row.try_get::<String, _>(5).map_err(bad)?;
    let schema_version = u32::try_from(row.try_get::<i32, _>(6).map_err(bad)?).unwrap_or(0);
    let payload = row.try_get::<Box<RawValue>, _>(7).map_err(bad)?;
    let Json(metadata) = row.try_get::<Json<Metadata>, _>(8).map_err(bad)?;
    let recorded_at = row.try_get::<DateTime<Utc>, _>(9).map_err(bad)?;
    Ok(RecordedEvent {
        event_id,
        stream,
        version,
        position,
        event_name,
        schema_version,
        payload,
        metadata,
        recorded_at,
    })
}

/// What one call of the append function concluded.
enum Attempt {
    Done(Vec<RecordedEvent>),
    Conflict(u64),
    /// A concurrent append took the version first (unique key on the stream version).
    VersionRace,
    /// A concurrent append stored one of the ids first (unique key on the event id).
    IdRace,
}

fn expected_code(expected: ExpectedVersion) -> Result<i64, Error> {
    Ok(match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::NoStream => 0,
        ExpectedVersion::StreamExists => -3,
        ExpectedVersion::Exact(v) => to_i64(v, "expected version")?,
    })
}

fn check_batch(events: &[NewEvent]) -> Result<(), Error> {
    let duplicate = if events.len() <= 16 {
        events
            .iter()
            .enumerate()
            .find(|(i, e)| events[..*i].iter().any(|o| o.event_id == e.event_id))
            .map(|(_, e)| e.event_id)
    } else {
        let mut seen = std::collections::HashSet::with_capacity(events.len());
        events
            .iter()
            .find(|e| !seen.insert(e.event_id))
            .map(|e| e.event_id)
    };
    match duplicate {
        Some(id) => Err(Error::Invalid(format!(
            "event id {id} appears twice in one append"
        ))),
        None => Ok(()),
    }
}

/// The stored events of a batch whose ids were found, or why they are not a retry of it.
fn replayed(
    stream: &StreamId,
    events: &[NewEvent],
    stored: Vec<RecordedEvent>,
) -> Result<Vec<RecordedEvent>, Error> {
    let mut by_id: HashMap<Uuid, RecordedEvent> =
        stored.into_iter().map(|e| (e.event_id, e)).collect();
    let mut result = Vec::with_capacity(events.len());
    let mut first_reused = None;
    for event in events {
        if let Some(recorded) = by_id.remove(&event.event_id) {
            if !event.same_content_as(stream, &recorded) {
                return Err(Error::DuplicateEventId {
                    event_id: event.event_id,
                    stream: recorded.stream,
                });
            }
            first_reused.get_or_insert((recorded.event_id, recorded.stream.clone()));
            result.push(recorded);
        }
    }
    if result.len() == events.len() {
        return Ok(result);
    }
    match first_reused {
        Some((event_id, stream)) => Err(Error::DuplicateEventId { event_id, stream }),
        None => Err(Error::Invalid(
            "the append function reported stored ids that are not in the batch".into(),
        )),
    }
}

/// A batch as the column arrays both append statements bind.
struct Columns<'a> {
    ids: Vec<Uuid>,
    names: Vec<&'a str>,
    schema_versions: Vec<i32>,
    payloads: Vec<Json<&'a RawValue>>,
    metadata: Vec<Json<&'a Metadata>>,
}

impl<'a> Columns<'a> {
    fn new(events: &'a [NewEvent]) -> Result<Self, Error> {
        let n = events.len();
        let mut columns = Columns {
            ids: Vec::with_capacity(n),
            names: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
        };
        for e in events {
            columns.ids.push(e.event_id);
            columns.names.push(e.event_name.as_str());
            columns
                .schema_versions
                .push(i32::try_from(e.schema_version).map_err(|_| {
                    Error::Invalid(format!("schema version {} exceeds i32", e.schema_version))
                })?);
            columns.payloads.push(Json(&*e.payload));
            columns.metadata.push(Json(&e.metadata));
        }
        Ok(columns)
    }

    /// `sql` with the parameters both append statements share bound: `$1`, `$2` the stream,
    /// `$3` the expected-version code, `$4` to `$8` the columns.
    fn bind<'q>(
        &'q self,
        sql: Arc<str>,
        stream: &'q StreamId,
        expected: ExpectedVersion,
    ) -> Result<Query<'q, Postgres, PgArguments>, Error> {
        Ok(sqlx::query(AssertSqlSafe(sql))
            .bind(&stream.aggregate_type)
            .bind(&stream.aggregate_id)
            .bind(expected_code(expected)?)
            .bind(&self.ids[..])
            .bind(&self.names[..])
            .bind(&self.schema_versions[..])
            .bind(&self.payloads[..])
            .bind(&self.metadata[..]))
    }
}

/// The appended events from `es_append`'s rows of kind `'a'` (position, version and time in
/// columns 1 to 3), one per event in batch order.
fn recorded_from(
    stream: &StreamId,
    events: &[NewEvent],
    rows: &[PgRow],
) -> Result<Vec<RecordedEvent>, Error> {
    if rows.len() != events.len() {
        return Err(Error::Invalid(format!(
            "the append returned {} rows for {} events",
            rows.len(),
            events.len()
        )));
    }
    rows.iter()
        .zip(events)
        .map(|(row, event)| {
            Ok(event.clone().into_recorded(
                stream.clone(),
                to_u64(row.try_get(2).map_err(backend)?),
                to_u64(row.try_get(1).map_err(backend)?),
                row.try_get(3).map_err(backend)?,
            ))
        })
        .collect()
}

impl PostgresStore {
    /// Connects a pool to `url` (schema `public`) and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// Connects a pool to `url` with `options` and applies the migrations.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Self, Error> {
        validate_schema(&options.schema)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect(url)
            .await
            .map_err(backend)?;
        let store = Self::from_pool_with(pool, options)?;
        store.migrate().await?;
        Ok(store)
    }

    /// A store on an existing pool, schema `public`. Does not migrate: call
    /// [`PostgresStore::migrate`] once at deploy time or start-up.
    pub fn from_pool(pool: PgPool) -> Self {
        Self::build(pool, StoreOptions::default())
    }

    /// A store on an existing pool with `options`; fails if the schema name is not a plain
    /// identifier. Does not migrate.
    pub fn from_pool_with(pool: PgPool, options: StoreOptions) -> Result<Self, Error> {
        validate_schema(&options.schema)?;
        Ok(Self::build(pool, options))
    }

    fn build(pool: PgPool, options: StoreOptions) -> Self {
        let sql = Sql::new(&options.schema);
        let notifier = options.notify.then(|| {
            Arc::new(Notifier::new(
                pool.clone(),
                sql.notify.clone(),
                sql.channel.clone(),
                options.notify_interval,
            ))
        });
        Self {
            pool,
            inner: Arc::new(Inner {
                notifier,
                sql,
                schema: options.schema,
                notify: options.notify,
                inline: Vec::new(),
            }),
        }
    }

    /// Creates the schema if needed and applies pending migrations, on a dedicated connection
    /// whose `search_path` is the store's schema. Concurrent calls wait for each other.
    pub async fn migrate(&self) -> Result<(), Error> {
        let mut conn = self.pool.acquire().await.map_err(backend)?.detach();
        let schema = format!("\"{}\"", self.inner.schema);
        let result = async {
            // Two stores creating the same schema at once may race on the catalog; the
            // migrator's own lock serialises everything after this statement.
            if let Err(e) = sqlx::query(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .execute(&mut conn)
            .await
            {
                tracing::debug!(error = %e, "CREATE SCHEMA raced; continuing");
            }
            sqlx::query(AssertSqlSafe(format!("SET search_path TO {schema}")))
                .execute(&mut conn)
                .await
                .map_err(backend)?;
            MIGRATOR
                .run_direct(None, &mut conn, false)
                .await
                .map_err(Error::backend)
        }
        .await;
        // The connection was detached from the pool: close it rather than hand a modified
        // session back.
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the migration connection");
        }
        result
    }

    /// The pool, for read models that live in the same database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The `LISTEN` channel appends notify (when notification is on).
    pub fn channel(&self) -> &str {
        &self.inner.sql.channel
    }

    /// Runs `projection` inside every append's own transaction, after the events are written
    /// and before the commit: its read model is up to date when the append returns
    /// (read-your-writes), and a failing projection fails the append. Appends with inline
    /// projections take three round trips (begin, append, commit) plus the projection's own.
    pub fn with_inline_projection(mut self, projection: impl InlineProjection) -> Self {
        Arc::make_mut(&mut self.inner)
            .inline
            .push(Arc::new(projection));
        self
    }

    /// Appends on a connection the caller controls, typically inside its own transaction
    /// (for example to write an outbox row or a read model atomically with the events).
    ///
    /// Inline projections are not run. If a concurrent append takes the same version first,
    /// PostgreSQL aborts the caller's transaction: the result is [`Error::Conflict`] and the
    /// transaction must be rolled back.
    pub async fn append_in(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        check_batch(&events)?;
        let columns = Columns::new(&events)?;
        match self
            .attempt(conn, stream, expected, &events, &columns, self.inner.notify)
            .await?
        {
            Attempt::Done(recorded) => Ok(recorded),
            Attempt::Conflict(actual) => Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual,
            }),
            Attempt::VersionRace | Attempt::IdRace => Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual: self.stream_version(stream).await?,
            }),
        }
    }

    /// One call of the append function (`notify`: send `NOTIFY` inside the transaction).
    async fn attempt(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
        columns: &Columns<'_>,
        notify: bool,
    ) -> Result<Attempt, Error> {
        let result = columns
            .bind(self.inner.sql.append.clone(), stream, expected)?
            .bind(notify)
            .fetch_all(&mut *conn)
            .await;
        let rows = match result {
            Ok(rows) => rows,
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {
                return Ok(match db.constraint() {
                    Some("events_event_id_key") => Attempt::IdRace,
                    _ => Attempt::VersionRace,
                });
            }
            Err(e) => return Err(backend(e)),
        };
        let Some(first) = rows.first() else {
            return Ok(Attempt::Done(Vec::new()));
        };
        let kind: i8 = first.try_get(0).map_err(backend)?;
        match kind as u8 {
            b'c' => Ok(Attempt::Conflict(to_u64(
                first.try_get(2).map_err(backend)?,
            ))),
            b'd' => {
                let mut stored = Vec::with_capacity(rows.len());
                for row in &rows {
                    stored.push(decode_stored(row)?);
                }
                replayed(stream, events, stored).map(Attempt::Done)
            }
            _ => recorded_from(stream, events, &rows).map(Attempt::Done),
        }
    }

    /// The plain-SQL append (see `schema::append_fast`): `None` when it wrote nothing because
    /// a check or a unique key failed, for `es_append` to tell a conflict from a retry.
    async fn attempt_fast(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
        columns: &Columns<'_>,
    ) -> Result<Option<Vec<RecordedEvent>>, Error> {
        let result = columns
            .bind(self.inner.sql.append_fast.clone(), stream, expected)?
            .fetch_one(&mut *conn)
            .await;
        let row = match result {
            Ok(row) => row,
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {
                return Ok(None);
            }
            Err(e) => return Err(backend(e)),
        };
        let Some(positions) = row.try_get::<Option<Vec<i64>>, _>(0).map_err(backend)? else {
            return Ok(None);
        };
        let first_version = to_u64(row.try_get(1).map_err(backend)?);
        let recorded_at: DateTime<Utc> = row.try_get(2).map_err(backend)?;
        if positions.len() != events.len() {
            return Err(Error::Invalid(format!(
                "the append returned {} positions for {} events",
                positions.len(),
                events.len()
            )));
        }
        Ok(Some(
            positions
                .into_iter()
                .zip(events)
                .zip(first_version..)
                .map(|((position, event), version)| {
                    event.clone().into_recorded(
                        stream.clone(),
                        version,
                        to_u64(position),
                        recorded_at,
                    )
                })
                .collect(),
        ))
    }

    /// Appends on a pooled connection: the plain-SQL statement first, then `es_append` when
    /// that wrote nothing, retrying the races the unique keys catch.
    async fn append_pooled(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Vec<RecordedEvent>, Error> {
        let columns = Columns::new(events)?;
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        if !events.is_empty()
            && let Some(recorded) = self
                .attempt_fast(&mut conn, stream, expected, events, &columns)
                .await?
        {
            self.committed();
            return Ok(recorded);
        }
        let mut races = 0u32;
        loop {
            match self
                .attempt(&mut conn, stream, expected, events, &columns, false)
                .await?
            {
                Attempt::Done(recorded) => {
                    self.committed();
                    return Ok(recorded);
                }
                Attempt::Conflict(actual) => {
                    return Err(Error::Conflict {
                        stream: stream.clone(),
                        expected,
                        actual,
                    });
                }
                // A concurrent append got there first. Calling again sorts it out: the ids
                // are checked first (an identical retry that won is returned as stored), then
                // the version (a conflict reports the actual one; `Any` and `StreamExists`
                // just append after it).
                Attempt::VersionRace | Attempt::IdRace if races < 1_000 => races += 1,
                Attempt::VersionRace | Attempt::IdRace => {
                    return Err(Error::Conflict {
                        stream: stream.clone(),
                        expected,
                        actual: self.stream_version(stream).await?,
                    });
                }
            }
        }
    }

    /// Wakes subscriptions after an append outside any caller transaction committed.
    fn committed(&self) {
        if let Some(notifier) = &self.inner.notifier {
            notifier.poke();
        }
    }

    /// [`EventStore::read_all`] on a connection the caller controls (for example inside a
    /// projection's transaction). The transaction must be READ COMMITTED (PostgreSQL's
    /// default): the read takes its snapshot after computing the safe frontier, which a
    /// REPEATABLE READ snapshot taken earlier would defeat, so such reads are refused.
    pub async fn read_all_in(
        &self,
        conn: &mut PgConnection,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.read_all.clone()))
            .bind(to_i64(after, "position")?)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
        rows.iter().map(|row| decode_event(row, None)).collect()
    }

    /// The SQL of the statement that locks a projection checkpoint and returns its position.
    pub(crate) fn lock_checkpoint_sql(&self) -> Arc<str> {
        self.inner.sql.lock_checkpoint.clone()
    }

    /// The SQL that saves a checkpoint (`$1` name, `$2` position).
    pub(crate) fn save_checkpoint_sql(&self) -> Arc<str> {
        self.inner.sql.save_checkpoint.clone()
    }
}

/// Decodes a row of kind `'d'` (a stored event returned by the append function).
fn decode_stored(row: &PgRow) -> Result<RecordedEvent, Error> {
    let stream = StreamId::new(
        row.try_get::<String, _>(5).map_err(backend)?,
        row.try_get::<String, _>(6).map_err(backend)?,
    );
    let version = to_u64(row.try_get::<i64, _>(2).map_err(backend)?);
    let bad = |source| {
        Error::backend(BadRow {
            stream: stream.clone(),
            version,
            source,
        })
    };
    let Json(metadata) = row.try_get::<Json<Metadata>, _>(10).map_err(bad)?;
    Ok(RecordedEvent {
        event_id: row.try_get(4).map_err(bad)?,
        version,
        position: to_u64(row.try_get(1).map_err(bad)?),
        event_name: row.try_get(7).map_err(bad)?,
        schema_version: u32::try_from(row.try_get::<i32, _>(8).map_err(bad)?).unwrap_or(0),
        payload: row.try_get(9).map_err(bad)?,
        metadata,
        recorded_at: row.try_get(3).map_err(bad)?,
        stream,
    })
}

impl EventStore for PostgresStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        check_batch(&events)?;
        if self.inner.inline.is_empty() {
            return self.append_pooled(stream, expected, &events).await;
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let recorded = self.append_in(&mut tx, stream, expected, events).await?;
        for projection in &self.inner.inline {
            projection
                .apply(&mut tx, &recorded)
                .await
                .map_err(|source| Error::Projection {
                    projection: projection.name().to_owned(),
                    position: recorded.first().map_or(0, |e| e.position),
                    source,
                })?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(recorded)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        query: &StreamQuery,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let from = i64::try_from(query.from_version).unwrap_or(i64::MAX);
        let to = query
            .to_version
            .map_or(i64::MAX, |v| i64::try_from(v).unwrap_or(i64::MAX));
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.read_stream.clone()))
            .bind(&stream.aggregate_type)
            .bind(&stream.aggregate_id)
            .bind(from)
            .bind(to)
            .bind(query.event_names.as_deref())
            .bind(query.recorded_until)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| decode_event(row, Some(stream)))
            .collect()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, Error> {
        let version: i64 = sqlx::query_scalar(AssertSqlSafe(self.inner.sql.stream_version.clone()))
            .bind(&stream.aggregate_type)
            .bind(&stream.aggregate_id)
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(to_u64(version))
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, Error> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        self.read_all_in(&mut conn, after, limit).await
    }

    async fn head_position(&self) -> Result<u64, Error> {
        let head: i64 = sqlx::query_scalar(AssertSqlSafe(self.inner.sql.head_position.clone()))
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(to_u64(head))
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, Error> {
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.load_snapshot.clone()))
            .bind(&stream.aggregate_type)
            .bind(&stream.aggregate_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(|row| {
            Ok(Snapshot {
                stream: stream.clone(),
                version: to_u64(row.try_get(0).map_err(backend)?),
                state_version: u32::try_from(row.try_get::<i32, _>(1).map_err(backend)?)
                    .unwrap_or(0),
                state: row.try_get(2).map_err(backend)?,
                taken_at: row.try_get(3).map_err(backend)?,
            })
        })
        .transpose()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), Error> {
        let state_version = i32::try_from(snapshot.state_version)
            .map_err(|_| Error::Invalid("state version exceeds i32".into()))?;
        sqlx::query(AssertSqlSafe(self.inner.sql.save_snapshot.clone()))
            .bind(&snapshot.stream.aggregate_type)
            .bind(&snapshot.stream.aggregate_id)
            .bind(to_i64(snapshot.version, "snapshot version")?)
            .bind(state_version)
            .bind(&*snapshot.state)
            .bind(snapshot.taken_at)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, Error> {
        let position: Option<i64> =
            sqlx::query_scalar(AssertSqlSafe(self.inner.sql.load_checkpoint.clone()))
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        Ok(position.map(to_u64))
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), Error> {
        sqlx::query(AssertSqlSafe(self.inner.sql.save_checkpoint.clone()))
            .bind(name)
            .bind(to_i64(position, "position")?)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn load_stream(
        &self,
        stream: &StreamId,
        state_version: Option<u32>,
    ) -> Result<(Option<Snapshot>, Vec<ReplayEvent>), Error> {
        let state_version = state_version.and_then(|v| i32::try_from(v).ok());
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.load_stream.clone()))
            .bind(&stream.aggregate_type)
            .bind(&stream.aggregate_id)
            .bind(state_version)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        let mut snapshot = None;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let kind: i8 = row.try_get(0).map_err(backend)?;
            let version = to_u64(row.try_get::<i64, _>(1).map_err(backend)?);
            let bad = |source| {
                Error::backend(BadRow {
                    stream: stream.clone(),
                    version,
                    source,
                })
            };
            let schema_version = u32::try_from(row.try_get::<i32, _>(3).map_err(bad)?).unwrap_or(0);
            let payload = row.try_get(4).map_err(bad)?;
            if kind as u8 == b's' {
                snapshot = Some(Snapshot {
                    stream: stream.clone(),
                    version,
                    state_version: schema_version,
                    state: payload,
                    taken_at: row.try_get(5).map_err(bad)?,
                });
                continue;
            }
            events.push(ReplayEvent {
                version,
                event_name: row.try_get(2).map_err(bad)?,
                schema_version,
                payload,
            });
        }
        Ok((snapshot, events))
    }
}
