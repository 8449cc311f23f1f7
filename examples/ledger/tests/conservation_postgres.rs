//! The conservation scenarios of `conservation.rs` on PostgreSQL, read models in tables, in
//! a fresh schema per test. They fail, never skip, when the server at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) is unreachable.

mod common;

use common::conservation::*;
use es_core::CheckpointStore;
use ledger::process::PROCESS;

/// Two ledgers on one schema (two processes sharing the tables, their checkpoint, and the
/// process manager's partitions). On top: every statement line comes from a distinct event,
/// and the checkpoints are the stable shared ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_random_transfers_conserve_money_on_postgres() {
    let schema = common::fresh_schema();
    let first = common::open_postgres(&schema).await;
    let second = common::open_postgres(&schema).await;
    random_transfers(&[first.clone(), second.clone()]).await;
    second.wait_idle().await.unwrap();
    let store = first.store().clone();
    check_everything(&first, &store).await;
    let s = format!("\"{}\"", store.schema());
    let (lines, positions): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(DISTINCT position) FROM {s}.ledger_statement"
    )))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(lines > 0);
    assert_eq!(lines, positions, "a statement line was written twice");
    assert!(
        store
            .load_checkpoint("ledger-tables")
            .await
            .unwrap()
            .is_some()
    );
    for i in 0..4 {
        let name = format!("{PROCESS}[{i}/4]");
        assert!(
            store.load_checkpoint(&name).await.unwrap().is_some(),
            "{name}"
        );
    }
    second.shutdown().await.unwrap();
    common::drop_schema(&first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transfer_storm_with_dropped_callers_conserves_money_on_postgres() {
    let ledger = common::open_postgres(&common::fresh_schema()).await;
    let counts = transfer_storm(&ledger, 8, 16, std::time::Duration::from_millis(1500)).await;
    println!("postgres storm: {counts:?}");
    check_everything(&ledger, &ledger.store().clone()).await;
    common::drop_schema(&ledger).await;
}
