//! Many concurrent random transfers, some of which fail, then: money is conserved, balances
//! equal the statement sums, the read models equal a fresh rebuild, no event is duplicated.

use std::collections::{BTreeMap, HashSet};

use es_core::{EventStore, EventStoreExt, MemoryStore, Metadata};
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

    // The read models equal a fresh rebuild.
    let live = ledger.read(|m| m.clone()).await.unwrap();
    let fresh = ledger.fresh_read_models().await.unwrap();
    assert_eq!(live, fresh);
    ledger.rebuild(|_| {}).await.unwrap();
    assert_eq!(ledger.read(|m| m.clone()).await.unwrap(), fresh);

    // No event is duplicated: unique ids, gapless positions and stream versions, and each
    // transfer leg happened at most once (and credit xor refund for every debit).
    let mut ids = HashSet::new();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut legs: BTreeMap<(uuid::Uuid, &'static str), u32> = BTreeMap::new();
    let mut position = 0;
    let mut log = store.stream_all(0, 500);
    while let Some(event) = log.next().await {
        let event = event.unwrap();
        assert!(
            ids.insert(event.event_id),
            "duplicate event id {}",
            event.event_id
        );
        assert_eq!(event.position, position + 1, "gap in the global log");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_random_transfers_conserve_money() {
    let store = MemoryStore::new();
    let ledger = Ledger::open(store.clone(), "ledger-view").await.unwrap();
    let ids = setup(&ledger).await;
    let tasks: Vec<_> = (0..WORKERS)
        .map(|seed| tokio::spawn(worker(ledger.clone(), ids.clone(), seed)))
        .collect();
    let mut transfers = 0;
    for task in tasks {
        transfers += task.await.unwrap().unwrap();
    }
    assert!(transfers > 100, "{transfers}");
    check_everything(&ledger, &store).await;
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
