//! One run, one PostgreSQL, three implementations of the same bank-account workload:
//! (a) our `PostgresStore` through `Repository` and the consumer runtime, (b) hand-written sqlx
//! doing the same work on a table of exactly our shape and size, (c) postgres-es 0.5 with
//! cqrs-es 0.5. Prints a markdown table of throughput and ratios, and writes the same cells as
//! JSON lines (one per cell, with its ratios) for scripts.
//!
//! ```text
//! CARGO_TARGET_DIR=target-compare cargo run --release --manifest-path bench/compare/Cargo.toml
//! ```
//!
//! - `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) is the admin
//!   connection; the benchmark drops and recreates the database `es_bench` on that server.
//! - `BENCH_SECONDS` (default 3) is the measured time of each throughput cell, after a 0.5 s
//!   warm-up.
//! - `BENCH_ROUNDS` (default 3) is how many rounds are taken; within a round the
//!   implementations take turns in an order that rotates from round to round.
//! - `BENCH_JSONL` (default `bench/compare/results.jsonl`) is where the JSON lines go.
//! - `BENCH_REBUILD_EVENTS` (default 1,000,000) sizes the rebuild's log, for smoke runs.
//! - `BENCH_ONLY` (for example `commands,appends`) runs a subset of `commands`, `appends`,
//!   `loads` and `rebuild`.
//!
//! What makes the baselines fair:
//! - the hand-written table is created `LIKE` ours (columns, defaults, constraints and
//!   indexes) and topped up with filler rows to our row count before every cell, and every
//!   cell starts right after a `CHECKPOINT`;
//! - a single append is compared with a plain INSERT and with one that returns what an
//!   append reports (position, version, time);
//! - the hand-written pool checks connections the way ours does (a round trip only for a
//!   connection idle for a second), so neither pays for pool settings;
//! - loads read the same columns ours reads (version, name, schema version, payload), and the
//!   hand-written snapshot load is one statement, as ours is;
//! - a cached command is compared with a hand-written cached command (state kept in memory,
//!   one INSERT at the known version, no read); an uncached one with SELECT + fold + INSERT;
//! - a rebuild is compared with hand-written reads of the same rows in global order (keyset
//!   pages of the same size, the same columns, the same aggregate-type filter) and with a raw
//!   `COPY ... TO`; postgres-es's replay reads per-stream order and is listed for scale only.
//!
//! Rows marked `lever:` isolate one lever of issue 16 in the same run: our store with one
//! option changed (state cache, group commit, NOTIFY, pinging every acquire, read-ahead), or
//! our append statement sent by hand with one part changed (without the announcement, which
//! is unsafe and measured only; unprepared; the previous array statement; the write path of
//! the `xid8` commit-order design). Ratio cells also give the range of the ratios taken round
//! by round (each round measures every implementation once, next to each other).

mod domain;
mod levers;
mod report;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_es::EventStore as _;
use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore, SerializedEvent};
use es_core::{
    AtLeastOnce, BoxError, Consumer, Envelope, EventHandler, ExpectedVersion, LocalCheckpoints,
    Metadata, NewEvent, Repository, Snapshot, SnapshotStore, StreamId, StreamStore,
};
use es_postgres::{PostgresStore, StoreOptions};
use futures::TryStreamExt;
use serde_json::value::RawValue;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use domain::peer::{PeerAccount, PeerCommand, PeerEvent};
use domain::{
    AccountOpened, BankAccount, BankAccountEvent, BankError, MoneyDeposited, PlainAccount,
    SnapAccount,
};
use report::{Kind, Report};

type Res<T> = Result<T, Box<dyn StdError + Send + Sync>>;

const DB: &str = "es_bench";
const ACCOUNTS_PER_WRITER: usize = 200;
const LOAD_EVENTS: i64 = 10_000;

// ------------------------------------------------------------------------------------------
// Measuring

/// The measured window of a throughput cell: a warm-up, then `measure`.
struct Window {
    from: Instant,
    to: Instant,
}

impl Window {
    fn open(&self) -> bool {
        Instant::now() < self.to
    }

    /// `n` if the operation that just finished completed inside the measured window.
    fn count(&self, n: u64) -> u64 {
        let now = Instant::now();
        if now >= self.from && now < self.to {
            n
        } else {
            0
        }
    }
}

fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(3)
        .max(1)
}

/// Events in the rebuild's log: 1M unless `BENCH_REBUILD_EVENTS` says otherwise (smoke runs).
fn projection_events() -> i64 {
    std::env::var("BENCH_REBUILD_EVENTS")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(1_000_000)
        .max(10_000)
}

fn measure_time() -> Duration {
    let secs = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// `items` in the order of round `round`: each round starts one further along.
fn turns<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    let mut order = items.to_vec();
    if !order.is_empty() {
        let len = order.len();
        order.rotate_left(round % len);
    }
    order
}

/// Runs `writers` tasks, each looping `task` until the window closes; returns operations per
/// second inside the window.
async fn timed<F, Fut>(writers: usize, task: F) -> Res<f64>
where
    F: Fn(usize, Arc<Window>) -> Fut,
    Fut: Future<Output = Res<u64>> + Send + 'static,
{
    let measure = measure_time();
    let now = Instant::now();
    let window = Arc::new(Window {
        from: now + Duration::from_millis(500),
        to: now + Duration::from_millis(500) + measure,
    });
    let handles: Vec<_> = (0..writers)
        .map(|w| tokio::spawn(task(w, window.clone())))
        .collect();
    let mut total = 0;
    for handle in handles {
        total += handle.await??;
    }
    Ok(total as f64 / measure.as_secs_f64())
}

/// Runs `op` `n` times one after the other (after one warm-up call); returns operations per
/// second.
async fn repeated<F, Fut>(n: usize, mut op: F) -> Res<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Res<()>>,
{
    op().await?;
    let start = Instant::now();
    for _ in 0..n {
        op().await?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

// ------------------------------------------------------------------------------------------
// Setup

struct Env {
    url: String,
    /// Our store, default options (NOTIFY on, group commit, state cache), schema `ours`.
    ours: PostgresStore,
    /// The same tables through a store with NOTIFY off.
    ours_quiet: PostgresStore,
    /// The same tables, group commit off.
    ours_nogroup: PostgresStore,
    /// The same tables, every pooled connection pinged before use (sqlx's default).
    ours_ping: PostgresStore,
    /// The same tables, NOTIFY at most every 20 ms (default 2 ms).
    ours_notify2: PostgresStore,
    /// Hand-written statements: schema `hand`, a table created `LIKE ours.events`. Its pool
    /// checks connections the way ours does (only after a second idle).
    hand: PgPool,
    /// postgres-es on its own tables (schema `pges`), sqlx 0.8.
    peer: sqlx08::PgPool,
}

fn bench_url(admin: &str) -> String {
    match admin.rsplit_once('/') {
        Some((base, _db)) => format!("{base}/{DB}"),
        None => format!("{admin}/{DB}"),
    }
}

async fn setup(admin_url: &str) -> Res<Env> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {DB} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {DB}")))
        .execute(&admin)
        .await?;
    admin.close().await;
    let url = bench_url(admin_url);

    let ours =
        PostgresStore::connect_with(&url, StoreOptions::new().schema("ours").max_connections(9))
            .await?;
    let ours_quiet = PostgresStore::connect_with(
        &url,
        StoreOptions::new()
            .schema("ours")
            .notify(false)
            .max_connections(9),
    )
    .await?;
    let ours_nogroup = PostgresStore::connect_with(
        &url,
        StoreOptions::new()
            .schema("ours")
            .group_commit(0)
            .max_connections(9),
    )
    .await?;
    let ours_ping = PostgresStore::connect_with(
        &url,
        StoreOptions::new()
            .schema("ours")
            .ping_after_idle(Duration::ZERO)
            .max_connections(9),
    )
    .await?;
    let ours_notify2 = PostgresStore::connect_with(
        &url,
        StoreOptions::new()
            .schema("ours")
            .notify_interval(Duration::from_millis(2))
            .max_connections(9),
    )
    .await?;
    // The pool checks a connection only after it sat idle for a second, as our store's pool
    // does (StoreOptions::ping_after_idle): sqlx's default pings before every statement, a
    // round trip each, which would make the baseline pay for pool settings, not for work.
    let hand = PgPoolOptions::new()
        .max_connections(9)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= Duration::from_secs(1) {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect(&url)
        .await?;
    for ddl in [
        "CREATE SCHEMA hand",
        // Exactly the shape of our `events` table: columns, defaults, identity, constraints
        // and indexes (the hand-written INSERT maintains what ours maintains).
        "CREATE TABLE hand.events (LIKE ours.events INCLUDING ALL)",
        // The commit-order design's write path (a lever row): our shape plus an xid8 column
        // and its index, no announcement.
        "CREATE SCHEMA hx",
        "CREATE TABLE hx.events (LIKE ours.events INCLUDING ALL, \
           xid xid8 NOT NULL DEFAULT pg_current_xact_id())",
        "CREATE INDEX events_xid_position_idx ON hx.events (xid, position)",
        // postgres-es 0.5's own migration (db/init.sql), in schemas of their own.
        "CREATE SCHEMA pges",
        "CREATE SCHEMA pgproj",
    ] {
        sqlx::query(AssertSqlSafe(ddl)).execute(&hand).await?;
    }
    for schema in ["pges", "pgproj"] {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {schema}.events (
                aggregate_type text                         NOT NULL,
                aggregate_id   text                         NOT NULL,
                sequence       bigint CHECK (sequence >= 0) NOT NULL,
                event_type     text                         NOT NULL,
                event_version  text                         NOT NULL,
                payload        json                         NOT NULL,
                metadata       json                         NOT NULL,
                PRIMARY KEY (aggregate_type, aggregate_id, sequence))"
        )))
        .execute(&hand)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {schema}.snapshots (
                aggregate_type   text                                 NOT NULL,
                aggregate_id     text                                 NOT NULL,
                last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
                current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
                payload          json                                 NOT NULL,
                PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))"
        )))
        .execute(&hand)
        .await?;
    }
    let peer = sqlx08::postgres::PgPoolOptions::new()
        .max_connections(9)
        .connect(&url)
        .await?;
    Ok(Env {
        url,
        ours,
        ours_quiet,
        ours_nogroup,
        ours_ping,
        ours_notify2,
        hand,
        peer,
    })
}

fn peer_repo(env: &Env) -> postgres_es::PostgresEventRepository {
    postgres_es::PostgresEventRepository::new(env.peer.clone())
        .with_tables("pges.events", "pges.snapshots")
}

/// Tops up `ours.events`, `hand.events` and `hx.events` to the row count of the largest with
/// filler rows (one event each in streams nobody reads), so that every cell writes into
/// tables of equal size, then takes a `CHECKPOINT`, so that every cell starts at the same
/// point of the checkpoint cycle (the first write of each page after a checkpoint logs the
/// whole page: a cell that happened to run just after one paid more).
async fn equalize(env: &Env) -> Res<()> {
    const TABLES: [&str; 3] = ["ours.events", "hand.events", "hx.events"];
    let mut counts = Vec::new();
    for table in TABLES {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&env.hand)
            .await?;
        counts.push(n);
    }
    let most = counts.iter().copied().max().unwrap_or(0);
    for (table, n) in TABLES.into_iter().zip(counts) {
        let missing = most - n;
        if missing > 0 {
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {table} (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata, recorded_at)
                 SELECT gen_random_uuid(), 'Filler', 'filler-' || gen_random_uuid(), 1, 'MoneyDeposited', 1,
                        '{{\"amount\":1,\"reference\":\"filler\"}}', '{{\"user_id\":\"bench\"}}', now()
                 FROM generate_series(1, {missing})"
            )))
            .execute(&env.hand)
            .await?;
        }
    }
    sqlx::query("CHECKPOINT").execute(&env.hand).await?;
    Ok(())
}

/// Sizes of the two events tables (rows, bytes with indexes), for the report.
async fn table_sizes(env: &Env) -> Res<Vec<(String, i64, i64)>> {
    let mut out = Vec::new();
    for table in ["ours.events", "hand.events", "hx.events"] {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT count(*), pg_total_relation_size('{table}') FROM {table}"
        )))
        .fetch_one(&env.hand)
        .await?;
        out.push((table.to_owned(), row.try_get(0)?, row.try_get(1)?));
    }
    Ok(out)
}

/// Seeds `writers * ACCOUNTS_PER_WRITER` opened accounts `{prefix}-w{w}-{i}` in one statement:
/// in our table shape (`table` = `ours.events` or `hand.events`) or in postgres-es's.
async fn seed_accounts(env: &Env, table: &str, prefix: &str, writers: usize) -> Res<()> {
    let n = (writers * ACCOUNTS_PER_WRITER) as i64;
    let per = ACCOUNTS_PER_WRITER as i64;
    let sql = if table == "pges.events" {
        format!(
            "INSERT INTO pges.events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'BankAccount', '{prefix}-w' || (g / {per}) || '-' || (g % {per}), 1, 'AccountOpened', '1.0',
                    '{{\"AccountOpened\":{{\"owner\":\"bench\",\"overdraft_limit\":0}}}}', '{{}}'
             FROM generate_series(0, {n} - 1) g"
        )
    } else {
        format!(
            "INSERT INTO {table} (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata, recorded_at)
             SELECT gen_random_uuid(), 'BankAccount', '{prefix}-w' || (g / {per}) || '-' || (g % {per}), 1, 'AccountOpened', 1,
                    '{{\"owner\":\"bench\",\"overdraft_limit\":0}}', '{{}}', now()
             FROM generate_series(0, {n} - 1) g"
        )
    };
    sqlx::query(AssertSqlSafe(sql)).execute(&env.hand).await?;
    Ok(())
}

fn account(prefix: &str, w: usize, i: usize) -> String {
    format!("{prefix}-w{w}-{}", i % ACCOUNTS_PER_WRITER)
}

fn deposit_event(i: u64, metadata: &Metadata) -> Res<NewEvent> {
    Ok(NewEvent::from_event(
        &MoneyDeposited {
            amount: (i % 1000) as i64 + 1,
            reference: format!("ref-{i}"),
        },
        metadata.clone(),
    )?)
}

fn peer_deposit(id: &str, sequence: usize, i: u64) -> Res<SerializedEvent> {
    let event = PeerEvent::MoneyDeposited {
        amount: (i % 1000) as i64 + 1,
        reference: format!("ref-{i}"),
    };
    Ok(SerializedEvent::new(
        id.to_owned(),
        sequence,
        "BankAccount".to_owned(),
        "MoneyDeposited".to_owned(),
        "1.0".to_owned(),
        serde_json::to_value(&event)?,
        serde_json::json!({ "user_id": "bench" }),
    ))
}

// The hand-written statements, in one place.

const HAND_INSERT: &str = "INSERT INTO hand.events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata, recorded_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())";

/// The same, returning what an append reports.
const HAND_INSERT_RETURNING: &str = "INSERT INTO hand.events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata, recorded_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now()) RETURNING position, version, recorded_at";

/// `sql` (one of the single-row INSERTs above) with `e` bound at `version` of stream `id`.
fn hand_insert<'q>(
    sql: &'static str,
    e: &'q NewEvent,
    id: &'q str,
    version: i64,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(e.event_id)
        .bind("BankAccount")
        .bind(id)
        .bind(version)
        .bind(&e.event_name)
        .bind(1i32)
        .bind(Json(&*e.payload))
        .bind(Json(&e.metadata))
}

const HAND_INSERT_MANY: &str = "INSERT INTO hand.events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata, recorded_at) \
     SELECT u.id, $2, $3, u.version, u.name, 1, u.payload, u.meta, now() \
     FROM unnest($1::uuid[], $4::bigint[], $5::text[], $6::jsonb[], $7::jsonb[]) AS u (id, version, name, payload, meta)";

/// What our `load_stream` reads for a replay: version, name, schema version, payload.
const HAND_SELECT_STREAM: &str = "SELECT version, event_name, schema_version, payload FROM hand.events \
     WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY version";

/// The same, on our table (the 10k load reads the rows ours reads).
const OURS_SELECT_STREAM: &str = "SELECT version, event_name, schema_version, payload FROM ours.events \
     WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY version";

/// A snapshot of the asked state version and the events after it, in one statement: the
/// snapshot row first (`kind` 0), then the events (`kind` 1) by version.
const OURS_SELECT_SNAPSHOT_AND_AFTER: &str = "WITH snap AS ( \
         SELECT version, state FROM ours.snapshots \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND state_version = $3) \
     SELECT 0 AS kind, s.version, NULL::text AS event_name, NULL::integer AS schema_version, s.state AS payload FROM snap s \
     UNION ALL \
     SELECT 1, e.version, e.event_name, e.schema_version, e.payload FROM ours.events e \
     WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 \
       AND e.version > coalesce((SELECT version FROM snap), 0) \
     ORDER BY kind, version";

/// Folds rows of (version, event_name, schema_version, payload) into a plain account;
/// returns the last version.
fn fold_rows(state: &mut PlainAccount, rows: &[sqlx::postgres::PgRow]) -> Res<i64> {
    let mut version = 0i64;
    for row in rows {
        version = row.try_get(0)?;
        let name: &str = row.try_get(1)?;
        let schema_version: i32 = row.try_get(2)?;
        let payload: Box<RawValue> = row.try_get(3)?;
        if schema_version != 1 {
            return Err(format!("unexpected schema version {schema_version}").into());
        }
        state.apply_row(name, payload.get())?;
    }
    Ok(version)
}

async fn hand_load(pool: &PgPool, id: &str) -> Res<(i64, PlainAccount)> {
    let rows = sqlx::query(HAND_SELECT_STREAM)
        .bind("BankAccount")
        .bind(id)
        .fetch_all(pool)
        .await?;
    let mut state = PlainAccount::default();
    let version = fold_rows(&mut state, &rows)?;
    Ok((version, state))
}

async fn hand_insert_deposit(
    pool: &PgPool,
    id: &str,
    version: i64,
    meta: &Metadata,
) -> Result<(), sqlx::Error> {
    let payload = serde_json::value::to_raw_value(&MoneyDeposited {
        amount: 10,
        reference: "bench".into(),
    })
    .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(HAND_INSERT)
        .bind(Uuid::now_v7())
        .bind("BankAccount")
        .bind(id)
        .bind(version + 1)
        .bind("MoneyDeposited")
        .bind(1i32)
        .bind(Json(&*payload))
        .bind(Json(&meta.for_events()))
        .execute(pool)
        .await?;
    Ok(())
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("23505"))
}

// ------------------------------------------------------------------------------------------
// Commands: load + decide + append one event

#[derive(Clone, Copy, PartialEq, Eq)]
enum CommandImpl {
    /// `Repository::execute` as a user gets it: state cache on, group commit, NOTIFY on.
    OursDefault,
    /// Lever: the state cache off (every command reads the stream).
    OursUncached,
    /// Lever: NOTIFY off.
    OursQuiet,
    /// Lever: group commit off.
    OursNoGroup,
    /// Lever: every pooled connection pinged before use (sqlx's default).
    OursPingAlways,
    /// SELECT the stream, fold, decide, INSERT (autocommit).
    HandNaive,
    /// The state of each account kept in memory; INSERT at the known version with no read
    /// (a unique violation reloads).
    HandCached,
    /// postgres-es: `CqrsFramework::execute`.
    Peer,
}

impl CommandImpl {
    const ALL: [CommandImpl; 8] = [
        CommandImpl::OursDefault,
        CommandImpl::HandCached,
        CommandImpl::Peer,
        CommandImpl::OursUncached,
        CommandImpl::HandNaive,
        CommandImpl::OursQuiet,
        CommandImpl::OursNoGroup,
        CommandImpl::OursPingAlways,
    ];

    fn label(self) -> &'static str {
        match self {
            CommandImpl::OursDefault => "ours: Repository::execute (default: state cache on)",
            CommandImpl::OursUncached => "lever: execute, state cache off",
            CommandImpl::OursQuiet => "lever: execute, NOTIFY off",
            CommandImpl::OursNoGroup => "lever: execute, group commit off",
            CommandImpl::OursPingAlways => "lever: execute, ping on every acquire",
            CommandImpl::HandNaive => "hand-written: SELECT stream + fold + INSERT",
            CommandImpl::HandCached => {
                "hand-written: cached state, INSERT at known version, no read"
            }
            CommandImpl::Peer => "postgres-es: CqrsFramework::execute",
        }
    }

    fn kind(self) -> Kind {
        match self {
            CommandImpl::OursDefault => Kind::Ours,
            CommandImpl::OursUncached
            | CommandImpl::OursQuiet
            | CommandImpl::OursNoGroup
            | CommandImpl::OursPingAlways => Kind::Lever,
            CommandImpl::HandNaive | CommandImpl::HandCached => Kind::Hand,
            CommandImpl::Peer => Kind::Peer,
        }
    }

    /// Whether the row is measured with `writers` writers (levers of concurrency only where
    /// there is any).
    fn runs_with(self, writers: usize) -> bool {
        !matches!(self, CommandImpl::OursQuiet | CommandImpl::OursNoGroup) || writers > 1
    }

    fn table(self) -> &'static str {
        match self.kind() {
            Kind::Ours | Kind::Lever => "ours.events",
            Kind::Hand => "hand.events",
            _ => "pges.events",
        }
    }
}

async fn command_cell(env: &Env, imp: CommandImpl, prefix: &str, writers: usize) -> Res<f64> {
    let meta = Metadata::by_user("bench");
    match imp {
        CommandImpl::OursDefault
        | CommandImpl::OursUncached
        | CommandImpl::OursQuiet
        | CommandImpl::OursNoGroup
        | CommandImpl::OursPingAlways => {
            let store = match imp {
                CommandImpl::OursQuiet => env.ours_quiet.clone(),
                CommandImpl::OursNoGroup => env.ours_nogroup.clone(),
                CommandImpl::OursPingAlways => env.ours_ping.clone(),
                _ => env.ours.clone(),
            };
            let mut repo = Repository::<BankAccount, _>::new(store);
            if imp == CommandImpl::OursUncached {
                repo = repo.without_state_cache();
            }
            timed(writers, |w, window| {
                let (repo, meta, prefix) = (repo.clone(), meta.clone(), prefix.to_owned());
                async move {
                    let (mut done, mut i) = (0, 0usize);
                    while window.open() {
                        let id = account(&prefix, w, i);
                        repo.execute(&id, meta.clone(), |a| a.deposit(10, "bench"))
                            .await
                            .map_err(|e| format!("execute: {e}"))?;
                        done += window.count(1);
                        i += 1;
                    }
                    Ok(done)
                }
            })
            .await
        }
        CommandImpl::HandNaive | CommandImpl::HandCached => {
            let cached = imp == CommandImpl::HandCached;
            timed(writers, |w, window| {
                let (pool, meta, prefix) = (env.hand.clone(), meta.clone(), prefix.to_owned());
                async move {
                    let mut cache: HashMap<String, (i64, PlainAccount)> = HashMap::new();
                    let (mut done, mut i) = (0, 0usize);
                    while window.open() {
                        let id = account(&prefix, w, i);
                        let (version, mut state) = match cache.remove(&id) {
                            Some(known) => known,
                            None => hand_load(&pool, &id).await?,
                        };
                        if !state.open {
                            return Err(BankError::NotOpen.into());
                        }
                        match hand_insert_deposit(&pool, &id, version, &meta).await {
                            Ok(()) => {
                                state.apply_row(
                                    "MoneyDeposited",
                                    r#"{"amount":10,"reference":"bench"}"#,
                                )?;
                                if cached {
                                    cache.insert(id, (version + 1, state));
                                }
                                done += window.count(1);
                                i += 1;
                            }
                            // Someone else wrote: the cached state was stale; reload and decide again.
                            Err(e) if cached && is_unique_violation(&e) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Ok(done)
                }
            })
            .await
        }
        CommandImpl::Peer => {
            let cqrs = Arc::new(cqrs_es::CqrsFramework::new(
                PersistedEventStore::<_, PeerAccount>::new_event_store(peer_repo(env)),
                vec![],
                (),
            ));
            timed(writers, |w, window| {
                let (cqrs, prefix) = (cqrs.clone(), prefix.to_owned());
                async move {
                    let (mut done, mut i) = (0, 0usize);
                    while window.open() {
                        let id = account(&prefix, w, i);
                        cqrs.execute_with_metadata(
                            &id,
                            PeerCommand::Deposit(10, "bench".into()),
                            HashMap::from([("user_id".to_owned(), "bench".to_owned())]),
                        )
                        .await
                        .map_err(|e| format!("postgres-es execute: {e}"))?;
                        done += window.count(1);
                        i += 1;
                    }
                    Ok(done)
                }
            })
            .await
        }
    }
}

async fn bench_commands(env: &Env, report: &mut Report) -> Res<()> {
    for round in 0..rounds() {
        for writers in [1usize, 8] {
            let op: &'static str = if writers == 1 {
                "command (load+decide+append 1), 1 writer"
            } else {
                "command (load+decide+append 1), 8 writers"
            };
            let contenders: Vec<CommandImpl> = CommandImpl::ALL
                .into_iter()
                .filter(|c| c.runs_with(writers))
                .collect();
            for (k, imp) in turns(&contenders, round).into_iter().enumerate() {
                equalize(env).await?;
                let prefix = format!("r{round}c{writers}i{k}");
                seed_accounts(env, imp.table(), &prefix, writers).await?;
                let rate = command_cell(env, imp, &prefix, writers).await?;
                report.add(op, imp.kind(), imp.label(), rate, "commands/s");
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Appends: 1 event and 100 events per call, at a known version

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum AppendImpl {
    Ours,
    OursQuiet,
    OursNoGroup,
    OursPingAlways,
    OursNotify2,
    Hand,
    /// The hand-written INSERT returning what an append reports (position, version, time).
    HandReturning,
    Peer,
    /// Our one-event statement, sent by hand (see `levers`), for a version the store knows.
    SqlOne,
    /// The same, looking for the expected version first (a version the store has not seen).
    SqlOneProbed,
    /// The same without the announcement (measurement only: a follower could skip).
    SqlOneUnannounced,
    /// The same, unprepared (parsed and planned on every call).
    SqlOneUnprepared,
    /// The array statement every append used before.
    SqlArrays,
    /// The commit-order design's write path: INSERT with an xid8 column and its index.
    Xid8Insert,
}

impl AppendImpl {
    fn label(self, batch: usize) -> (Kind, &'static str) {
        match self {
            AppendImpl::Ours => (Kind::Ours, "ours: PostgresStore::append (Exact)"),
            AppendImpl::OursQuiet => (Kind::Lever, "lever: append, NOTIFY off"),
            AppendImpl::OursNoGroup => (Kind::Lever, "lever: append, group commit off"),
            AppendImpl::OursPingAlways => (Kind::Lever, "lever: append, ping on every acquire"),
            AppendImpl::OursNotify2 => (
                Kind::Lever,
                "lever: append, NOTIFY at most every 2 ms (the previous default)",
            ),
            AppendImpl::Hand if batch == 1 => {
                (Kind::Hand, "hand-written: single INSERT (autocommit)")
            }
            AppendImpl::Hand => (Kind::Hand, "hand-written: one multi-row INSERT (unnest)"),
            AppendImpl::HandReturning => (
                Kind::Hand,
                "hand-written: INSERT RETURNING position, version, time (autocommit)",
            ),
            AppendImpl::Peer => (Kind::Peer, "postgres-es: PostgresEventRepository::persist"),
            AppendImpl::SqlOne => (Kind::Lever, "lever: our one-event statement, sent by hand"),
            AppendImpl::SqlOneProbed => (
                Kind::Lever,
                "lever: our one-event statement, looking for the expected version",
            ),
            AppendImpl::SqlOneUnannounced => (
                Kind::Lever,
                "lever: our one-event statement without the announcement (unsafe)",
            ),
            AppendImpl::SqlOneUnprepared => {
                (Kind::Lever, "lever: our one-event statement, unprepared")
            }
            AppendImpl::SqlArrays => (
                Kind::Lever,
                "lever: the previous array statement (unnest + aggregate), sent by hand",
            ),
            AppendImpl::Xid8Insert => (
                Kind::Lever,
                "lever: xid8 design's write (INSERT + xid8 column and index, no announcement)",
            ),
        }
    }
}

/// One event through one of the hand-sent statements: the INSERT returning what an append
/// reports, or a lever.
async fn lever_append(
    pool: &PgPool,
    imp: AppendImpl,
    id: &str,
    version: i64,
    e: &NewEvent,
) -> Res<()> {
    match imp {
        AppendImpl::HandReturning => {
            let row = hand_insert(HAND_INSERT_RETURNING, e, id, version + 1)
                .fetch_one(pool)
                .await?;
            let _position: i64 = row.try_get(0)?;
            let _version: i64 = row.try_get(1)?;
            let _at: chrono::DateTime<chrono::Utc> = row.try_get(2)?;
        }
        AppendImpl::SqlOne
        | AppendImpl::SqlOneProbed
        | AppendImpl::SqlOneUnannounced
        | AppendImpl::SqlOneUnprepared => {
            let sql = levers::one_event(
                imp != AppendImpl::SqlOneUnannounced,
                // As the store: there is nothing to look for before the first event.
                imp == AppendImpl::SqlOneProbed && version > 0,
            );
            sqlx::query(AssertSqlSafe(sql))
                .persistent(imp != AppendImpl::SqlOneUnprepared)
                .bind("BankAccount")
                .bind(id)
                .bind(version)
                .bind(e.event_id)
                .bind(&e.event_name)
                .bind(1i32)
                .bind(Json(&*e.payload))
                .bind(Json(&e.metadata))
                .fetch_optional(pool)
                .await?
                .ok_or("the lever statement wrote nothing")?;
        }
        AppendImpl::SqlArrays => {
            let row = sqlx::query(AssertSqlSafe(levers::arrays()))
                .bind("BankAccount")
                .bind(id)
                .bind(version)
                .bind(&[e.event_id][..])
                .bind(&[e.event_name.as_str()][..])
                .bind(&[1i32][..])
                .bind(&[Json(&*e.payload)][..])
                .bind(&[Json(&e.metadata)][..])
                .fetch_one(pool)
                .await?;
            let positions: Option<Vec<i64>> = row.try_get(0)?;
            positions.ok_or("the lever statement wrote nothing")?;
        }
        AppendImpl::Xid8Insert => {
            sqlx::query(levers::XID8_INSERT)
                .bind(e.event_id)
                .bind("BankAccount")
                .bind(id)
                .bind(version + 1)
                .bind(&e.event_name)
                .bind(1i32)
                .bind(Json(&*e.payload))
                .bind(Json(&e.metadata))
                .execute(pool)
                .await?;
        }
        other => return Err(format!("{other:?} is not a lever statement").into()),
    }
    Ok(())
}

async fn append_cell(
    env: &Env,
    imp: AppendImpl,
    tag: &str,
    batch: usize,
    writers: usize,
) -> Res<f64> {
    let meta = Metadata::by_user("bench");
    match imp {
        AppendImpl::Ours
        | AppendImpl::OursQuiet
        | AppendImpl::OursNoGroup
        | AppendImpl::OursPingAlways
        | AppendImpl::OursNotify2 => {
            let store = match imp {
                AppendImpl::OursQuiet => env.ours_quiet.clone(),
                AppendImpl::OursNotify2 => env.ours_notify2.clone(),
                AppendImpl::OursNoGroup => env.ours_nogroup.clone(),
                AppendImpl::OursPingAlways => env.ours_ping.clone(),
                _ => env.ours.clone(),
            };
            timed(writers, |w, window| {
                let (store, meta) = (store.clone(), meta.clone());
                let stream = StreamId::new("BankAccount", format!("{tag}-w{w}"));
                async move {
                    let (mut done, mut version, mut i) = (0, 0u64, 0u64);
                    while window.open() {
                        let mut events = Vec::with_capacity(batch);
                        for _ in 0..batch {
                            events.push(deposit_event(i, &meta)?);
                            i += 1;
                        }
                        store
                            .append(&stream, ExpectedVersion::Exact(version), events)
                            .await?;
                        version += batch as u64;
                        done += window.count(batch as u64);
                    }
                    Ok(done)
                }
            })
            .await
        }
        AppendImpl::Hand => {
            timed(writers, |w, window| {
                let (pool, meta) = (env.hand.clone(), meta.clone());
                let id = format!("{tag}-w{w}");
                async move {
                    let (mut done, mut version, mut i) = (0, 0i64, 0u64);
                    while window.open() {
                        if batch == 1 {
                            let e = deposit_event(i, &meta)?;
                            i += 1;
                            hand_insert(HAND_INSERT, &e, &id, version + 1)
                                .execute(&pool)
                                .await?;
                        } else {
                            let mut ids = Vec::with_capacity(batch);
                            let mut versions = Vec::with_capacity(batch);
                            let mut names = Vec::with_capacity(batch);
                            let mut payloads = Vec::with_capacity(batch);
                            let mut metas = Vec::with_capacity(batch);
                            for k in 0..batch {
                                let e = deposit_event(i, &meta)?;
                                i += 1;
                                ids.push(e.event_id);
                                versions.push(version + 1 + k as i64);
                                names.push(e.event_name);
                                payloads.push(Json(e.payload));
                                metas.push(Json(e.metadata));
                            }
                            sqlx::query(HAND_INSERT_MANY)
                                .bind(ids)
                                .bind("BankAccount")
                                .bind(&id)
                                .bind(versions)
                                .bind(names)
                                .bind(payloads)
                                .bind(metas)
                                .execute(&pool)
                                .await?;
                        }
                        version += batch as i64;
                        done += window.count(batch as u64);
                    }
                    Ok(done)
                }
            })
            .await
        }
        AppendImpl::HandReturning
        | AppendImpl::SqlOne
        | AppendImpl::SqlOneProbed
        | AppendImpl::SqlOneUnannounced
        | AppendImpl::SqlOneUnprepared
        | AppendImpl::SqlArrays
        | AppendImpl::Xid8Insert => {
            timed(writers, |w, window| {
                let (pool, meta) = (env.hand.clone(), meta.clone());
                let id = format!("{tag}-w{w}");
                async move {
                    let (mut done, mut version, mut i) = (0, 0i64, 0u64);
                    while window.open() {
                        let e = deposit_event(i, &meta)?;
                        i += 1;
                        lever_append(&pool, imp, &id, version, &e).await?;
                        version += 1;
                        done += window.count(1);
                    }
                    Ok(done)
                }
            })
            .await
        }
        AppendImpl::Peer => {
            let repo = Arc::new(peer_repo(env));
            timed(writers, |w, window| {
                let repo = repo.clone();
                let id = format!("{tag}-w{w}");
                async move {
                    let (mut done, mut sequence, mut i) = (0, 0usize, 0u64);
                    while window.open() {
                        let mut events = Vec::with_capacity(batch);
                        for _ in 0..batch {
                            sequence += 1;
                            events.push(peer_deposit(&id, sequence, i)?);
                            i += 1;
                        }
                        repo.persist::<PeerAccount>(&events, None)
                            .await
                            .map_err(|e| format!("postgres-es persist: {e}"))?;
                        done += window.count(batch as u64);
                    }
                    Ok(done)
                }
            })
            .await
        }
    }
}

async fn bench_appends(env: &Env, report: &mut Report) -> Res<()> {
    use AppendImpl::*;
    // (events per call, writers, contenders): the levers of the one-event statement where a
    // single writer shows the statement's latency and eight its CPU; group commit and NOTIFY
    // where writers are concurrent.
    let configs: [(usize, usize, &[AppendImpl]); 5] = [
        (
            1,
            1,
            &[
                Ours,
                Hand,
                HandReturning,
                Peer,
                OursQuiet,
                OursNotify2,
                OursPingAlways,
                SqlOne,
                SqlOneProbed,
                SqlOneUnannounced,
                SqlOneUnprepared,
                SqlArrays,
                Xid8Insert,
            ],
        ),
        (
            1,
            8,
            &[
                Ours,
                Hand,
                HandReturning,
                Peer,
                OursQuiet,
                OursNotify2,
                OursNoGroup,
                OursPingAlways,
                SqlOne,
                SqlOneProbed,
                SqlOneUnannounced,
                Xid8Insert,
            ],
        ),
        (
            1,
            32,
            &[Ours, Hand, HandReturning, Peer, OursNoGroup, OursQuiet],
        ),
        (100, 1, &[Ours, Hand, Peer]),
        (100, 4, &[Ours, Hand, Peer, OursNoGroup]),
    ];
    for round in 0..rounds() {
        for (batch, writers, contenders) in configs {
            let op: &'static str = match (batch, writers) {
                (1, 1) => "append 1 event per call, 1 writer",
                (1, 8) => "append 1 event per call, 8 writers",
                (1, _) => "append 1 event per call, 32 writers",
                (_, 1) => "append 100 events per call, 1 writer",
                _ => "append 100 events per call, 4 writers",
            };
            let unit = if batch == 1 { "appends/s" } else { "events/s" };
            for (k, imp) in turns(contenders, round).into_iter().enumerate() {
                equalize(env).await?;
                let tag = format!("r{round}a{batch}-{writers}-i{k}");
                let rate = append_cell(env, imp, &tag, batch, writers).await?;
                let (kind, label) = imp.label(batch);
                report.add(op, kind, label, rate, unit);
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Loading a 10,000-event aggregate, without and with a snapshot

#[derive(Clone, Copy)]
enum LoadImpl {
    Ours,
    Hand,
    Peer,
}

async fn bench_loads(env: &Env, report: &mut Report) -> Res<()> {
    let id = "load-10k";
    let stream = StreamId::new("BankAccount", id);
    let meta = Metadata::by_user("bench");
    // Ours (the hand-written baselines read the same rows).
    let mut version = 0u64;
    let mut i = 0u64;
    while version < LOAD_EVENTS as u64 {
        let mut events = Vec::with_capacity(1000);
        if version == 0 {
            events.push(NewEvent::from_event(
                &AccountOpened {
                    owner: "bench".into(),
                    overdraft_limit: 0,
                },
                meta.clone(),
            )?);
        }
        while events.len() < 1000 {
            events.push(deposit_event(i, &meta)?);
            i += 1;
        }
        let n = events.len() as u64;
        env.ours
            .append(&stream, ExpectedVersion::Exact(version), events)
            .await?;
        version += n;
    }
    // postgres-es: the same payloads in its format.
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO pges.events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'BankAccount', '{id}', g,
                CASE WHEN g = 1 THEN 'AccountOpened' ELSE 'MoneyDeposited' END, '1.0',
                CASE WHEN g = 1 THEN json_build_object('AccountOpened', json_build_object('owner', 'bench', 'overdraft_limit', 0))
                     ELSE json_build_object('MoneyDeposited', json_build_object('amount', (g - 2) % 1000 + 1, 'reference', 'ref-' || (g - 2))) END,
                json_build_object('user_id', 'bench')
         FROM generate_series(1, {LOAD_EVENTS}) g"
    )))
    .execute(&env.hand)
    .await?;

    let op = "load a 10,000-event aggregate, no snapshot";
    let repo = Repository::<BankAccount, _>::new(env.ours.clone());
    let expected = repo.load(id).await?;
    let peer_store = PersistedEventStore::<_, PeerAccount>::new_event_store(peer_repo(env));
    let all = [LoadImpl::Ours, LoadImpl::Hand, LoadImpl::Peer];
    for round in 0..rounds() {
        for imp in turns(&all, round) {
            match imp {
                LoadImpl::Ours => {
                    let rate = repeated(7, || async {
                        let loaded = repo.load(id).await?;
                        if loaded.version != LOAD_EVENTS as u64
                            || loaded.balance != expected.balance
                        {
                            return Err("ours: wrong state".into());
                        }
                        Ok(())
                    })
                    .await?;
                    report.add(op, Kind::Ours, "ours: Repository::load", rate, "loads/s");
                }
                LoadImpl::Hand => {
                    let rate = repeated(7, || async {
                        let rows = sqlx::query(OURS_SELECT_STREAM)
                            .bind("BankAccount")
                            .bind(id)
                            .fetch_all(&env.hand)
                            .await?;
                        let mut state = PlainAccount::default();
                        let version = fold_rows(&mut state, &rows)?;
                        if version != LOAD_EVENTS || state.balance != expected.balance {
                            return Err("hand: wrong state".into());
                        }
                        Ok(())
                    })
                    .await?;
                    report.add(
                        op,
                        Kind::Hand,
                        "hand-written: same-columns SELECT (version, name, schema version, payload) + fold",
                        rate,
                        "loads/s",
                    );
                }
                LoadImpl::Peer => {
                    let rate = repeated(7, || async {
                        let mut ctx = peer_store
                            .load_aggregate(id)
                            .await
                            .map_err(|e| format!("postgres-es load: {e}"))?;
                        use cqrs_es::AggregateContext as _;
                        if ctx.aggregate().balance != expected.balance {
                            return Err("postgres-es: wrong state".into());
                        }
                        Ok(())
                    })
                    .await?;
                    report.add(
                        op,
                        Kind::Peer,
                        "postgres-es: EventStore::load_aggregate",
                        rate,
                        "loads/s",
                    );
                }
            }
        }
    }

    // With a snapshot at version 10,000.
    let op = "load the same aggregate from a snapshot";
    let snap_repo = Repository::<SnapAccount, _>::new(env.ours.clone());
    let state = snap_repo.load(id).await?;
    let encoded =
        es_core::Aggregate::encode_state(&state.state).ok_or("SnapAccount encodes no state")??;
    env.ours
        .save_snapshot(Snapshot {
            stream: stream.clone(),
            version: state.version,
            state_version: <SnapAccount as es_core::Aggregate>::STATE_VERSION,
            state: encoded,
            taken_at: chrono::Utc::now(),
        })
        .await?;
    let peer_state = serde_json::to_value(PeerAccount {
        balance: expected.balance,
        open: true,
        overdraft_limit: 0,
        deposits: expected.deposits,
    })?;
    sqlx::query(
        "INSERT INTO pges.snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
         VALUES ('BankAccount', $1, $2, 100, $3::json)",
    )
    .bind(id)
    .bind(LOAD_EVENTS)
    .bind(Json(peer_state))
    .execute(&env.hand)
    .await?;
    let peer_snap = PersistedEventStore::<_, PeerAccount>::new_snapshot_store(peer_repo(env), 100);
    let state_version = <SnapAccount as es_core::Aggregate>::STATE_VERSION as i32;
    for round in 0..rounds() {
        for imp in turns(&all, round) {
            match imp {
                LoadImpl::Ours => {
                    let rate = repeated(200, || async {
                        let loaded = snap_repo.load(id).await?;
                        if loaded.version != LOAD_EVENTS as u64
                            || loaded.balance != expected.balance
                        {
                            return Err("ours snapshot: wrong state".into());
                        }
                        Ok(())
                    })
                    .await?;
                    report.add(
                        op,
                        Kind::Ours,
                        "ours: Repository::load (snapshot)",
                        rate,
                        "loads/s",
                    );
                }
                LoadImpl::Hand => {
                    let rate = repeated(200, || async {
                        let rows = sqlx::query(OURS_SELECT_SNAPSHOT_AND_AFTER)
                            .bind("BankAccount")
                            .bind(id)
                            .bind(state_version)
                            .fetch_all(&env.hand)
                            .await?;
                        let (mut account, mut version, mut start) =
                            (PlainAccount::default(), 0i64, 0);
                        if let Some(first) = rows.first()
                            && first.try_get::<i32, _>(0)? == 0
                        {
                            let snapshot: Box<RawValue> = first.try_get(4)?;
                            let restored: SnapAccount = serde_json::from_str(snapshot.get())?;
                            account = PlainAccount {
                                balance: restored.balance,
                                open: restored.open,
                                overdraft_limit: restored.overdraft_limit,
                                deposits: restored.deposits,
                            };
                            version = first.try_get(1)?;
                            start = 1;
                        }
                        for row in &rows[start..] {
                            version = row.try_get(1)?;
                            let name: &str = row.try_get(2)?;
                            let payload: Box<RawValue> = row.try_get(4)?;
                            account.apply_row(name, payload.get())?;
                        }
                        if version != LOAD_EVENTS || account.balance != expected.balance {
                            return Err("hand snapshot: wrong state".into());
                        }
                        Ok(())
                    })
                    .await?;
                    report.add(
                        op,
                        Kind::Hand,
                        "hand-written: one-statement SELECT of the snapshot and the events after it",
                        rate,
                        "loads/s",
                    );
                }
                LoadImpl::Peer => {
                    let rate = repeated(200, || async {
                        let mut ctx = peer_snap
                            .load_aggregate(id)
                            .await
                            .map_err(|e| format!("postgres-es load: {e}"))?;
                        use cqrs_es::AggregateContext as _;
                        if ctx.aggregate().balance != expected.balance {
                            return Err("postgres-es snapshot: wrong state".into());
                        }
                        Ok(())
                    })
                    .await?;
                    report.add(
                        op,
                        Kind::Peer,
                        "postgres-es: snapshot store load_aggregate",
                        rate,
                        "loads/s",
                    );
                }
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Rebuilding an in-memory read model from 1M events

/// An in-memory read model: balance and deposit count per account.
#[derive(Default)]
struct Balances {
    accounts: HashMap<String, (i64, u64)>,
}

impl EventHandler for Balances {
    type Event = BankAccountEvent;

    async fn handle(&mut self, _: &mut (), e: &Envelope<BankAccountEvent>) -> Result<(), BoxError> {
        let entry = self
            .accounts
            .entry(e.record.stream.aggregate_id.clone())
            .or_default();
        match &e.event {
            BankAccountEvent::MoneyDeposited(d) => {
                entry.0 += d.amount;
                entry.1 += 1;
            }
            BankAccountEvent::MoneyWithdrawn(w) => entry.0 -= w.amount,
            BankAccountEvent::AccountOpened(_) => {}
        }
        Ok(())
    }

    async fn reset(&mut self, _: &mut ()) -> Result<(), BoxError> {
        self.accounts.clear();
        Ok(())
    }
}

fn checksum(map: &HashMap<String, (i64, u64)>) -> (usize, i64, u64) {
    map.values()
        .fold((map.len(), 0, 0), |(n, b, d), (bal, dep)| {
            (n, b + bal, d + dep)
        })
}

/// Every column of the log, as the store reads it for a consumer.
const LOG_COLUMNS: &str = "position, event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata, recorded_at";

#[derive(Clone, Copy)]
enum RebuildImpl {
    Ours(usize),
    /// Lever: the same without the store's read-ahead.
    OursNoReadAhead(usize),
    Keyset(usize),
    Copy,
    Peer,
}

async fn rebuild_cell(
    env: &Env,
    stores: &(PostgresStore, PostgresStore),
    imp: RebuildImpl,
) -> Res<((usize, i64, u64), f64, Kind, String)> {
    let start = Instant::now();
    match imp {
        RebuildImpl::Ours(batch) | RebuildImpl::OursNoReadAhead(batch) => {
            let ahead = matches!(imp, RebuildImpl::Ours(_));
            let store = if ahead { &stores.0 } else { &stores.1 };
            let mut consumer = Consumer::new(
                "balances",
                store.clone(),
                AtLeastOnce::new(LocalCheckpoints::new()),
                Balances::default(),
            )
            .batch_size(batch);
            let progress = consumer.rebuild(|_| {}).await?;
            let secs = start.elapsed().as_secs_f64();
            if progress.done != projection_events() as u64 {
                return Err(format!("ours rebuilt {} events", progress.done).into());
            }
            let default = if batch == 500 { " (the default)" } else { "" };
            Ok((
                checksum(&consumer.handler().accounts),
                secs,
                if ahead { Kind::Ours } else { Kind::Lever },
                if ahead {
                    format!("ours: Consumer::rebuild, batches of {batch}{default}")
                } else {
                    format!("lever: Consumer::rebuild, batches of {batch}, read-ahead off")
                },
            ))
        }
        RebuildImpl::Keyset(batch) => {
            // The same rows in the same order, every column decoded as the store decodes them
            // for a consumer, filtered on the aggregate type as the typed handler's filter is.
            let sql = format!(
                "SELECT {LOG_COLUMNS} FROM proj.events WHERE position > $1 AND aggregate_type = ANY($2) ORDER BY position LIMIT $3"
            );
            let types = vec!["BankAccount".to_owned()];
            let mut after = 0i64;
            let mut model: HashMap<String, (i64, u64)> = HashMap::new();
            let mut seen = 0u64;
            loop {
                let rows = sqlx::query(AssertSqlSafe(sql.clone()))
                    .bind(after)
                    .bind(&types)
                    .bind(batch as i64)
                    .fetch_all(&env.hand)
                    .await?;
                let Some(last) = rows.last() else { break };
                after = last.try_get(0)?;
                for row in &rows {
                    let _event_id: Uuid = row.try_get(1)?;
                    let aggregate_type: String = row.try_get(2)?;
                    let id: String = row.try_get(3)?;
                    let _version: i64 = row.try_get(4)?;
                    let name: &str = row.try_get(5)?;
                    let _schema: i32 = row.try_get(6)?;
                    let payload: Box<RawValue> = row.try_get(7)?;
                    let _metadata: Json<Metadata> = row.try_get(8)?;
                    let _at: chrono::DateTime<chrono::Utc> = row.try_get(9)?;
                    let _stream = StreamId::new(aggregate_type, id.as_str());
                    let entry = model.entry(id).or_default();
                    if name == "MoneyDeposited" {
                        let e: MoneyDeposited = serde_json::from_str(payload.get())?;
                        entry.0 += e.amount;
                        entry.1 += 1;
                    }
                    seen += 1;
                }
            }
            let secs = start.elapsed().as_secs_f64();
            if seen != projection_events() as u64 {
                return Err(format!("keyset loop read {seen} events").into());
            }
            Ok((
                checksum(&model),
                secs,
                Kind::Hand,
                format!("hand-written: keyset/{batch} SELECT loop, all columns, + fold"),
            ))
        }
        RebuildImpl::Copy => {
            let mut conn = env.hand.acquire().await?;
            let mut bytes = 0usize;
            {
                let copy = format!(
                    "COPY (SELECT {LOG_COLUMNS} FROM proj.events ORDER BY position) TO STDOUT"
                );
                let mut out = conn.copy_out_raw(&copy).await?;
                while let Some(chunk) = out.try_next().await? {
                    bytes += chunk.len();
                }
            }
            let secs = start.elapsed().as_secs_f64();
            eprintln!("  COPY moved {:.1} MB", bytes as f64 / 1e6);
            Ok((
                (0, 0, 0),
                secs,
                Kind::Hand,
                "hand-written: raw COPY (SELECT ... ORDER BY position) TO STDOUT".to_owned(),
            ))
        }
        RebuildImpl::Peer => {
            let repo = postgres_es::PostgresEventRepository::new(env.peer.clone())
                .with_tables("pgproj.events", "pgproj.snapshots")
                .with_streaming_channel_size(1000);
            let mut stream = repo
                .stream_all_events::<PeerAccount>()
                .await
                .map_err(|e| format!("postgres-es stream: {e}"))?;
            let mut model: HashMap<String, (i64, u64)> = HashMap::new();
            let mut seen = 0u64;
            while let Some(envelope) = stream.next::<PeerAccount>(&[]).await {
                let envelope = envelope.map_err(|e| format!("postgres-es replay: {e}"))?;
                let entry = model.entry(envelope.aggregate_id).or_default();
                if let PeerEvent::MoneyDeposited { amount, .. } = envelope.payload {
                    entry.0 += amount;
                    entry.1 += 1;
                }
                seen += 1;
            }
            let secs = start.elapsed().as_secs_f64();
            if seen != projection_events() as u64 {
                return Err(format!("postgres-es replayed {seen} events").into());
            }
            Ok((
                checksum(&model),
                secs,
                Kind::Reference,
                "postgres-es: stream_all_events (per-stream order, no global log)".to_owned(),
            ))
        }
    }
}

async fn bench_projection(env: &Env, report: &mut Report) -> Res<()> {
    let store = PostgresStore::connect_with(
        &env.url,
        StoreOptions::new().schema("proj").max_connections(4),
    )
    .await?;
    let no_read_ahead = PostgresStore::connect_with(
        &env.url,
        StoreOptions::new()
            .schema("proj")
            .read_ahead(false)
            .max_connections(4),
    )
    .await?;
    let stores = (store, no_read_ahead);
    let events = projection_events();
    let started = Instant::now();
    // 1M events over 10,000 accounts, 100 versions each; version 1 opens the account.
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO proj.events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata, recorded_at)
         SELECT gen_random_uuid(), 'BankAccount', 'acc-' || (g % 10000), g / 10000 + 1,
                CASE WHEN g < 10000 THEN 'AccountOpened' ELSE 'MoneyDeposited' END, 1,
                CASE WHEN g < 10000 THEN jsonb_build_object('owner', 'owner-' || g, 'overdraft_limit', 0)
                     ELSE jsonb_build_object('amount', g % 1000 + 1, 'reference', 'ref-' || g) END,
                jsonb_build_object('correlation_id', gen_random_uuid(), 'user_id', 'user-' || (g % 100)),
                now()
         FROM generate_series(0, {events} - 1) g"
    )))
    .execute(&env.hand)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO pgproj.events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'BankAccount', 'acc-' || (g % 10000), g / 10000 + 1,
                CASE WHEN g < 10000 THEN 'AccountOpened' ELSE 'MoneyDeposited' END, '1.0',
                CASE WHEN g < 10000 THEN json_build_object('AccountOpened', json_build_object('owner', 'owner-' || g, 'overdraft_limit', 0))
                     ELSE json_build_object('MoneyDeposited', json_build_object('amount', g % 1000 + 1, 'reference', 'ref-' || g)) END,
                json_build_object('correlation_id', gen_random_uuid(), 'user_id', 'user-' || (g % 100))
         FROM generate_series(0, {events} - 1) g"
    )))
    .execute(&env.hand)
    .await?;
    for table in ["proj.events", "pgproj.events"] {
        sqlx::query(AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
            .execute(&env.hand)
            .await?;
    }
    eprintln!(
        "  seeded 2 x {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let op: &'static str = if events == 1_000_000 {
        "rebuild an in-memory read model from 1M events"
    } else {
        Box::leak(format!("rebuild an in-memory read model from {events} events").into_boxed_str())
    };
    let all = [
        RebuildImpl::Ours(500),
        RebuildImpl::Keyset(500),
        RebuildImpl::Copy,
        RebuildImpl::OursNoReadAhead(500),
        RebuildImpl::Ours(5_000),
        RebuildImpl::Keyset(5_000),
        RebuildImpl::Peer,
    ];
    let mut expected: Option<(usize, i64, u64)> = None;
    for round in 0..2 {
        for imp in turns(&all, round) {
            let (sum, secs, kind, label) = rebuild_cell(env, &stores, imp).await?;
            if !matches!(imp, RebuildImpl::Copy) {
                let want = *expected.get_or_insert(sum);
                if sum != want {
                    return Err(
                        format!("{label}: wrong read model {sum:?}, expected {want:?}").into(),
                    );
                }
            }
            report.add(
                op,
                kind,
                label,
                projection_events() as f64 / secs,
                "events/s",
            );
        }
    }
    stores.0.pool().close().await;
    stores.1.pool().close().await;
    Ok(())
}

// ------------------------------------------------------------------------------------------

async fn settings(url: &str) -> Res<Vec<(String, String)>> {
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    let mut out = Vec::new();
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&pool)
        .await?;
    out.push(("version".to_owned(), version));
    for name in [
        "shared_buffers",
        "synchronous_commit",
        "fsync",
        "wal_level",
        "max_wal_size",
        "checkpoint_timeout",
        "work_mem",
        "effective_cache_size",
        "max_connections",
        "shared_preload_libraries",
    ] {
        let value: String = sqlx::query_scalar(AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&pool)
            .await?;
        out.push((name.to_owned(), value));
    }
    pool.close().await;
    Ok(out)
}

#[tokio::main]
async fn main() -> Res<()> {
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let jsonl = std::env::var("BENCH_JSONL")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/results.jsonl").to_owned());
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
    let started = Instant::now();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let env = setup(&admin).await?;
    let mut report = Report::default();
    if wanted("commands") {
        eprintln!("commands");
        bench_commands(&env, &mut report).await?;
    }
    if wanted("appends") {
        eprintln!("appends");
        bench_appends(&env, &mut report).await?;
    }
    if wanted("loads") {
        eprintln!("loads");
        bench_loads(&env, &mut report).await?;
    }
    if wanted("rebuild") {
        eprintln!("rebuild");
        bench_projection(&env, &mut report)
            .await
            .map_err(|e| format!("rebuild: {e}"))?;
    }

    println!("## PostgreSQL settings\n");
    for (k, v) in settings(&env.url).await? {
        println!("- `{k}` = {v}");
    }
    println!(
        "\n## Results (measured cells: {:.1} s after a 0.5 s warm-up; {} rounds, implementations in rotating order; whole run {:.0} s)\n",
        measure_time().as_secs_f64(),
        rounds(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "Load average before: {}; after: {}\n",
        load_before.trim(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!("Table sizes at the end (rows, bytes with indexes):\n");
    for (table, rows, bytes) in table_sizes(&env).await? {
        println!("- `{table}`: {rows} rows, {:.1} MB", bytes as f64 / 1e6);
    }
    println!();
    report.print();
    let mut file = std::io::BufWriter::new(std::fs::File::create(&jsonl)?);
    report.write_json_lines(&mut file)?;
    std::io::Write::flush(&mut file)?;
    eprintln!("cells written as JSON lines to {jsonl}");
    env.ours.pool().close().await;
    env.ours_quiet.pool().close().await;
    env.ours_nogroup.pool().close().await;
    env.ours_ping.pool().close().await;
    env.ours_notify2.pool().close().await;
    env.hand.close().await;
    env.peer.close().await;
    Ok(())
}
