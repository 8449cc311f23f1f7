//! One run, one PostgreSQL, three implementations of the same bank-account workload:
//! (a) our `PostgresStore` through `Repository`, (b) hand-written sqlx on the same table shape,
//! (c) postgres-es 0.5 with cqrs-es 0.5. Prints a markdown table of throughput and ratios.
//!
//! ```text
//! CARGO_TARGET_DIR=target-compare cargo run --release --manifest-path bench/compare/Cargo.toml
//! ```
//!
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) is the admin
//! connection; the benchmark drops and recreates the database `es_bench` on that server.
//! `BENCH_SECONDS` (default 3) is the measured time of each throughput cell.

mod domain;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_es::EventStore as _;
use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore, SerializedEvent};
use es_core::{
    BoxError, EventStore, ExpectedVersion, Metadata, NewEvent, Projection, ProjectionRunner,
    RecordedEvent, Repository, Snapshot, StreamId,
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

type Res<T> = Result<T, Box<dyn StdError + Send + Sync>>;

const DB: &str = "es_bench";
const ACCOUNTS_PER_WRITER: usize = 200;
const LOAD_EVENTS: i64 = 10_000;
const PROJECTION_EVENTS: i64 = 1_000_000;

// ------------------------------------------------------------------------------------------
// Measuring

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ours,
    Hand,
    Peer,
}

struct Measure {
    op: &'static str,
    system: String,
    kind: Kind,
    /// Operations (or events) per second, one sample per round.
    samples: Vec<f64>,
    unit: &'static str,
}

impl Measure {
    /// The median of the rounds.
    fn rate(&self) -> f64 {
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            0.0
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
}

#[derive(Default)]
struct Report {
    rows: Vec<Measure>,
}

impl Report {
    fn add(
        &mut self,
        op: &'static str,
        kind: Kind,
        system: impl Into<String>,
        rate: f64,
        unit: &'static str,
    ) {
        let system = system.into();
        eprintln!("  {op:<44} {system:<52} {rate:>12.1} {unit}");
        match self
            .rows
            .iter_mut()
            .find(|m| m.op == op && m.system == system)
        {
            Some(m) => m.samples.push(rate),
            None => self.rows.push(Measure {
                op,
                system,
                kind,
                samples: vec![rate],
                unit,
            }),
        }
    }

    fn print(&self) {
        println!(
            "| operation | implementation | throughput (median) | time per op | rounds (min-max) | ours / hand-written | ours / postgres-es |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|");
        let mut ops: Vec<&'static str> = Vec::new();
        for m in &self.rows {
            if !ops.contains(&m.op) {
                ops.push(m.op);
            }
        }
        for op in ops {
            let group: Vec<&Measure> = self.rows.iter().filter(|m| m.op == op).collect();
            for m in &group {
                let rate = m.rate();
                let lo = m.samples.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = m.samples.iter().copied().fold(0.0, f64::max);
                let spread = format!("{} {}-{}", m.samples.len(), fmt_rate(lo), fmt_rate(hi));
                let per = if m.unit.starts_with("events") {
                    format!("{:.2} µs/event", 1e6 / rate)
                } else if 1e3 / rate >= 1.0 {
                    format!("{:.2} ms", 1e3 / rate)
                } else {
                    format!("{:.0} µs", 1e6 / rate)
                };
                let (vs_hand, vs_peer) = if m.kind == Kind::Ours {
                    let ratios = |kind: Kind| {
                        group
                            .iter()
                            .filter(|o| o.kind == kind)
                            .map(|o| format!("{:.2}x ({})", rate / o.rate(), short(&o.system)))
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    (ratios(Kind::Hand), ratios(Kind::Peer))
                } else {
                    (String::new(), String::new())
                };
                println!(
                    "| {op} | {} | {} {} | {per} | {spread} | {vs_hand} | {vs_peer} |",
                    m.system,
                    fmt_rate(rate),
                    m.unit
                );
            }
        }
    }
}

fn short(system: &str) -> String {
    match system.split_once(": ") {
        Some((who, what)) if who == "hand-written" => what
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" "),
        Some((who, _)) => who.to_owned(),
        None => system.to_owned(),
    }
}

fn fmt_rate(rate: f64) -> String {
    if rate >= 100.0 {
        let r = rate.round() as u64;
        let s = r.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{rate:.1}")
    }
}

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

fn measure_time() -> Duration {
    let secs = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.5);
    Duration::from_secs_f64(secs)
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

/// Runs `op` `n` times one after the other; returns operations per second.
async fn repeated<F, Fut>(n: usize, mut op: F) -> Res<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Res<()>>,
{
    op().await?; // warm the caches and the statement cache
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
    /// Our store, default options (NOTIFY on), schema `ours`.
    ours: PostgresStore,
    /// The same tables through a store with NOTIFY off.
    ours_quiet: PostgresStore,
    /// Hand-written statements: schema `hand`, same table shape.
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
    let hand = PgPoolOptions::new()
        .max_connections(9)
        .connect(&url)
        .await?;
    for ddl in [
        "CREATE SCHEMA hand",
        // Exactly the shape of our `events` table.
        "CREATE TABLE hand.events (
            position        bigint      GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
            event_id        uuid        NOT NULL,
            aggregate_type  text        NOT NULL,
            aggregate_id    text        NOT NULL,
            version         bigint      NOT NULL CHECK (version > 0),
            event_name      text        NOT NULL,
            schema_version  integer     NOT NULL CHECK (schema_version > 0),
            payload         jsonb       NOT NULL,
            metadata        jsonb       NOT NULL,
            recorded_at     timestamptz NOT NULL,
            CONSTRAINT hand_events_event_id_key UNIQUE (event_id),
            CONSTRAINT hand_events_stream_version_key UNIQUE (aggregate_type, aggregate_id, version))",
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
        hand,
        peer,
    })
}

fn peer_repo(env: &Env) -> postgres_es::PostgresEventRepository {
    postgres_es::PostgresEventRepository::new(env.peer.clone())
        .with_tables("pges.events", "pges.snapshots")
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

const HAND_INSERT: &str = "INSERT INTO hand.events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata, recorded_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())";

const HAND_INSERT_MANY: &str = "INSERT INTO hand.events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata, recorded_at) \
     SELECT u.id, $2, $3, u.version, u.name, 1, u.payload, u.meta, now() \
     FROM unnest($1::uuid[], $4::bigint[], $5::text[], $6::jsonb[], $7::jsonb[]) AS u (id, version, name, payload, meta)";

const HAND_SELECT_STREAM: &str = "SELECT version, event_name, payload FROM hand.events \
     WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY version";

// ------------------------------------------------------------------------------------------
// Commands: load + decide + append one event

async fn bench_commands(env: &Env, report: &mut Report) -> Res<()> {
    for (round, writers) in (0..rounds()).flat_map(|r| [(r, 1usize), (r, 8)]) {
        let op: &'static str = if writers == 1 {
            "command (load+decide+append 1), 1 writer"
        } else {
            "command (load+decide+append 1), 8 writers"
        };
        let meta = Metadata::by_user("bench");

        for (k, (label, cached, store)) in [
            ("ours: Repository::execute", false, env.ours.clone()),
            (
                "ours: Repository::execute + with_state_cache",
                true,
                env.ours.clone(),
            ),
            (
                "ours: execute + state cache, NOTIFY off",
                true,
                env.ours_quiet.clone(),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            if writers == 1 && label.contains("NOTIFY off") {
                // measured with 8 writers only, where commit serialisation would show
                continue;
            }
            let prefix = format!("r{round}c{writers}o{k}");
            seed_accounts(env, "ours.events", &prefix, writers).await?;
            let mut repo = Repository::<BankAccount, _>::new(store);
            if cached {
                repo = repo.with_state_cache(100_000);
            }
            let rate = timed(writers, |w, window| {
                let repo = repo.clone();
                let meta = meta.clone();
                let prefix = prefix.clone();
                async move {
                    let mut done = 0;
                    let mut i = 0usize;
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
            .await?;
            report.add(op, Kind::Ours, label, rate, "commands/s");
        }

        // Hand-written, naive: SELECT the stream, fold, decide, INSERT (autocommit).
        let prefix = format!("r{round}c{writers}h");
        seed_accounts(env, "hand.events", &prefix, writers).await?;
        let rate = timed(writers, |w, window| {
            let pool = env.hand.clone();
            let prefix = prefix.clone();
            let meta = meta.clone();
            async move {
                let mut done = 0;
                let mut i = 0usize;
                while window.open() {
                    let id = account(&prefix, w, i);
                    let rows = sqlx::query(HAND_SELECT_STREAM)
                        .bind("BankAccount")
                        .bind(&id)
                        .fetch_all(&pool)
                        .await?;
                    let mut state = PlainAccount::default();
                    let mut version = 0i64;
                    for row in &rows {
                        version = row.try_get(0)?;
                        let name: &str = row.try_get(1)?;
                        let payload: Box<RawValue> = row.try_get(2)?;
                        state.apply_row(name, payload.get())?;
                    }
                    if !state.open {
                        return Err(BankError::NotOpen.into());
                    }
                    let payload = serde_json::value::to_raw_value(&MoneyDeposited {
                        amount: 10,
                        reference: "bench".into(),
                    })?;
                    sqlx::query(HAND_INSERT)
                        .bind(Uuid::now_v7())
                        .bind("BankAccount")
                        .bind(&id)
                        .bind(version + 1)
                        .bind("MoneyDeposited")
                        .bind(1i32)
                        .bind(Json(&*payload))
                        .bind(Json(&meta.for_events()))
                        .execute(&pool)
                        .await?;
                    done += window.count(1);
                    i += 1;
                }
                Ok(done)
            }
        })
        .await?;
        report.add(
            op,
            Kind::Hand,
            "hand-written: SELECT stream + fold + INSERT",
            rate,
            "commands/s",
        );

        // postgres-es: CqrsFramework::execute.
        let prefix = format!("r{round}c{writers}p");
        seed_accounts(env, "pges.events", &prefix, writers).await?;
        let cqrs = Arc::new(cqrs_es::CqrsFramework::new(
            PersistedEventStore::<_, PeerAccount>::new_event_store(peer_repo(env)),
            vec![],
            (),
        ));
        let rate = timed(writers, |w, window| {
            let cqrs = cqrs.clone();
            let prefix = prefix.clone();
            async move {
                let mut done = 0;
                let mut i = 0usize;
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
        .await?;
        report.add(
            op,
            Kind::Peer,
            "postgres-es: CqrsFramework::execute",
            rate,
            "commands/s",
        );
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Appends: 1 event and 100 events per call, at a known version

async fn bench_appends(env: &Env, report: &mut Report) -> Res<()> {
    let configs = [(1usize, 1usize), (1, 8), (100, 1), (100, 4)];
    for (round, (batch, writers)) in (0..rounds()).flat_map(|r| configs.map(|c| (r, c))) {
        let op: &'static str = match (batch, writers) {
            (1, 1) => "append 1 event per call, 1 writer",
            (1, _) => "append 1 event per call, 8 writers",
            (_, 1) => "append 100 events per call, 1 writer",
            _ => "append 100 events per call, 4 writers",
        };
        let unit = if batch == 1 { "appends/s" } else { "events/s" };
        let meta = Metadata::by_user("bench");

        for (label, store) in [
            ("ours: PostgresStore::append (Exact)", env.ours.clone()),
            ("ours: append, NOTIFY off", env.ours_quiet.clone()),
        ] {
            let tag = if label.contains("NOTIFY") { "q" } else { "d" };
            let rate = timed(writers, |w, window| {
                let store = store.clone();
                let meta = meta.clone();
                let stream = StreamId::new(
                    "BankAccount",
                    format!("r{round}a{batch}-{writers}-{tag}-w{w}"),
                );
                async move {
                    let mut done = 0;
                    let mut version = 0u64;
                    let mut i = 0u64;
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
            .await?;
            report.add(op, Kind::Ours, label, rate, unit);
        }

        let rate = timed(writers, |w, window| {
            let pool = env.hand.clone();
            let meta = meta.clone();
            let id = format!("r{round}a{batch}-{writers}-h-w{w}");
            async move {
                let mut done = 0;
                let mut version = 0i64;
                let mut i = 0u64;
                while window.open() {
                    if batch == 1 {
                        let e = deposit_event(i, &meta)?;
                        i += 1;
                        sqlx::query(HAND_INSERT)
                            .bind(e.event_id)
                            .bind("BankAccount")
                            .bind(&id)
                            .bind(version + 1)
                            .bind(&e.event_name)
                            .bind(1i32)
                            .bind(Json(&*e.payload))
                            .bind(Json(&e.metadata))
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
        .await?;
        let hand_label = if batch == 1 {
            "hand-written: single INSERT (autocommit)"
        } else {
            "hand-written: one multi-row INSERT (unnest)"
        };
        report.add(op, Kind::Hand, hand_label, rate, unit);

        let repo = Arc::new(peer_repo(env));
        let rate = timed(writers, |w, window| {
            let repo = repo.clone();
            let id = format!("r{round}a{batch}-{writers}-p-w{w}");
            async move {
                let mut done = 0;
                let mut sequence = 0usize;
                let mut i = 0u64;
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
        .await?;
        report.add(
            op,
            Kind::Peer,
            "postgres-es: PostgresEventRepository::persist",
            rate,
            unit,
        );
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Loading a 10,000-event aggregate

async fn bench_loads(env: &Env, report: &mut Report) -> Res<()> {
    let id = "load-10k";
    let stream = StreamId::new("BankAccount", id);
    let meta = Metadata::by_user("bench");
    // Ours (the hand-written baseline reads the same rows).
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
    for _ in 0..rounds() {
        let rate = repeated(7, || async {
            let loaded = repo.load(id).await?;
            if loaded.version != LOAD_EVENTS as u64 || loaded.balance != expected.balance {
                return Err("ours: wrong state".into());
            }
            Ok(())
        })
        .await?;
        report.add(op, Kind::Ours, "ours: Repository::load", rate, "loads/s");

        let rate = repeated(7, || async {
            let rows = sqlx::query(
                "SELECT version, event_name, payload FROM ours.events \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY version",
            )
            .bind("BankAccount")
            .bind(id)
            .fetch_all(&env.hand)
            .await?;
            let mut state = PlainAccount::default();
            for row in &rows {
                let name: &str = row.try_get(1)?;
                let payload: Box<RawValue> = row.try_get(2)?;
                state.apply_row(name, payload.get())?;
            }
            if state.balance != expected.balance {
                return Err("hand: wrong state".into());
            }
            Ok(())
        })
        .await?;
        report.add(
            op,
            Kind::Hand,
            "hand-written: SELECT + fold",
            rate,
            "loads/s",
        );

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
    for _ in 0..rounds() {
        let rate = repeated(200, || async {
            let loaded = snap_repo.load(id).await?;
            if loaded.version != LOAD_EVENTS as u64 || loaded.balance != expected.balance {
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

        let rate = repeated(200, || async {
            let row = sqlx::query(
                "SELECT version, state FROM ours.snapshots WHERE aggregate_type = $1 AND aggregate_id = $2",
            )
            .bind("BankAccount")
            .bind(id)
            .fetch_one(&env.hand)
            .await?;
            let version: i64 = row.try_get(0)?;
            let state: Box<RawValue> = row.try_get(1)?;
            let mut state: SnapAccount = serde_json::from_str(state.get())?;
            let rows = sqlx::query(
                "SELECT version, event_name, payload FROM ours.events \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND version > $3 ORDER BY version",
            )
            .bind("BankAccount")
            .bind(id)
            .bind(version)
            .fetch_all(&env.hand)
            .await?;
            state.deposits += rows.len() as u64;
            if state.balance != expected.balance {
                return Err("hand snapshot: wrong state".into());
            }
            Ok(())
        })
        .await?;
        report.add(
            op,
            Kind::Hand,
            "hand-written: SELECT snapshot; SELECT events after",
            rate,
            "loads/s",
        );

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
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Projection rebuild over 1M events

/// An in-memory read model: balance and deposit count per account.
#[derive(Default)]
struct Balances {
    accounts: HashMap<String, (i64, u64)>,
}

impl Projection for Balances {
    fn name(&self) -> &str {
        "balances"
    }
    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        let entry = self
            .accounts
            .entry(event.stream.aggregate_id.clone())
            .or_default();
        match event.decode::<BankAccountEvent>()? {
            BankAccountEvent::MoneyDeposited(e) => {
                entry.0 += e.amount;
                entry.1 += 1;
            }
            BankAccountEvent::MoneyWithdrawn(e) => entry.0 -= e.amount,
            BankAccountEvent::AccountOpened(_) => {}
        }
        Ok(())
    }
    async fn reset(&mut self) -> Result<(), BoxError> {
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

async fn bench_projection(env: &Env, report: &mut Report) -> Res<()> {
    let store = PostgresStore::connect_with(
        &env.url,
        StoreOptions::new().schema("proj").max_connections(4),
    )
    .await?;
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
         FROM generate_series(0, {PROJECTION_EVENTS} - 1) g"
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
         FROM generate_series(0, {PROJECTION_EVENTS} - 1) g"
    )))
    .execute(&env.hand)
    .await?;
    sqlx::query("VACUUM ANALYZE proj.events")
        .execute(&env.hand)
        .await?;
    sqlx::query("VACUUM ANALYZE pgproj.events")
        .execute(&env.hand)
        .await?;
    eprintln!(
        "  seeded 2 x 1M events in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let op = "rebuild an in-memory projection from 1M events";
    let mut expected: Option<(usize, i64, u64)> = None;
    for _ in 0..2 {
        for batch in [1_000usize, 5_000] {
            let mut runner =
                ProjectionRunner::new(store.clone(), Balances::default()).with_batch_size(batch);
            let start = Instant::now();
            let progress = runner.rebuild(|_| {}).await?;
            let secs = start.elapsed().as_secs_f64();
            if progress.done != PROJECTION_EVENTS as u64 {
                return Err(format!("ours rebuilt {} events", progress.done).into());
            }
            let sum = checksum(&runner.projection().accounts);
            expected.get_or_insert(sum);
            report.add(
                op,
                Kind::Ours,
                format!(
                    "ours: ProjectionRunner::rebuild, batches of {batch}{}",
                    if batch == 5_000 { " (the default)" } else { "" }
                ),
                PROJECTION_EVENTS as f64 / secs,
                "events/s",
            );
        }
        let want = expected.ok_or("no rebuild ran")?;

        // Raw COPY of the same rows: the physical limit of getting them out.
        let cols = "position, event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata, recorded_at";
        let mut conn = env.hand.acquire().await?;
        let start = Instant::now();
        let mut bytes = 0usize;
        {
            let copy = format!("COPY (SELECT {cols} FROM proj.events ORDER BY position) TO STDOUT");
            let mut out = conn.copy_out_raw(&copy).await?;
            while let Some(chunk) = out.try_next().await? {
                bytes += chunk.len();
            }
        }
        let secs = start.elapsed().as_secs_f64();
        drop(conn);
        eprintln!("  COPY moved {:.1} MB", bytes as f64 / 1e6);
        report.add(
            op,
            Kind::Hand,
            "hand-written: raw COPY (SELECT ...) TO STDOUT",
            PROJECTION_EVENTS as f64 / secs,
            "events/s",
        );

        // Plain keyset SELECT loop, decoding what the read model needs.
        let start = Instant::now();
        let mut after = 0i64;
        let mut model: HashMap<String, (i64, u64)> = HashMap::new();
        let mut seen = 0u64;
        let sql = format!(
            "SELECT {cols} FROM proj.events WHERE position > $1 ORDER BY position LIMIT 1000"
        );
        loop {
            let rows = sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(after)
                .fetch_all(&env.hand)
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.try_get(0)?;
            for row in &rows {
                let id: String = row.try_get(3)?;
                let name: &str = row.try_get(5)?;
                let payload: Box<RawValue> = row.try_get(7)?;
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
        if seen != PROJECTION_EVENTS as u64 || checksum(&model) != want {
            return Err("keyset loop: wrong read model".into());
        }
        report.add(
            op,
            Kind::Hand,
            "hand-written: keyset SELECT loop (1,000 rows) + fold",
            PROJECTION_EVENTS as f64 / secs,
            "events/s",
        );

        // postgres-es: stream_all_events (what cqrs-es QueryReplay::replay_all uses). It has no
        // global log: rows come ordered by per-stream sequence, not commit order.
        let repo = postgres_es::PostgresEventRepository::new(env.peer.clone())
            .with_tables("pgproj.events", "pgproj.snapshots")
            .with_streaming_channel_size(1000);
        let start = Instant::now();
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
        if seen != PROJECTION_EVENTS as u64 || checksum(&model) != want {
            return Err("postgres-es replay: wrong read model".into());
        }
        report.add(
            op,
            Kind::Peer,
            "postgres-es: stream_all_events (QueryReplay)",
            PROJECTION_EVENTS as f64 / secs,
            "events/s",
        );
    }
    store.pool().close().await;
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
    let started = Instant::now();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let env = setup(&admin).await?;
    let mut report = Report::default();
    eprintln!("commands");
    bench_commands(&env, &mut report).await?;
    eprintln!("appends");
    bench_appends(&env, &mut report).await?;
    eprintln!("loads");
    bench_loads(&env, &mut report).await?;
    eprintln!("projection");
    bench_projection(&env, &mut report)
        .await
        .map_err(|e| format!("projection: {e}"))?;

    println!("## PostgreSQL settings\n");
    for (k, v) in settings(&env.url).await? {
        println!("- `{k}` = {v}");
    }
    println!(
        "\n## Results (measured cells: {:.1} s after a 0.5 s warm-up; whole run {:.0} s)\n",
        measure_time().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "Load average before: {}; after: {}\n",
        load_before.trim(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    report.print();
    env.ours.pool().close().await;
    env.ours_quiet.pool().close().await;
    env.hand.close().await;
    env.peer.close().await;
    Ok(())
}
