//! The conservation scenarios, for every store: random concurrent work, a storm of transfers
//! whose callers are dropped at random, and the checks that must hold afterwards.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use es_core::{EventStore, GlobalLogExt, LogFilter, Metadata, RecordedEvent};
use futures::StreamExt;
use ledger::app::Page;
use ledger::domain::{AccountEvent, Money, TransferStatus};
use ledger::{AccountCommand, AppError, Ledger};

/// xorshift64*: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn seeded(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
}

pub const EUR_ACCOUNTS: usize = 10;
const WORKERS: u64 = 16;
const OPERATIONS: u64 = 60;

pub fn eur(minor: i64) -> Money {
    Money::new(minor, "EUR".parse().unwrap())
}

fn setup_meta() -> Metadata {
    Metadata::by_user("setup")
}

async fn open<S: EventStore + Clone + 'static>(
    ledger: &Ledger<S>,
    id: &str,
    currency: &str,
    overdraft_limit: i64,
) {
    let open = AccountCommand::Open {
        owner: "Owner".into(),
        currency: currency.parse().unwrap(),
        overdraft_limit,
    };
    ledger.on_account(setup_meta(), id, open).await.unwrap();
}

async fn deposit<S: EventStore + Clone + 'static>(ledger: &Ledger<S>, id: &str, amount: Money) {
    ledger
        .on_account(
            setup_meta(),
            id,
            AccountCommand::Deposit(amount, "seed".into()),
        )
        .await
        .unwrap();
}

/// Ten EUR accounts with money, a USD one, a closed one; returns the ids the workers use
/// (with destinations that refuse credits: USD, closed, and one that does not exist).
pub async fn setup<S: EventStore + Clone + 'static>(ledger: &Ledger<S>) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..EUR_ACCOUNTS {
        let id = format!("eur-{i}");
        open(ledger, &id, "EUR", if i % 3 == 0 { 5_000 } else { 0 }).await;
        deposit(ledger, &id, eur(20_000)).await;
        ids.push(id);
    }
    open(ledger, "usd-0", "USD", 0).await;
    deposit(ledger, "usd-0", Money::new(10_000, "USD".parse().unwrap())).await;
    open(ledger, "closed", "EUR", 0).await;
    ledger
        .on_account(setup_meta(), "closed", AccountCommand::Close(String::new()))
        .await
        .unwrap();
    ids.extend(["usd-0", "closed", "ghost"].map(String::from));
    ids
}

/// Random freezes, deposits, withdrawals and (mostly) transfers; returns how many transfers.
pub async fn worker<S: EventStore + Clone + 'static>(
    ledger: Ledger<S>,
    ids: Vec<String>,
    seed: u64,
) -> Result<u64, AppError> {
    let mut rng = Rng::seeded(seed);
    let mut transfers = 0;
    for _ in 0..OPERATIONS {
        let from = &ids[rng.below(EUR_ACCOUNTS as u64) as usize];
        let to = &ids[rng.below(ids.len() as u64) as usize];
        let meta = Metadata::by_user(format!("worker-{seed}"));
        let amount = |rng: &mut Rng, max: u64| eur(rng.below(max) as i64 + 1);
        let result = match rng.below(10) {
            // Freeze or unfreeze a destination now and then: credits to it fail meanwhile.
            0 => ledger
                .on_account(meta, to, AccountCommand::Freeze("random".into()))
                .await
                .map(drop),
            1 => ledger
                .on_account(meta, from, AccountCommand::Unfreeze("random".into()))
                .await
                .map(drop),
            2 => {
                let command = AccountCommand::Deposit(amount(&mut rng, 3_000), "top-up".into());
                ledger.on_account(meta, from, command).await.map(drop)
            }
            3 => {
                let command = AccountCommand::Withdraw(amount(&mut rng, 3_000), "cash".into());
                ledger.on_account(meta, from, command).await.map(drop)
            }
            _ => {
                transfers += 1;
                let amount = amount(&mut rng, 12_000);
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

/// Runs the random workers, spread over `ledgers` (several ledgers on one store stand for
/// several processes); checks that every kind of outcome happened.
pub async fn random_transfers<S: EventStore + Clone + 'static>(ledgers: &[Ledger<S>]) {
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
    ledgers[0].wait_idle().await.unwrap();
    let mut outcomes: BTreeMap<TransferStatus, usize> = BTreeMap::new();
    for t in ledgers[0].transfers(Page::all()).await.unwrap().items {
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
}

/// What a storm did.
#[derive(Debug, Default)]
pub struct StormCounts {
    /// Transfers asked for.
    pub attempted: u64,
    /// Calls that returned an outcome.
    pub acknowledged: u64,
    /// Calls dropped at a random moment.
    pub dropped: u64,
    /// Transfers stored (requested before the drop, or acknowledged).
    pub stored: u64,
}

/// `tasks` tasks each ask for `per_task` transfers and drop each call after a random moment
/// below `max_drop` (or let it finish). Sources hold plenty, so no debit is refused; one destination is
/// frozen, so some credits fail. Afterwards every stored transfer ends completed or
/// compensated, and every acknowledged outcome is what was stored.
pub async fn transfer_storm<S: EventStore + Clone + 'static>(
    ledger: &Ledger<S>,
    tasks: u64,
    per_task: u64,
    max_drop: Duration,
) -> StormCounts {
    const SOURCES: u64 = 8;
    for i in 0..SOURCES {
        open(ledger, &format!("storm-{i}"), "EUR", 0).await;
        deposit(ledger, &format!("storm-{i}"), eur(1_000_000_000)).await;
    }
    open(ledger, "storm-frozen", "EUR", 0).await;
    ledger
        .on_account(
            setup_meta(),
            "storm-frozen",
            AccountCommand::Freeze("storm".into()),
        )
        .await
        .unwrap();
    let runs = (0..tasks).map(|seed| {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            let mut rng = Rng::seeded(seed + 1000);
            let (mut acknowledged, mut dropped) = (Vec::new(), 0u64);
            for _ in 0..per_task {
                let from = format!("storm-{}", rng.below(SOURCES));
                let to = match rng.below(SOURCES + 1) {
                    SOURCES => "storm-frozen".to_owned(),
                    i => format!("storm-{}", (i + 1 + rng.below(SOURCES - 1)) % SOURCES),
                };
                let to = if to == from {
                    "storm-frozen".to_owned()
                } else {
                    to
                };
                let amount = eur(rng.below(1_000) as i64 + 1);
                let call =
                    ledger.transfer(Metadata::by_user("storm"), &from, &to, &amount, "storm");
                // Early, middle or late drops: within 1%, 10% or all of `max_drop`.
                let max = u64::try_from(max_drop.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(100);
                let window = [max / 100, max / 10, max][rng.below(3) as usize];
                let drop_after = Duration::from_micros(rng.below(window));
                tokio::select! {
                    outcome = call => acknowledged.push(outcome.expect("transfer call")),
                    () = tokio::time::sleep(drop_after) => dropped += 1,
                }
            }
            (acknowledged, dropped)
        })
    });
    let mut counts = StormCounts {
        attempted: tasks * per_task,
        ..StormCounts::default()
    };
    let mut outcomes = Vec::new();
    for run in futures::future::join_all(runs).await {
        let (acknowledged, dropped) = run.unwrap();
        counts.acknowledged += acknowledged.len() as u64;
        counts.dropped += dropped;
        outcomes.extend(acknowledged);
    }
    ledger.wait_idle().await.unwrap();
    let stored: BTreeMap<_, _> = ledger
        .transfers(Page::all())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|t| (t.id, t.status))
        .collect();
    counts.stored = stored.len() as u64;
    assert!(
        stored
            .values()
            .all(|s| matches!(s, TransferStatus::Completed | TransferStatus::Compensated)),
        "{stored:?}"
    );
    for outcome in &outcomes {
        assert_eq!(
            stored.get(&outcome.transfer_id),
            Some(&outcome.status),
            "{outcome:?}"
        );
    }
    assert!(
        counts.acknowledged <= counts.stored && counts.stored <= counts.attempted,
        "{counts:?}"
    );
    assert!(counts.dropped > 0 && counts.acknowledged > 0, "{counts:?}");
    counts
}

/// The log in position order.
pub async fn whole_log<S: EventStore + Clone + 'static>(store: &S) -> Vec<RecordedEvent> {
    let log = store.stream_all(0, 500, LogFilter::all());
    log.map(|event| event.expect("log read")).collect().await
}

/// Waits until the process manager is idle, then checks: every transfer final; money
/// conserved; balances equal aggregates and statement sums; the read models equal a fresh
/// replay and a rebuild; no event duplicated, and each transfer leg happened at most once,
/// as its outcome says.
pub async fn check_everything<S: EventStore + Clone + 'static>(ledger: &Ledger<S>, store: &S) {
    ledger.wait_idle().await.unwrap();
    let transfers = ledger.transfers(Page::all()).await.unwrap().items;
    assert!(
        transfers.iter().all(|t| t.status.is_final()),
        "{transfers:?}"
    );

    let totals = ledger.totals().await.unwrap();
    for (currency, t) in &totals {
        assert_eq!(t.in_flight, 0, "{currency}");
        assert_eq!(t.balances, t.net_inflow, "{currency}");
    }
    for row in ledger.balances().await.unwrap() {
        let aggregate = ledger.load_account(&row.id).await.unwrap();
        assert_eq!(row.balance, aggregate.balance(), "{}", row.id);
        let statement = ledger.statement(&row.id, Page::all()).await.unwrap().items;
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

    // The read models equal a fresh replay, and `rebuild` itself.
    let live = ledger.read_models().await.unwrap();
    let fresh = ledger.fresh_read_models().await.unwrap();
    assert_eq!(live, fresh);
    let log = whole_log(store).await;
    let mut reports = 0;
    let rebuilt = ledger.rebuild(|_| reports += 1).await.unwrap();
    if ledger.read_side().status().name == "ledger-tables" {
        // Shared tables: the live consumers (here and in other processes) take turns with
        // the rebuild on the replay, each batch applied once.
        assert!(
            rebuilt.done > 0 && rebuilt.done <= log.len() as u64,
            "{rebuilt:?}"
        );
    } else {
        assert_eq!(
            rebuilt.done,
            log.len() as u64,
            "the rebuild replayed every event"
        );
    }
    assert!(reports > 0);
    assert_eq!(ledger.read_models().await.unwrap(), fresh);

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
        // Increasing positions; PostgreSQL's may have holes (rolled-back appends).
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
                AccountEvent::TransferReversed(e) => Some((e.transfer_id, "reversed")),
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
            TransferStatus::Completed => [1, 1, 0, 1, 0],
            TransferStatus::Compensated => [1, 0, 1, 0, 0],
            _ => [0, 0, 0, 0, 0],
        };
        let seen = ["sent", "received", "refunded", "settled", "reversed"].map(count);
        assert_eq!(seen, expected, "{t:?}");
    }
}
