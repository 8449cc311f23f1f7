//! Benchmarks `SqliteStore` against the same SQL written by hand with sqlx, on the same
//! schema (the store's migrations), with the same pragmas and round trips, in the same run.
//!
//! ```text
//! cargo run --release -p es-sqlite --example sqlite_bench [-- SECONDS_PER_CASE [REBUILD_EVENTS]]
//! ```
//!
//! Files go to a new directory under the system's temporary directory (`BENCH_DIR`
//! overrides), removed at the end. `BENCH_CASES` selects some of `append,load,rebuild`.
//! Cases:
//! - append 1 event per call (1 and 8 writer tasks) and 100 events per call, with
//!   `synchronous = FULL` (the default) and `NORMAL`; each side writes its own file;
//! - load of a 10,000-event aggregate without snapshot, through the repository (decode and
//!   apply) and as bare rows;
//! - rebuild of 1M events through the consumer runtime, unfiltered and filtered by aggregate
//!   type, in batches of 1,000.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use es_core::prelude::*;
use es_core::{
    AnyEvent, AtLeastOnce, BoxError, Consumer, Envelope, EventHandler, LocalCheckpoints, NewEvent,
    ReplayEvent,
};
use es_sqlite::{Durability, MIGRATOR, SqliteStore, StoreOptions};
use serde_json::value::RawValue;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use uuid::Uuid;

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[event]
pub struct Deposited {
    pub amount: i64,
    pub reference: String,
}

#[derive(Aggregate, Default)]
#[aggregate(name = "Account", events(Deposited))]
pub struct Account {
    balance: i64,
    deposits: u64,
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, e: &Deposited) {
        self.balance += e.amount;
        self.deposits += 1;
    }
}

fn new_event(i: u64) -> NewEvent {
    let event = Deposited {
        amount: (i % 100) as i64,
        reference: format!("ref-{i}"),
    };
    NewEvent::from_event(&event, Metadata::by_user("bench")).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------
// The hand-written side: the store's statements, inline, on a pool with the store's
// settings (one writer connection, WAL, the same `synchronous`, busy timeout, foreign keys).
// ---------------------------------------------------------------------------------------

const COLUMNS: &str = "position, event_id, aggregate_type, aggregate_id, version, event_name, \
     schema_version, payload, correlation_id, causation_id, user_id, extra, recorded_at";

fn insert_sql(rows: usize) -> String {
    let row = format!("({})", vec!["?"; 13].join(", "));
    format!(
        "INSERT INTO events ({COLUMNS}) VALUES {}",
        vec![row; rows].join(", ")
    )
}

struct Raw {
    writer: SqlitePool,
    reader: SqlitePool,
    inserts: Vec<(usize, String)>,
}

impl Raw {
    async fn open(path: &Path, durability: Durability) -> BoxResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.pragma("query_only", "ON"))
            .await?;
        let inserts = [256, 128, 64, 32, 16, 8, 4, 2, 1]
            .into_iter()
            .map(|rows| (rows, insert_sql(rows)))
            .collect();
        Ok(Self {
            writer,
            reader,
            inserts,
        })
    }

    /// `BEGIN IMMEDIATE`, the version and head, the inserts, `COMMIT`: the store's round
    /// trips, without its checks, conversions and records.
    async fn append(&self, stream: &StreamId, events: &[NewEvent]) -> BoxResult<()> {
        let mut conn = self.writer.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let (version, head): (i64, i64) = sqlx::query_as(
            "SELECT coalesce((SELECT max(version) FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2), 0), \
                    coalesce((SELECT max(position) FROM events), 0)",
        )
        .bind(&stream.aggregate_type)
        .bind(&stream.aggregate_id)
        .fetch_one(&mut *conn)
        .await?;
        let at = chrono::Utc::now().timestamp_micros();
        let mut done = 0;
        while done < events.len() {
            let remaining = events.len() - done;
            let Some((rows, sql)) = self.inserts.iter().find(|(rows, _)| *rows <= remaining) else {
                break;
            };
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for (offset, event) in (done as i64..).zip(&events[done..done + rows]) {
                insert = insert
                    .bind(head + 1 + offset)
                    .bind(event.event_id)
                    .bind(&stream.aggregate_type)
                    .bind(&stream.aggregate_id)
                    .bind(version + 1 + offset)
                    .bind(&event.event_name)
                    .bind(i64::from(event.schema_version))
                    .bind(event.payload.get())
                    .bind(event.metadata.correlation_id)
                    .bind(event.metadata.causation_id)
                    .bind(event.metadata.user_id.as_deref())
                    .bind(None::<String>)
                    .bind(at);
            }
            insert.execute(&mut *conn).await?;
            done += rows;
        }
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct ReplayRow {
    version: i64,
    event_name: String,
    schema_version: i64,
    payload: String,
}

#[derive(sqlx::FromRow)]
struct LogRow {
    position: i64,
    event_id: Vec<u8>,
    aggregate_type: String,
    aggregate_id: String,
    version: i64,
    event_name: String,
    schema_version: i64,
    payload: String,
    correlation_id: Option<Vec<u8>>,
    causation_id: Option<Vec<u8>>,
    user_id: Option<String>,
    extra: Option<String>,
    recorded_at: i64,
}

impl LogRow {
    /// What a hand-written projection reading envelopes builds from a row.
    fn decode(self) -> BoxResult<RecordedEvent> {
        let mut metadata = Metadata::new();
        metadata.correlation_id = self
            .correlation_id
            .map(|b| Uuid::from_slice(&b))
            .transpose()?;
        metadata.causation_id = self
            .causation_id
            .map(|b| Uuid::from_slice(&b))
            .transpose()?;
        metadata.user_id = self.user_id;
        if let Some(extra) = self.extra {
            metadata.extra = serde_json::from_str(&extra)?;
        }
        Ok(RecordedEvent {
            event_id: Uuid::from_slice(&self.event_id)?,
            stream: StreamId::new(self.aggregate_type, self.aggregate_id),
            version: u64::try_from(self.version)?,
            position: u64::try_from(self.position)?,
            event_name: self.event_name,
            schema_version: u32::try_from(self.schema_version)?,
            payload: RawValue::from_string(self.payload)?,
            metadata,
            recorded_at: chrono::DateTime::from_timestamp_micros(self.recorded_at)
                .ok_or("time out of range")?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Measuring.
// ---------------------------------------------------------------------------------------

struct Figure {
    case: String,
    /// One measurement per round, ours and the hand-written side's alternating.
    ours: Vec<f64>,
    raw: Vec<f64>,
    unit: &'static str,
    /// Rates (higher is better) or times.
    rate: bool,
}

impl Figure {
    /// Medians of each side, and the median (and range) of the per-round ratios: pairing
    /// the rounds cancels the drift of a shared host.
    fn row(&self) -> String {
        let (ours, raw) = (median(self.ours.clone()), median(self.raw.clone()));
        let ratios: Vec<f64> = self
            .ours
            .iter()
            .zip(&self.raw)
            .map(|(o, r)| o / r)
            .collect();
        let (low, high) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)));
        let ratio = median(ratios);
        let digits = if self.rate { 0 } else { 2 };
        let what = if self.rate { "rate" } else { "time" };
        format!(
            "| {} | {ours:.digits$} {unit} | {raw:.digits$} {unit} | {ratio:.2}x the {what} ({low:.2}–{high:.2}) |",
            self.case,
            unit = self.unit,
        )
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Events per second of `writers` tasks appending `per_call` events per call to their own
/// streams for `secs`.
async fn append_rate<F, Fut>(writers: usize, per_call: u64, secs: Duration, append: F) -> f64
where
    F: Fn(StreamId, Vec<NewEvent>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let append = append.clone();
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new("Account", format!("w{w}-{}", Uuid::now_v7()));
            let mut events = 0u64;
            while started.elapsed() < secs {
                let batch = (0..per_call).map(|i| new_event(events + i)).collect();
                append(stream.clone(), batch).await;
                events += per_call;
            }
            events
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap_or_else(|e| panic!("{e}"));
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn append_case(
    dir: &Path,
    durability: Durability,
    writers: usize,
    per_call: u64,
    secs: Duration,
) -> BoxResult<Figure> {
    let tag = format!("{durability:?}-{writers}-{per_call}");
    let store = SqliteStore::open_with(
        dir.join(format!("ours-{tag}.db")),
        StoreOptions::new().durability(durability),
    )
    .await?;
    let raw = std::sync::Arc::new(Raw::open(&dir.join(format!("raw-{tag}.db")), durability).await?);
    // Short rounds, alternating (and swapping which side goes first), and the median of
    // each side: the host is shared, and interleaving puts both sides under the same
    // conditions.
    const ROUNDS: u32 = 10;
    let (mut ours, mut hand) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let s = store.clone();
                ours.push(
                    append_rate(writers, per_call, secs / ROUNDS, move |stream, batch| {
                        let s = s.clone();
                        async move {
                            s.append(&stream, ExpectedVersion::Any, batch)
                                .await
                                .unwrap_or_else(|e| panic!("{e}"));
                        }
                    })
                    .await,
                );
            } else {
                let r = raw.clone();
                hand.push(
                    append_rate(writers, per_call, secs / ROUNDS, move |stream, batch| {
                        let r = r.clone();
                        async move {
                            r.append(&stream, &batch)
                                .await
                                .unwrap_or_else(|e| panic!("{e}"));
                        }
                    })
                    .await,
                );
            }
        }
    }
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    Ok(Figure {
        case: format!(
            "append {per_call} event{} per call, {writers} writer{}, synchronous={sync}",
            if per_call == 1 { "" } else { "s" },
            if writers == 1 { "" } else { "s" }
        ),
        ours,
        raw: hand,
        unit: "ev/s",
        rate: true,
    })
}

async fn load_cases(dir: &Path) -> BoxResult<Vec<Figure>> {
    const EVENTS: u64 = 10_000;
    let store = SqliteStore::open(dir.join("load.db")).await?;
    let stream = StreamId::new("Account", "big");
    for chunk in 0..EVENTS / 100 {
        let batch = (0..100).map(|i| new_event(chunk * 100 + i)).collect();
        store.append(&stream, ExpectedVersion::Any, batch).await?;
    }
    let raw = Raw::open(store.path(), Durability::Full).await?;
    let accounts = Repository::<Account, _>::new(store.clone()).without_state_cache();
    let select = "SELECT version, event_name, schema_version, payload FROM events \
                  WHERE aggregate_type = ?1 AND aggregate_id = ?2 ORDER BY version";
    let raw_rows = || async {
        let rows: Vec<ReplayRow> = sqlx::query_as(select)
            .bind(&stream.aggregate_type)
            .bind(&stream.aggregate_id)
            .fetch_all(&raw.reader)
            .await?;
        BoxResult::Ok(rows)
    };
    let (mut ours_fold, mut raw_fold, mut ours_rows, mut raw_rows_t) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..30 {
        let t = Instant::now();
        let loaded = accounts.load("big").await?;
        ours_fold.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(loaded.version, EVENTS);

        let t = Instant::now();
        let mut state = Account::default();
        for row in raw_rows().await? {
            let payload = RawValue::from_string(row.payload)?;
            let event = AccountEvent::decode(
                &row.event_name,
                u32::try_from(row.schema_version)?,
                &payload,
            )?;
            state.apply_event(&event);
            let _ = row.version;
        }
        raw_fold.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(state.deposits, EVENTS);

        let t = Instant::now();
        let (_, events): (_, Vec<ReplayEvent>) = store.load_stream(&stream, None).await?;
        ours_rows.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(events.len() as u64, EVENTS);

        let t = Instant::now();
        let rows: Vec<ReplayEvent> = raw_rows()
            .await?
            .into_iter()
            .map(|row| {
                BoxResult::Ok(ReplayEvent {
                    version: u64::try_from(row.version)?,
                    event_name: row.event_name,
                    schema_version: u32::try_from(row.schema_version)?,
                    payload: RawValue::from_string(row.payload)?,
                })
            })
            .collect::<Result<_, _>>()?;
        raw_rows_t.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(rows.len() as u64, EVENTS);
    }
    Ok(vec![
        Figure {
            case: "load a 10,000-event aggregate, no snapshot (repository: load, decode, apply)"
                .into(),
            ours: ours_fold,
            raw: raw_fold,
            unit: "ms",
            rate: false,
        },
        Figure {
            case: "load the same 10,000 events as rows (`load_stream` against the SELECT)".into(),
            ours: ours_rows,
            raw: raw_rows_t,
            unit: "ms",
            rate: false,
        },
    ])
}

/// Sums deposits: the in-memory projection both rebuilds build.
#[derive(Default)]
struct Total {
    sum: i64,
    events: u64,
}

impl EventHandler for Total {
    type Event = AnyEvent;
    async fn handle(&mut self, _: &mut (), e: &Envelope<AnyEvent>) -> Result<(), BoxError> {
        let deposit: Deposited = serde_json::from_str(e.record.payload.get())?;
        self.sum += deposit.amount;
        self.events += 1;
        Ok(())
    }
}

/// The same projection on the aggregate's typed events (the store filters by type).
#[derive(Default)]
struct TypedTotal {
    sum: i64,
    events: u64,
}

impl EventHandler for TypedTotal {
    type Event = AccountEvent;
    async fn handle(&mut self, _: &mut (), e: &Envelope<AccountEvent>) -> Result<(), BoxError> {
        let AccountEvent::Deposited(d) = &e.event;
        self.sum += d.amount;
        self.events += 1;
        Ok(())
    }
}

async fn rebuild_cases(dir: &Path, events: u64) -> BoxResult<Vec<Figure>> {
    const BATCH: usize = 1_000;
    let store = SqliteStore::open_with(
        dir.join("rebuild.db"),
        StoreOptions::new().durability(Durability::Normal),
    )
    .await?;
    let started = Instant::now();
    let streams = events / 100;
    for s in 0..streams {
        let stream = StreamId::new("Account", format!("acc-{s}"));
        let batch = (0..100).map(|i| new_event(s * 100 + i)).collect();
        store
            .append(&stream, ExpectedVersion::NoStream, batch)
            .await?;
    }
    eprintln!(
        "seeded {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let raw = Raw::open(store.path(), Durability::Full).await?;
    let raw_rebuild = |typed: bool| {
        let raw = &raw;
        async move {
            let statement = if typed {
                format!(
                    "SELECT {COLUMNS} FROM events WHERE aggregate_type = 'Account' AND position > ?1 \
                     ORDER BY position LIMIT ?2"
                )
            } else {
                format!(
                    "SELECT {COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
                )
            };
            let (mut after, mut sum, mut count) = (0i64, 0i64, 0u64);
            loop {
                let rows: Vec<LogRow> = sqlx::query_as(sqlx::AssertSqlSafe(statement.as_str()))
                    .bind(after)
                    .bind(BATCH as i64)
                    .fetch_all(&raw.reader)
                    .await?;
                let Some(last) = rows.last() else { break };
                after = last.position;
                for row in rows {
                    let event = row.decode()?;
                    let deposit: Deposited = serde_json::from_str(event.payload.get())?;
                    sum += deposit.amount;
                    count += 1;
                }
            }
            BoxResult::Ok((sum, count))
        }
    };
    let mut figures = Vec::new();
    for typed in [false, true] {
        let (mut ours, mut hand) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let t = Instant::now();
            let count = if typed {
                let mut consumer = Consumer::new(
                    "typed",
                    store.clone(),
                    AtLeastOnce::new(LocalCheckpoints::new()),
                    TypedTotal::default(),
                )
                .batch_size(BATCH);
                consumer.rebuild(|_| {}).await?;
                consumer.handler().events
            } else {
                let mut consumer = Consumer::new(
                    "all",
                    store.clone(),
                    AtLeastOnce::new(LocalCheckpoints::new()),
                    Total::default(),
                )
                .batch_size(BATCH);
                consumer.rebuild(|_| {}).await?;
                consumer.handler().events
            };
            assert_eq!(count, events);
            ours.push(events as f64 / t.elapsed().as_secs_f64());

            let t = Instant::now();
            let (_, count) = raw_rebuild(typed).await?;
            assert_eq!(count, events);
            hand.push(events as f64 / t.elapsed().as_secs_f64());
        }
        figures.push(Figure {
            case: format!(
                "rebuild {}k events through the consumer runtime, batches of {BATCH}, {}",
                events / 1000,
                if typed {
                    "filtered by aggregate type (typed events)"
                } else {
                    "unfiltered (`AnyEvent`)"
                }
            ),
            ours,
            raw: hand,
            unit: "ev/s",
            rate: true,
        });
    }
    Ok(figures)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BoxResult<()> {
    let mut args = std::env::args().skip(1);
    let secs = Duration::from_secs_f64(args.next().map_or(Ok(3.0), |s| s.parse())?);
    let rebuild_events: u64 = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    let dir: PathBuf = match std::env::var_os("BENCH_DIR") {
        Some(dir) => dir.into(),
        None => std::env::temp_dir().join(format!("es-sqlite-bench-{}", Uuid::now_v7().simple())),
    };
    std::fs::create_dir_all(&dir)?;
    let result = run(&dir, secs, rebuild_events).await;
    std::fs::remove_dir_all(&dir)?;
    let figures = result?;
    println!("| case | es-sqlite | hand-written sqlx | ratio (range over rounds) |");
    println!("|---|---:|---:|---:|");
    for figure in &figures {
        println!("{}", figure.row());
    }
    Ok(())
}

async fn run(dir: &Path, secs: Duration, rebuild_events: u64) -> BoxResult<Vec<Figure>> {
    let cases = std::env::var("BENCH_CASES").unwrap_or_else(|_| "append,load,rebuild".into());
    let wanted = |case: &str| cases.split(',').any(|c| c.trim() == case);
    let mut figures = Vec::new();
    for durability in [Durability::Full, Durability::Normal] {
        if !wanted("append") {
            break;
        }
        for (writers, per_call) in [(1, 1), (8, 1), (1, 100)] {
            let figure = append_case(dir, durability, writers, per_call, secs).await?;
            eprintln!("{}", figure.row());
            figures.push(figure);
        }
    }
    if wanted("load") {
        for figure in load_cases(dir).await? {
            eprintln!("{}", figure.row());
            figures.push(figure);
        }
    }
    if !wanted("rebuild") {
        return Ok(figures);
    }
    for figure in rebuild_cases(dir, rebuild_events).await? {
        eprintln!("{}", figure.row());
        figures.push(figure);
    }
    Ok(figures)
}
