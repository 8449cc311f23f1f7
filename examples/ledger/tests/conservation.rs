//! Many concurrent random transfers, some of which fail, then: money is conserved, balances
//! equal the statement sums, the read models equal a fresh rebuild, no event is duplicated.
//!
//! On the memory store (read models in memory) and on PostgreSQL (read models in tables, in
//! a fresh schema per test). The PostgreSQL tests fail, never skip, when the server at
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) is unreachable.

mod common;

use std::collections::{BTreeMap, HashSet};

use es_core::{EventStore, EventStoreExt, MemoryStore, Metadata};
use es_postgres::PostgresStore;
use es_postgres::sqlx::{self, AssertSqlSafe};
use futures::StreamExt;
use ledger::domain::{AccountEvent, Money, TransferStatus};
use ledger::{AppError, Ledger};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const EUR_ACCOUNTS: usize = 10;
const WORKERS: u64 = 16;
const OPERATIONS: u64 = 60;

async fn setup<S: EventStore>(ledger: &Ledger<S>) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..EUR_ACCOUNTS {
        let id = format!("eur-{i}");
        let overdraft = if i % 3 == 0 { 5_000 } else { 0 };
        ledger
            .open_account(
                Metadata::by_user("setup"),
                &id,
                "Owner",
                "EUR".parse().unwrap(),
                overdraft,
            )
            .await
            .unwrap();
        ledger
            .deposit(Metadata::by_user("setup"), &id, &eur(20_000), "seed")
            .await
            .unwrap();
        ids.push(id);
    }
    ledger
        .open_account(
            Metadata::by_user("setup"),
            "usd-0",
            "Owner",
            "USD".parse().unwrap(),
            0,
        )
        .await
        .unwrap();
    ledger
        .deposit(
            Metadata::by_user("setup"),
            "usd-0",
            &Money::new(10_000, "USD".parse().unwrap()),
            "seed",
        )
        .await
        .unwrap();
    // Destinations that refuse credits: a USD account, a closed one, one that does not exist.
    ledger
        .open_account(
            Metadata::by_user("setup"),
            "closed",
            "Owner",
            "EUR".parse().unwrap(),
            0,
        )
        .await
        .unwrap();
    ledger
        .close(Metadata::by_user("setup"), "closed", "")
        .await
        .unwrap();
    ids.extend(["usd-0", "closed", "ghost"].map(String::from));
    ids
}

fn eur(minor: i64) -> Money {
    Money::new(minor, "EUR".parse().unwrap())
}

async fn worker<S: EventStore>(
    ledger: Ledger<S>,
    ids: Vec<String>,
    seed: u64,
) -> Result<u64, AppError> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut transfers = 0;
    for _ in 0..OPERATIONS {
        let from = &ids[rng.below(EUR_ACCOUNTS as u64) as usize];
        let to = &ids[rng.below(ids.len() as u64) as usize];
        let meta = Metadata::by_user(format!("worker-{seed}"));
        let result = match rng.below(10) {
            // Freeze or unfreeze a destination now and then: credits to it fail meanwhile.
            0 => ledger.freeze(meta, to, "random").await.map(drop),
            1 => ledger.unfreeze(meta, from, "random").await.map(drop),
            2 => ledger
                .deposit(meta, from, &eur(rng.below(3_000) as i64 + 1), "top-up")
                .await
                .map(drop),
            3 => ledger
                .withdraw(meta, from, &eur(rng.below(3_000) as i64 + 1), "cash")
                .await
                .map(drop),
            _ => {
                transfers += 1;
                let amount = eur(rng.below(12_000) as i64 + 1);
                ledger
                    .transfer(meta, from, to, &amount, "random")
                    .await
                    .map(drop)
            }
        };
        match result {
            Ok(()) | Err(AppError::Domain(_)) | Err(AppError::NotFound(_)) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(transfers)
}

/// The log up to at least `position`. A PostgreSQL store reads only below a frontier that
/// appends in other schemas of the same database can hold down for a moment (the server is
/// shared with other tests), so a scan that ends early is resumed.
async fn whole_log<S: EventStore>(store: &S, position: u64) -> Vec<es_core::RecordedEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut events = Vec::new();
    loop {
        let after = events
            .last()
            .map_or(0, |e: &es_core::RecordedEvent| e.position);
        let mut log = store.stream_all(after, 500);
        while let Some(event) = log.next().await {
            events.push(event.unwrap());
        }
        let reached = events.last().map_or(0, |e| e.position);
        if reached >= position || std::time::Instant::now() >= deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

async fn check_everything<S: EventStore>(ledger: &Ledger<S>, store: &S) {
    ledger.run_processes().await.unwrap();

    // Every transfer reached a final state; each kind of outcome happened.
    let transfers = ledger.transfers().await.unwrap();
    let mut outcomes: BTreeMap<TransferStatus, usize> = BTreeMap::new();
    for t in &transfers {
        assert!(t.status.is_final(), "{t:?}");
        *outcomes.entry(t.status).or_default() += 1;
    }
    for status in [
        TransferStatus::Completed,
        TransferStatus::Rejected,
        TransferStatus::Compensated,
    ] {
        assert!(
            outcomes.get(&status).copied().unwrap_or(0) > 0,
            "no {status} transfer: {outcomes:?}"
        );
    }

    // Money is conserved: nothing in flight, balances equal what was paid in net.
    let totals = ledger.totals().await.unwrap();
    for (currency, t) in &totals {
        assert_eq!(t.in_flight, 0, "{currency}");
        assert_eq!(t.balances, t.net_inflow, "{currency}");
    }
    // Balances (read model) equal the aggregates and the statement sums.
    for row in ledger.balances().await.unwrap() {
        let aggregate = ledger.load_account(&row.id).await.unwrap();
        assert_eq!(row.balance, aggregate.balance(), "{}", row.id);
        let statement = ledger.statement(&row.id).await.unwrap();
        assert_eq!(
            statement.iter().map(|l| l.amount).sum::<i64>(),
            row.balance,
            "{}",
            row.id
        );
        assert_eq!(
            statement.last().map_or(0, |l| l.balance),
            row.balance,
            "{}",
            row.id
        );
        assert_eq!(aggregate.in_flight(), 0, "{}", row.id);
    }
    ledger.check().await.unwrap();

    // The read models equal a fresh rebuild: a private in-memory replay, and `rebuild`
    // itself (which empties the live read models and replays into them).
    let live = ledger.read_models().await.unwrap();
    let fresh = ledger.fresh_read_models().await.unwrap();
    assert_eq!(live, fresh);
    let log = whole_log(store, live.position).await;
    let mut reports = 0;
    let rebuilt = ledger.rebuild(|_| reports += 1).await.unwrap();
    assert_eq!(
        rebuilt.done,
        log.len() as u64,
        "the rebuild replayed every event"
    );
    assert!(reports > 0);
    assert_eq!(ledger.read_models().await.unwrap(), fresh);

    // No event is duplicated: unique ids, increasing positions, gapless stream versions, each
    // transfer leg happened at most once (and credit xor refund for every debit).
    let mut ids = HashSet::new();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut legs: BTreeMap<(uuid::Uuid, &'static str), u32> = BTreeMap::new();
    let mut position = 0;
    for event in log {
        assert!(
            ids.insert(event.event_id),
            "duplicate event id {}",
            event.event_id
        );
        // Increasing positions; the memory store's are gapless, PostgreSQL's may have holes
        // (an append that lost a race rolled back after drawing its position).
        assert!(event.position > position, "global log out of order");
        position = event.position;
        let version = versions.entry(event.stream.to_string()).or_default();
        assert_eq!(event.version, *version + 1, "gap in {}", event.stream);
        *version = event.version;
        if event.stream.aggregate_type == "Account" {
            let leg = match event.decode::<AccountEvent>().unwrap() {
                AccountEvent::TransferSent(e) => Some((e.transfer_id, "sent")),
                AccountEvent::TransferReceived(e) => Some((e.transfer_id, "received")),
                AccountEvent::TransferRefunded(e) => Some((e.transfer_id, "refunded")),
                AccountEvent::TransferSettled(e) => Some((e.transfer_id, "settled")),
                _ => None,
            };
            if let Some(leg) = leg {
                *legs.entry(leg).or_default() += 1;
            }
        }
    }
    assert_eq!(position, live.position, "the read models saw the whole log");
    assert!(
        legs.values().all(|&n| n == 1),
        "a transfer leg happened twice"
    );
    for t in &transfers {
        let count = |leg| legs.get(&(t.id, leg)).copied().unwrap_or(0);
        let expected = match t.status {
            TransferStatus::Completed => [1, 1, 0, 1],
            TransferStatus::Compensated => [1, 0, 1, 0],
            _ => [0, 0, 0, 0],
        };
        assert_eq!(
            ["sent", "received", "refunded", "settled"].map(count),
            expected,
            "{t:?}"
        );
    }
}

/// Runs the random workers, spread over `ledgers` (several ledgers on one store stand for
/// several processes), then checks everything through the first.
async fn random_transfers<S: EventStore>(ledgers: &[Ledger<S>], store: &S) {
    let ids = setup(&ledgers[0]).await;
    let tasks: Vec<_> = (0..WORKERS)
        .map(|seed| {
            let ledger = ledgers[seed as usize % ledgers.len()].clone();
            tokio::spawn(worker(ledger, ids.clone(), seed))
        })
        .collect();
    let mut transfers = 0;
    for task in tasks {
        transfers += task.await.unwrap().unwrap();
    }
    assert!(transfers > 100, "{transfers}");
    for ledger in ledgers {
        ledger.run_processes().await.unwrap();
    }
    check_everything(&ledgers[0], store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_random_transfers_conserve_money() {
    let store = MemoryStore::new();
    let ledger = Ledger::open(store.clone(), "ledger-view").await.unwrap();
    random_transfers(&[ledger], &store).await;
}

/// The same on PostgreSQL, with the read models in tables and two ledgers on one schema
/// (two processes sharing the tables and their checkpoint). On top: every statement line
/// comes from a distinct event, and the only checkpoints are the two stable ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_random_transfers_conserve_money_on_postgres() {
    let schema = common::fresh_schema();
    let first = common::open_postgres(&schema).await;
    let second = common::open_postgres(&schema).await;
    let store = first.store().clone();
    random_transfers(&[first, second], &store).await;

    let s = format!("\"{}\"", store.schema());
    let (lines, positions): (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*), count(DISTINCT position) FROM {s}.ledger_statement"
    )))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(lines > 0);
    assert_eq!(lines, positions, "a statement line was written twice");
    let names: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT name FROM {s}.checkpoints ORDER BY name"
    )))
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(names, ["ledger-read-models", "transfer-process"]);
    common::drop_schema(&store).await;
}

/// The process manager may crash between steps and see events again: reacting twice to the
/// whole log changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_process_manager_over_the_whole_log_changes_nothing() {
    let store = MemoryStore::new();
    let ledger = Ledger::open(store.clone(), "ledger-view").await.unwrap();
    let ids = setup(&ledger).await;
    worker(ledger.clone(), ids, 7).await.unwrap();
    let head = store.head_position().await.unwrap();
    store
        .save_checkpoint(ledger::process::PROCESS_NAME, 0)
        .await
        .unwrap();
    ledger.run_processes().await.unwrap();
    assert_eq!(
        store.head_position().await.unwrap(),
        head,
        "a replay wrote events"
    );
    check_everything(&ledger, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_process_manager_over_the_whole_log_changes_nothing_on_postgres() {
    let ledger = common::open_postgres(&common::fresh_schema()).await;
    let store: PostgresStore = ledger.store().clone();
    let ids = setup(&ledger).await;
    worker(ledger.clone(), ids, 7).await.unwrap();
    ledger.run_processes().await.unwrap();
    // Counted in the table: the reported head can lag on a shared server (see `whole_log`).
    let count = || async {
        let sql = format!("SELECT count(*) FROM \"{}\".events", store.schema());
        sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    let before = count().await;
    store
        .save_checkpoint(ledger::process::PROCESS_NAME, 0)
        .await
        .unwrap();
    ledger.run_processes().await.unwrap();
    assert_eq!(count().await, before, "a replay wrote events");
    check_everything(&ledger, &store).await;
    common::drop_schema(&store).await;
}
