//! `PostgresStore`: set-up, streams and snapshots.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::{
    BoxError, Error, ExpectedVersion, Limits, Metadata, NewEvent, RecordedEvent, ReplayEvent,
    Snapshot, SnapshotStore, StreamId, StreamQuery, StreamStore, WakeupSender, check_stream,
};
use serde_json::value::RawValue;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::query::QueryAs;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Connection, FromRow, Postgres};
use uuid::Uuid;

use crate::error::{self, ConnectError, Phase};
use crate::group::GroupCommit;
use crate::known::KnownVersions;
use crate::notifier::Notifier;
use crate::projection::InlineProjection;
use crate::read_ahead::ReadAhead;
use crate::rows::{
    self, AppendOutcome, AppendRow, EventRow, FastAppendRow, Landed, LoadRow, OneAppendRow,
    SnapshotRow,
};
use crate::sql::{Check, Sql, expected_code, validate_schema};
use crate::tx::PgTx;
use crate::wakeup::{Listener, Signals};

/// The schema's migrations, embedded from `es-postgres/migrations`.
///
/// They create unqualified objects: [`PostgresStore::migrate`] runs them with `search_path` set
/// to the store's schema. Run them yourself only with that search path.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// How often an append that lost a race on a unique key is tried again before it reports a
/// conflict (races resolve in one or two rounds; this only bounds a pathological loop).
const MAX_RACES: u32 = 1_000;

/// How a [`PostgresStore`] is set up.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    schema: String,
    notify: bool,
    listen: bool,
    notify_interval: Duration,
    poll_interval: Duration,
    max_connections: u32,
    acquire_timeout: Duration,
    lease_check_interval: Duration,
    limits: Limits,
    group_commit: Option<usize>,
    ping_after_idle: Duration,
    read_ahead: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            schema: "public".to_owned(),
            notify: true,
            listen: true,
            notify_interval: Duration::from_millis(20),
            poll_interval: Duration::from_millis(500),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(30),
            lease_check_interval: Duration::from_secs(1),
            limits: Limits::default(),
            group_commit: None,
            ping_after_idle: Duration::from_secs(1),
            read_ahead: true,
        }
    }
}

impl StoreOptions {
    /// Defaults: schema `public`, `NOTIFY` after appends (at most one per 20 ms) and `LISTEN`
    /// for followers, polling every 500 ms as a fallback, pools of 16 connections, leases
    /// checked every second, [`Limits::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the store's tables in `schema` (a plain lower-case identifier, validated when the
    /// store is built; several stores can share a database in different schemas).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Whether appends send a `NOTIFY` on the channel [`PostgresStore::channel`] (default on),
    /// which wakes followers in other processes. Followers in this process are woken directly
    /// either way.
    ///
    /// The `NOTIFY` is not sent inside the append's transaction (PostgreSQL serialises the
    /// commits of notifying transactions across the whole server): the store sends it after
    /// the commit, from a background task on its own pooled connection, coalescing the
    /// appends of one [`notify_interval`](Self::notify_interval).
    pub fn notify(mut self, notify: bool) -> Self {
        self.notify = notify;
        self
    }

    /// Whether followers of this store (its [`GlobalLog::wakeup`](es_core::GlobalLog::wakeup))
    /// `LISTEN` for other processes' notifications, on one connection of their own outside
    /// the pool (default on). Off, they see other processes' appends at their polling
    /// interval.
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// The shortest time between two notifications of one store (default 20 ms): the most a
    /// follower in another process is delayed, traded for one `NOTIFY` round trip per interval
    /// instead of one per append. An append after a quiet interval is announced at once; only
    /// a steady stream of appends is announced once per interval, and its followers read it
    /// in batches anyway. Followers in this process are woken directly, without delay. Zero
    /// sends one per append (still coalescing appends that commit while a `NOTIFY` is in
    /// flight).
    ///
    /// Each `NOTIFY` is a transaction of its own on a pooled connection: at 2 ms it cost
    /// single appends 5-10% of their rate at 1 and 8 writers (`bench/compare/RESULTS.md`).
    pub fn notify_interval(mut self, interval: Duration) -> Self {
        self.notify_interval = interval;
        self
    }

    /// How long a follower waits without a wake-up before it reads anyway (default 500 ms):
    /// the most a lost notification delays it.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long [`PostgresStore::connect_with`]'s pool waits for a connection, and how long
    /// the first connection may take (default 30 s). A refused connection fails at once.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Pool size for [`PostgresStore::connect_with`] (default 16).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How often a held lease checks that its connection is alive (default 1 s): a holder
    /// whose connection died learns it within about this long, and then leaves the lease to
    /// other runners for twice as long (see [`Leases` for
    /// `PostgresStore`](PostgresStore#impl-Leases-for-PostgresStore)).
    pub fn lease_check_interval(mut self, interval: Duration) -> Self {
        self.lease_check_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The input rules appends, snapshots and checkpoints are checked against before any I/O
    /// (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the largest payload, snapshot state or metadata document, in bytes of JSON
    /// ([`Limits::max_payload_bytes`]).
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_payload_bytes = bytes;
        self
    }

    /// Group commit: at most `lanes` plain appends of this store run at once; appends that
    /// arrive meanwhile wait and are sent together, in one statement and one transaction,
    /// each with its own outcome (a conflict or an idempotent retry of one member never
    /// affects another). 0 turns it off: every append runs at once on a connection of its
    /// own. Appends with inline projections and [`PostgresStore::append_in`] are never
    /// grouped.
    ///
    /// By default the store has one lane less than its pool has connections: an append
    /// never waits for a partner while a connection is free, and appends that would
    /// otherwise wait for a connection are sent together instead. Fewer lanes group earlier,
    /// which saves commits when the database is short of CPU but costs latency when it is
    /// bound by its WAL flush (measured in `bench/compare`: with 8 writers on a 9-connection
    /// pool, 2 lanes ran at about half the rate of no grouping; with 32 writers, grouping
    /// ran at twice the rate).
    pub fn group_commit(mut self, lanes: usize) -> Self {
        self.group_commit = Some(lanes);
        self
    }

    /// A pooled connection of [`PostgresStore::connect_with`]'s pool that sat idle longer
    /// than this is checked with a round trip before use (default 1 s). sqlx checks every
    /// connection on every acquire, which costs a command a round trip per statement;
    /// [`Duration::ZERO`] restores that. A connection that died less than this ago is found
    /// dead by the statement itself: a read by stream or event id runs again on another
    /// connection, a read of the global log fails with [`Error::Backend`] (consumers retry
    /// it), and a write with [`Error::OutcomeUnknown`](es_core::Error::OutcomeUnknown) (retry
    /// with the same ids).
    /// Pools given to [`PostgresStore::from_pool`] keep their own settings.
    pub fn ping_after_idle(mut self, idle: Duration) -> Self {
        self.ping_after_idle = idle;
        self
    }

    /// Whether a consumer far behind the head reads ahead (default on): after a full page,
    /// the store reads the following pages up to the frontier it just computed in the
    /// background, in plain indexed reads, while the consumer handles the current page (see
    /// [`GlobalLog` for `PostgresStore`](PostgresStore#impl-GlobalLog-for-PostgresStore)).
    pub fn read_ahead(mut self, on: bool) -> Self {
        self.read_ahead = on;
        self
    }
}

/// The event store on PostgreSQL: streams, snapshots, the global log, checkpoints, leases.
/// Clones share one connection pool.
///
/// See the [crate docs](crate) for the schema, the global-order design and the cancellation
/// guarantee.
///
/// ```no_run
/// # async fn demo() -> Result<(), es_core::Error> {
/// use es_core::{ExpectedVersion, Metadata, NewEvent, StreamId, StreamQuery, StreamStore};
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
    pub(crate) pool: PgPool,
    pub(crate) inner: Arc<Inner>,
}

#[derive(Clone)]
pub(crate) struct Inner {
    pub(crate) schema: String,
    pub(crate) sql: Arc<Sql>,
    pub(crate) limits: Limits,
    pub(crate) signals: Arc<Signals>,
    pub(crate) listener: Arc<Listener>,
    pub(crate) lease_check: Duration,
    /// Group commit of plain appends (see `group.rs`); `None` when off.
    pub(crate) group: Option<Arc<GroupCommit>>,
    /// Pages read ahead for consumers far behind the head (see `read_ahead.rs`); `None` when off.
    pub(crate) read_ahead: Option<Arc<ReadAhead>>,
    /// Versions seen committed, which appends need not look for (see `known.rs`).
    pub(crate) known: Arc<KnownVersions>,
    /// The connection of each lease this store waits for (see `lease.rs`).
    pub(crate) lease_standby: Arc<Mutex<HashMap<String, PgConnection>>>,
    /// When this store last lost each lease to a dead connection (see `lease.rs`).
    pub(crate) lease_lost: Arc<Mutex<HashMap<String, std::time::Instant>>>,
    inline: Vec<Arc<dyn InlineProjection>>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("notify", &self.inner.signals.notifier.is_some())
            .field("inline_projections", &self.inner.inline.len())
            .finish_non_exhaustive()
    }
}

/// What one attempt of an append concluded.
enum Attempt {
    /// Written by this attempt: where each event landed.
    Appended(Vec<Landed>),
    /// Stored before (an identical retry): the events as first stored.
    Replayed(Vec<RecordedEvent>),
    /// The expectation failed; the actual version.
    Conflict(u64),
    /// A concurrent append took the version or one of the ids first (a unique key refused
    /// the insert, which aborts an enclosing transaction).
    Race,
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
        None => Err(Error::backend(
            "the append function reported stored ids that are not in the batch",
        )),
    }
}

/// The batch as recorded, from where each event landed (the events are moved, not copied).
pub(crate) fn recorded(
    stream: &StreamId,
    events: Vec<NewEvent>,
    landed: Vec<Landed>,
) -> Result<Vec<RecordedEvent>, Error> {
    if landed.len() != events.len() {
        return Err(Error::backend(format!(
            "the append to {stream} returned {} rows for {} events",
            landed.len(),
            events.len()
        )));
    }
    Ok(events
        .into_iter()
        .zip(landed)
        .map(|(event, at)| {
            event.into_recorded(stream.clone(), at.version, at.position, at.recorded_at)
        })
        .collect())
}

/// Whether `error` is a unique violation on one of the two keys an append races on.
fn lost_race(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23505")
            && matches!(db.constraint(), Some("events_event_id_key" | "events_stream_version_key")))
}

/// A version or position a caller asks about, beyond what the database can store: nothing
/// lies there, so reads clamp it to the largest storable value.
pub(crate) fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Names a filter can match: one with a NUL can never be stored, so it matches nothing.
pub(crate) fn storable_names(names: &Option<Vec<String>>) -> Option<Vec<&str>> {
    names.as_ref().map(|names| {
        names
            .iter()
            .map(String::as_str)
            .filter(|n| !n.contains('\0'))
            .collect()
    })
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
            // Limits::check_append keeps schema versions within i32.
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
    fn bind<'q, O>(
        &'q self,
        sql: Arc<str>,
        stream: &'q StreamId,
        expected: ExpectedVersion,
    ) -> Result<QueryAs<'q, Postgres, O, PgArguments>, Error>
    where
        O: for<'r> FromRow<'r, PgRow>,
    {
        Ok(sqlx::query_as(AssertSqlSafe(sql))
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

/// An error found after a write statement succeeded: in `Committing`, the write committed, so
/// its outcome is unknown to the caller rather than failed.
fn after_write(error: Error, phase: Phase) -> Error {
    match phase {
        Phase::Committing => Error::OutcomeUnknown(Box::new(error)),
        Phase::Uncommitted => error,
    }
}

/// What a failing inline projection means for the append: the append is rolled back; a
/// database failure keeps its own meaning, a refusal by the projection is a handler error.
fn projection_error(name: &str, position: u64, source: BoxError) -> Error {
    let source = match source.downcast::<sqlx::Error>() {
        Ok(sqlx) => return error::uncommitted(*sqlx),
        Err(other) => other,
    };
    match source.downcast::<Error>() {
        Ok(error) => *error,
        Err(source) => Error::Handler {
            consumer: format!("inline projection `{name}`"),
            position,
            source,
        },
    }
}

impl PostgresStore {
    /// Connects to `url` (schema `public`) and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// Connects to `url` with `options` and applies the migrations.
    ///
    /// The first connection is made at once, and its failure is returned at once (a refused
    /// connection does not wait for the acquire timeout) as [`Error::Backend`] holding a
    /// [`ConnectError`] with the cause. No message ever shows the URL's password.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Self, Error> {
        validate_schema(&options.schema)?;
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Invalid(ConnectError::new(url, &e).to_string()))?;
        let mut first = match tokio::time::timeout(
            options.acquire_timeout,
            PgConnection::connect_with(&connect),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(Error::Backend(Box::new(ConnectError::new(url, &e)))),
            Err(_) => {
                let waited = format!("no answer within {:?}", options.acquire_timeout);
                return Err(Error::Backend(Box::new(ConnectError::new(url, &waited))));
            }
        };
        let migrated = migrate_on(&mut first, &options.schema).await;
        if let Err(e) = first.close().await {
            tracing::debug!(error = %e, "closing the migration connection");
        }
        migrated?;
        let ping_after = options.ping_after_idle;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // Check only connections that sat idle (see `StoreOptions::ping_after_idle`).
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= ping_after {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(connect);
        Ok(Self::build(pool, options))
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
        let sql = Arc::new(Sql::new(&options.schema));
        // By default one lane less than the pool has connections (see StoreOptions::group_commit).
        let connections = usize::try_from(pool.options().get_max_connections()).unwrap_or(1);
        let lanes = options
            .group_commit
            .unwrap_or_else(|| connections.saturating_sub(1).max(1));
        let local = WakeupSender::new();
        let notifier = options.notify.then(|| {
            Notifier::new(
                pool.clone(),
                sql.notify.clone(),
                sql.channel.clone(),
                options.notify_interval,
            )
        });
        let listener = Listener::new(
            pool.connect_options(),
            sql.channel.clone(),
            local.clone(),
            options.poll_interval,
            options.listen,
        );
        Self {
            pool,
            inner: Arc::new(Inner {
                schema: options.schema,
                sql,
                limits: options.limits,
                signals: Arc::new(Signals { local, notifier }),
                listener: Arc::new(listener),
                lease_check: options.lease_check_interval,
                lease_standby: Arc::default(),
                lease_lost: Arc::default(),
                inline: Vec::new(),
                group: (lanes > 0).then(|| Arc::new(GroupCommit::new(lanes))),
                read_ahead: options.read_ahead.then(|| Arc::new(ReadAhead::default())),
                known: Arc::default(),
            }),
        }
    }

    /// Creates the schema if needed and applies pending migrations, on a dedicated connection
    /// whose `search_path` is the store's schema. Concurrent calls wait for each other.
    pub async fn migrate(&self) -> Result<(), Error> {
        let mut conn = self.pool.acquire().await.map_err(error::acquire)?.detach();
        let result = migrate_on(&mut conn, &self.inner.schema).await;
        // The connection was detached from the pool: close it rather than hand a modified
        // session back.
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the migration connection");
        }
        result
    }

    /// The pool, for read models that live in the same database. Open transactions with
    /// [`PostgresStore::begin`], not with the pool's `begin` (see [`PgTx`]).
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

    /// The input rules the store checks before any I/O.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Opens a transaction on a pooled connection: for appends together with other writes
    /// ([`PostgresStore::append_in`]) and for read models. Dropped before it commits or rolls
    /// back, it never returns its connection to the pool (see [`PgTx`]).
    pub async fn begin(&self) -> Result<PgTx, Error> {
        PgTx::begin(&self.pool, self.inner.signals.clone()).await
    }

    /// Runs `projection` inside every append's own transaction, after the events are written
    /// and before the commit: its read model is up to date when the append returns
    /// (read-your-writes), and a failing projection fails the append, which writes nothing.
    /// Such appends take four round trips (begin, append, commit, plus the projection's own)
    /// and keep the contract of plain appends: a lost race is retried in a new transaction, an
    /// identical retry returns the stored events without running the projection again.
    ///
    /// A projection that fails on its own (not on the database) makes the append fail with
    /// [`Error::Handler`] naming it; a database failure inside it keeps its meaning
    /// ([`Error::Backend`] for a lost connection, [`Error::Invalid`] for a refusal).
    pub fn with_inline_projection(mut self, projection: impl InlineProjection) -> Self {
        Arc::make_mut(&mut self.inner)
            .inline
            .push(Arc::new(projection));
        self
    }

    /// Appends in the caller's transaction, for example to write an outbox row or a read model
    /// atomically with the events; inline projections run in it too. Checked by the store's
    /// [`Limits`] first. Followers are woken when `tx` commits.
    ///
    /// If a concurrent append takes the same version or event id first, PostgreSQL aborts the
    /// caller's transaction: the result is [`Error::Conflict`] and the transaction must be
    /// rolled back (an identical retry in a new transaction returns the stored events).
    pub async fn append_in(
        &self,
        tx: &mut PgTx,
        stream: &StreamId,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.inner
            .limits
            .check_append(stream, expected, &mut events)?;
        let attempt = self
            .attempt(
                tx.conn(),
                stream,
                expected,
                &events,
                true,
                Phase::Uncommitted,
            )
            .await?;
        match attempt {
            Attempt::Appended(landed) => {
                let recorded = recorded(stream, events, landed)?;
                self.run_inline(tx, &recorded).await?;
                tx.appended();
                Ok(recorded)
            }
            Attempt::Replayed(stored) => Ok(stored),
            Attempt::Conflict(actual) => Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual,
            }),
            Attempt::Race => Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual: self.stream_version(stream).await?,
            }),
        }
    }

    async fn run_inline(&self, tx: &mut PgTx, recorded: &[RecordedEvent]) -> Result<(), Error> {
        for projection in &self.inner.inline {
            projection
                .apply(tx.conn(), recorded)
                .await
                .map_err(|source| {
                    projection_error(
                        projection.name(),
                        recorded.first().map_or(0, |e| e.position),
                        source,
                    )
                })?;
        }
        Ok(())
    }

    /// Runs the read `query` on a pooled connection, and again on another while the
    /// connection turns out dead (killed by the server, reset) rather than the read failing,
    /// at most once per pooled connection: a pool checks only connections idle for
    /// [`StoreOptions::ping_after_idle`], so after the server dropped them all, each may be
    /// handed out once more before it is discarded. A read changes nothing, so it is safe
    /// to repeat.
    pub(crate) async fn read<T, F, Fut>(&self, query: F) -> Result<T, Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let mut tries = self.pool.options().get_max_connections();
        loop {
            match query().await {
                Err(lost) if tries > 0 && error::connection_lost(&lost) => {
                    tracing::debug!(error = %lost, "connection lost under a read; reading again");
                    tries -= 1;
                }
                done => return done.map_err(error::uncommitted),
            }
        }
    }

    /// One attempt: when `fast`, the plain-SQL statement first (`sql::append_one` for one
    /// event, `sql::append_fast` for more), then `es_append` if that wrote nothing.
    async fn attempt(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
        fast: bool,
        phase: Phase,
    ) -> Result<Attempt, Error> {
        let sql = &self.inner.sql;
        let known =
            matches!(expected, ExpectedVersion::Exact(v) if self.inner.known.holds(stream, v));
        let check = Check::of(expected, known);
        if fast && let [event] = events {
            let schema_version = i32::try_from(event.schema_version).map_err(|_| {
                Error::Invalid(format!(
                    "schema version {} exceeds i32",
                    event.schema_version
                ))
            })?;
            match sqlx::query_as::<_, OneAppendRow>(AssertSqlSafe(sql.append_one.get(check)))
                .bind(&stream.aggregate_type)
                .bind(&stream.aggregate_id)
                .bind(expected_code(expected)?)
                .bind(event.event_id)
                .bind(&event.event_name)
                .bind(schema_version)
                .bind(Json(&*event.payload))
                .bind(Json(&event.metadata))
                .fetch_optional(&mut *conn)
                .await
            {
                Ok(Some(row)) => {
                    let landed = row.landed(stream).map_err(|e| after_write(e, phase))?;
                    return Ok(Attempt::Appended(vec![landed]));
                }
                Ok(None) => {}
                Err(e) if lost_race(&e) => return Ok(Attempt::Race),
                Err(e) => return Err(error::classify(e, phase)),
            }
        }
        let columns = Columns::new(events)?;
        if fast && events.len() > 1 {
            match columns
                .bind::<FastAppendRow>(sql.append_fast.get(check), stream, expected)?
                .fetch_one(&mut *conn)
                .await
            {
                Ok(row) => {
                    if let Some(landed) = row
                        .landed(stream, events.len())
                        .map_err(|e| after_write(e, phase))?
                    {
                        return Ok(Attempt::Appended(landed));
                    }
                }
                Err(e) if lost_race(&e) => return Ok(Attempt::Race),
                Err(e) => return Err(error::classify(e, phase)),
            }
        }
        let rows = match columns
            .bind::<AppendRow>(sql.append.clone(), stream, expected)?
            .fetch_all(&mut *conn)
            .await
        {
            Ok(rows) => rows,
            Err(e) if lost_race(&e) => return Ok(Attempt::Race),
            Err(e) => return Err(error::classify(e, phase)),
        };
        match AppendRow::outcome(rows, stream).map_err(|e| after_write(e, phase))? {
            AppendOutcome::Appended(landed) => {
                if landed.len() != events.len() {
                    return Err(after_write(
                        Error::backend(format!(
                            "the append to {stream} returned {} rows for {} events",
                            landed.len(),
                            events.len()
                        )),
                        phase,
                    ));
                }
                Ok(Attempt::Appended(landed))
            }
            AppendOutcome::Conflict(actual) => Ok(Attempt::Conflict(actual)),
            AppendOutcome::Stored(stored) => {
                replayed(stream, events, stored).map(Attempt::Replayed)
            }
        }
    }

    /// Appends on a pooled connection, each statement in its own implicit transaction,
    /// retrying the races the unique keys catch. `fast`: try the plain-SQL statement first
    /// (false when it is known to write nothing).
    pub(crate) async fn append_pooled(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        fast: bool,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let mut conn = self.pool.acquire().await.map_err(error::acquire)?;
        let mut races = 0u32;
        loop {
            let attempt = self
                .attempt(
                    &mut conn,
                    stream,
                    expected,
                    &events,
                    fast && races == 0,
                    Phase::Committing,
                )
                .await?;
            match attempt {
                Attempt::Appended(landed) => {
                    self.inner.signals.committed();
                    // Written: a failure from here on leaves the outcome unknown to the caller.
                    return recorded(stream, events, landed)
                        .map_err(|e| Error::OutcomeUnknown(Box::new(e)));
                }
                Attempt::Replayed(stored) => return Ok(stored),
                Attempt::Conflict(actual) => {
                    return Err(Error::Conflict {
                        stream: stream.clone(),
                        expected,
                        actual,
                    });
                }
                // A concurrent append got there first. `es_append` sorts it out: the ids are
                // checked first (an identical retry that won is returned as stored), then the
                // version (a conflict reports the actual one; `Any` and `StreamExists` just
                // append after it).
                Attempt::Race if races < MAX_RACES => races += 1,
                Attempt::Race => {
                    return Err(Error::Conflict {
                        stream: stream.clone(),
                        expected,
                        actual: self.stream_version(stream).await?,
                    });
                }
            }
        }
    }

    /// Appends in a transaction of its own with the inline projections; a lost race is
    /// retried in a new transaction, so the outcome is the plain append's.
    async fn append_inline(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let mut races = 0u32;
        loop {
            let mut tx = self.begin().await?;
            let attempt = self
                .attempt(
                    tx.conn(),
                    stream,
                    expected,
                    &events,
                    races == 0,
                    Phase::Uncommitted,
                )
                .await;
            let attempt = match attempt {
                Ok(attempt) => attempt,
                Err(e) => {
                    tx.discard().await;
                    return Err(e);
                }
            };
            match attempt {
                Attempt::Appended(landed) => {
                    let recorded = match recorded(stream, events, landed) {
                        Ok(recorded) => recorded,
                        Err(e) => {
                            tx.discard().await;
                            return Err(e);
                        }
                    };
                    if let Err(e) = self.run_inline(&mut tx, &recorded).await {
                        tx.discard().await;
                        return Err(e);
                    }
                    tx.appended();
                    tx.commit().await?;
                    return Ok(recorded);
                }
                Attempt::Replayed(stored) => {
                    tx.discard().await;
                    return Ok(stored);
                }
                Attempt::Conflict(actual) => {
                    tx.discard().await;
                    return Err(Error::Conflict {
                        stream: stream.clone(),
                        expected,
                        actual,
                    });
                }
                Attempt::Race => {
                    tx.discard().await;
                    if races >= MAX_RACES {
                        return Err(Error::Conflict {
                            stream: stream.clone(),
                            expected,
                            actual: self.stream_version(stream).await?,
                        });
                    }
                    races += 1;
                }
            }
        }
    }
}

/// Creates `schema` if needed and applies the migrations on `conn`, leaving its
/// `search_path` set to the schema (callers close the connection afterwards).
async fn migrate_on(conn: &mut PgConnection, schema: &str) -> Result<(), Error> {
    let quoted = format!("\"{schema}\"");
    // Two stores creating the same schema at once may race on the catalog; the migrator's own
    // lock serialises everything after this statement.
    if let Err(e) = sqlx::query(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted}"
    )))
    .execute(&mut *conn)
    .await
    {
        tracing::debug!(error = %e, "CREATE SCHEMA raced; continuing");
    }
    sqlx::query(AssertSqlSafe(format!("SET search_path TO {quoted}")))
        .execute(&mut *conn)
        .await
        .map_err(error::uncommitted)?;
    MIGRATOR
        .run_direct(None, &mut *conn, false)
        .await
        .map_err(Error::backend)
}

impl StreamStore for PostgresStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.inner
            .limits
            .check_append(stream, expected, &mut events)?;
        let result = if !self.inner.inline.is_empty() {
            self.append_inline(stream, expected, events).await
        } else if events.is_empty() || events.len() > crate::group::MAX_EVENTS {
            self.append_pooled(stream, expected, events, true).await
        } else {
            self.append_grouped(stream, expected, events).await
        };
        // Every path has committed (or found committed) what it reports.
        match &result {
            Ok(recorded) => {
                if let Some(last) = recorded.last() {
                    self.inner.known.saw(stream, last.version);
                }
            }
            Err(Error::Conflict { actual, .. }) => self.inner.known.saw(stream, *actual),
            Err(_) => {}
        }
        result
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        query: &StreamQuery,
    ) -> Result<Vec<RecordedEvent>, Error> {
        check_stream(stream)?;
        let names = storable_names(&query.event_names);
        let rows: Vec<EventRow> = self
            .read(|| {
                sqlx::query_as(AssertSqlSafe(self.inner.sql.read_stream.clone()))
                    .bind(&stream.aggregate_type)
                    .bind(&stream.aggregate_id)
                    .bind(clamp_i64(query.from_version))
                    .bind(query.to_version.map_or(i64::MAX, clamp_i64))
                    .bind(names.clone())
                    .bind(query.recorded_until)
                    .fetch_all(&self.pool)
            })
            .await?;
        let events: Vec<RecordedEvent> = rows
            .into_iter()
            .map(RecordedEvent::try_from)
            .collect::<Result<_, _>>()?;
        if let Some(last) = events.last() {
            self.inner.known.saw(stream, last.version);
        }
        Ok(events)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, Error> {
        check_stream(stream)?;
        let version: i64 = self
            .read(|| {
                sqlx::query_scalar(AssertSqlSafe(self.inner.sql.stream_version.clone()))
                    .bind(&stream.aggregate_type)
                    .bind(&stream.aggregate_id)
                    .fetch_one(&self.pool)
            })
            .await?;
        let version = rows::position(version, "stream version")?;
        self.inner.known.saw(stream, version);
        Ok(version)
    }

    async fn read_event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>, Error> {
        let row: Option<EventRow> = self
            .read(|| {
                sqlx::query_as(AssertSqlSafe(self.inner.sql.read_event.clone()))
                    .bind(event_id)
                    .fetch_optional(&self.pool)
            })
            .await?;
        row.map(RecordedEvent::try_from).transpose()
    }
}

impl SnapshotStore for PostgresStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, Error> {
        check_stream(stream)?;
        let row: Option<SnapshotRow> = self
            .read(|| {
                sqlx::query_as(AssertSqlSafe(self.inner.sql.load_snapshot.clone()))
                    .bind(&stream.aggregate_type)
                    .bind(&stream.aggregate_id)
                    .fetch_optional(&self.pool)
            })
            .await?;
        row.map(|row| row.convert(stream)).transpose()
    }

    async fn save_snapshot(&self, mut snapshot: Snapshot) -> Result<(), Error> {
        self.inner.limits.check_snapshot(&mut snapshot)?;
        // Both within range: checked by Limits::check_snapshot.
        let version = i64::try_from(snapshot.version).map_err(|_| {
            Error::Invalid(format!("snapshot version {} exceeds i64", snapshot.version))
        })?;
        let state_version = i32::try_from(snapshot.state_version).map_err(|_| {
            Error::Invalid(format!(
                "state version {} exceeds i32",
                snapshot.state_version
            ))
        })?;
        sqlx::query(AssertSqlSafe(self.inner.sql.save_snapshot.clone()))
            .bind(&snapshot.stream.aggregate_type)
            .bind(&snapshot.stream.aggregate_id)
            .bind(version)
            .bind(state_version)
            .bind(Json(&*snapshot.state))
            .bind(snapshot.taken_at)
            .execute(&self.pool)
            .await
            .map_err(error::committing)?;
        Ok(())
    }

    async fn load_stream(
        &self,
        stream: &StreamId,
        state_version: Option<u32>,
    ) -> Result<(Option<Snapshot>, Vec<ReplayEvent>), Error> {
        check_stream(stream)?;
        // A state version beyond i32 cannot be stored, so no snapshot can match it.
        let state_version = state_version.and_then(|v| i32::try_from(v).ok());
        let rows: Vec<LoadRow> = self
            .read(|| {
                sqlx::query_as(AssertSqlSafe(self.inner.sql.load_stream.clone()))
                    .bind(&stream.aggregate_type)
                    .bind(&stream.aggregate_id)
                    .bind(state_version)
                    .fetch_all(&self.pool)
            })
            .await?;
        let mut snapshot: Option<Snapshot> = None;
        let mut events: Vec<ReplayEvent> = Vec::with_capacity(rows.len());
        for row in rows {
            match row.convert(stream)? {
                rows::Loaded::Snapshot(s) => snapshot = Some(s),
                rows::Loaded::Event(e) => events.push(e),
            }
        }
        // The snapshot counts only if its stream has an event at its version (see the SQL).
        let last = events
            .last()
            .map(|e| e.version)
            .or(snapshot.as_ref().map(|s| s.version));
        self.inner.known.saw(stream, last.unwrap_or(0));
        Ok((snapshot, events))
    }
}
