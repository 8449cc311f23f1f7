//! Many concurrent random transfers, some of which fail, then: money is conserved, balances
//! equal the statement sums, the read models equal a fresh rebuild, no event is duplicated.
//! Also: a transfer storm whose callers are dropped at random moments, a process manager
//! that parks what it cannot decide and goes on, and a settlement refused (the source never
//! debited) that ends compensated.
//!
//! On the memory store here; the PostgreSQL variants live in `conservation_postgres.rs`.

mod common;

use common::conservation::*;
use es_core::{
    ExpectedVersion, GlobalLog, MemoryStore, Metadata, NewEvent, Repository, RetryPolicy, StreamId,
    StreamStore,
};
use ledger::app::Page;
use ledger::domain::{Money, TransferEvent, TransferStatus};
use ledger::process::{self, Partitions, TransferProcess};
use ledger::{AccountCommand, Ledger, Options};
use uuid::Uuid;

async fn memory_ledger(options: Options) -> (Ledger<MemoryStore>, MemoryStore) {
    let store = MemoryStore::new();
    let leases = std::sync::Arc::new(store.clone());
    let ledger = Ledger::open(store.clone(), Options { leases, ..options })
        .await
        .unwrap();
    (ledger, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_random_transfers_conserve_money() {
    let (ledger, store) = memory_ledger(Options::default()).await;
    random_transfers(std::slice::from_ref(&ledger)).await;
    check_everything(&ledger, &store).await;
}

/// The process manager may crash between steps and see events again: reacting again to the
/// whole log (a fresh consumer from position 0) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_process_manager_over_the_whole_log_changes_nothing() {
    let (ledger, store) = memory_ledger(Options::default()).await;
    let ids = setup(&ledger).await;
    worker(ledger.clone(), ids, 7).await.unwrap();
    ledger.wait_idle().await.unwrap();
    let head = store.head_position().await.unwrap();
    let process = TransferProcess::new(
        Repository::new(store.clone()),
        Repository::new(store.clone()),
    );
    let mut replay = process::consumer("replay", store.clone(), process);
    let progress = replay.catch_up().await.unwrap();
    assert!(progress.done > 0);
    assert_eq!(
        store.head_position().await.unwrap(),
        head,
        "a replay wrote events"
    );
    check_everything(&ledger, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transfer_storm_with_dropped_callers_conserves_money() {
    let (ledger, store) = memory_ledger(Options::default()).await;
    let counts = transfer_storm(&ledger, 16, 40, std::time::Duration::from_millis(3)).await;
    println!("memory storm: {counts:?}");
    check_everything(&ledger, &store).await;
}

fn fast_retry() -> Options {
    let retry = RetryPolicy {
        attempts: 2,
        initial_backoff: std::time::Duration::from_millis(5),
        max_backoff: std::time::Duration::from_millis(5),
    };
    Options {
        partitions: Partitions {
            retry,
            ..Partitions::default()
        },
        ..Options::default()
    }
}

/// Appends events to a transfer's stream as a buggy or older writer might have.
async fn append_by_hand(store: &MemoryStore, id: Uuid, events: Vec<TransferEvent>) -> u64 {
    let stream = StreamId::new("Transfer", id.to_string());
    let meta = Metadata::by_user("by-hand");
    let events = events
        .iter()
        .map(|e| NewEvent::from_set(e, meta.clone()).unwrap())
        .collect();
    let stored = store
        .append(&stream, ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    stored.last().unwrap().position
}

fn requested(from: &str, to: &str, amount: i64) -> TransferEvent {
    let currency = "EUR".parse().unwrap();
    let (from_account, to_account, reference) = (from.into(), to.into(), String::new());
    ledger::domain::TransferRequested {
        from_account,
        to_account,
        amount,
        currency,
        reference,
    }
    .into()
}

/// A step the domain refuses and the process cannot turn into an outcome (refunding a source
/// that was never debited) is retried, parked, and shown in the status; later transfers go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_event_parks_instead_of_wedging_the_process_manager() {
    let (ledger, store) = memory_ledger(fast_retry()).await;
    for id in ["ada", "bob"] {
        let open = AccountCommand::Open {
            owner: id.into(),
            currency: eur(0).currency,
            overdraft_limit: 0,
        };
        ledger
            .on_account(Metadata::by_user("t"), id, open)
            .await
            .unwrap();
    }
    ledger
        .on_account(
            Metadata::by_user("t"),
            "ada",
            AccountCommand::Deposit(eur(100), String::new()),
        )
        .await
        .unwrap();
    let poison = Uuid::now_v7();
    let failed = ledger::domain::TransferCreditFailed {
        reason: "by hand".into(),
    };
    let debited = ledger::domain::TransferDebited {};
    append_by_hand(
        &store,
        poison,
        vec![requested("ada", "bob", 10), debited.into(), failed.into()],
    )
    .await;

    let outcome = ledger
        .transfer(Metadata::by_user("t"), "ada", "bob", &eur(30), "")
        .await
        .unwrap();
    assert_eq!(outcome.status, TransferStatus::Completed);
    ledger.wait_idle().await.unwrap();
    let parked: u64 = ledger.status().iter().map(|s| s.parked).sum();
    assert_eq!(parked, 1, "{:#?}", ledger.status());
    let partition = ledger.status().into_iter().find(|s| s.parked == 1).unwrap();
    assert!(
        partition.name.starts_with(process::PROCESS),
        "{partition:?}"
    );
    let stored = es_core::CheckpointStore::parked(&store, &partition.name)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].stream,
        StreamId::new("Transfer", poison.to_string())
    );
    assert!(stored[0].error.contains("not in flight"), "{:?}", stored[0]);
    assert_eq!(
        ledger.transfer_outcome(poison).await.unwrap().status,
        TransferStatus::CreditFailed
    );
    assert_eq!(
        (
            ledger.account("ada").await.unwrap().balance,
            ledger.account("bob").await.unwrap().balance
        ),
        (70, 30)
    );
    ledger.check().await.unwrap();
}

/// A transfer whose settlement is refused (the source never sent the money: here, written by
/// hand as debited) gets compensated: the credit is reversed and money is conserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_whose_settle_is_rejected_gets_compensated() {
    let (ledger, store) = memory_ledger(fast_retry()).await;
    for id in ["ada", "bob"] {
        let open = AccountCommand::Open {
            owner: id.into(),
            currency: eur(0).currency,
            overdraft_limit: 0,
        };
        ledger
            .on_account(Metadata::by_user("t"), id, open)
            .await
            .unwrap();
    }
    let id = Uuid::now_v7();
    append_by_hand(
        &store,
        id,
        vec![
            requested("ada", "bob", 25),
            ledger::domain::TransferDebited {}.into(),
        ],
    )
    .await;
    let outcome = ledger.wait_for_transfer(id).await.unwrap();
    assert_eq!(outcome.status, TransferStatus::Compensated, "{outcome:?}");
    ledger.wait_idle().await.unwrap();
    let history: Vec<String> = ledger
        .audit("bob", Page::all())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        history,
        ["AccountOpened", "TransferReceived", "TransferReversed"]
    );
    assert_eq!(ledger.account("bob").await.unwrap().balance, 0);
    let totals = ledger.totals().await.unwrap();
    assert_eq!(
        totals
            .values()
            .map(|t| (t.balances, t.in_flight, t.net_inflow))
            .collect::<Vec<_>>(),
        [(0, 0, 0)]
    );
    assert!(ledger.status().iter().all(|s| s.parked == 0));
    ledger.check().await.unwrap();
}

fn eur(minor: i64) -> Money {
    Money::new(minor, "EUR".parse().unwrap())
}
