//! End-to-end tests of the HTTP API on PostgreSQL, each in a fresh schema. They fail (never
//! skip) when the server at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) is unreachable.

mod common;

use common::{full_scenario, start};
use es_postgres::PostgresStore;
use reqwest::StatusCode;
use serde_json::json;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn fresh_store() -> PostgresStore {
    let schema = format!("ledger_test_{}", uuid::Uuid::now_v7().simple());
    match ledger::storage::connect(&database_url(), &schema).await {
        Ok(store) => store,
        Err(error) => panic!("PostgreSQL must be reachable for these tests: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_api_end_to_end_on_postgres() {
    let (api, ledger) = start(fresh_store().await).await;
    full_scenario(&api, "").await;
    ledger.check().await.expect("read models consistent");
    let live = ledger.read(|m| m.clone()).await.unwrap();
    assert_eq!(live, ledger.fresh_read_models().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_concurrent_transfers_on_postgres() {
    let (api, ledger) = start(fresh_store().await).await;
    api.open("ada", "EUR", 0).await;
    api.open("bob", "EUR", 0).await;
    api.deposit("ada", 1_000, "EUR").await;
    let transfer = json!({ "from": "ada", "to": "bob", "amount": 300, "currency": "EUR" });
    let key = [("idempotency-key", "pg-transfer-1")];
    let responses = futures::future::join_all(
        (0..6).map(|_| api.post_with("/transfers", transfer.clone(), &key)),
    )
    .await;
    assert_eq!(responses[0].0, StatusCode::CREATED, "{:?}", responses[0]);
    assert!(responses.iter().all(|r| r == &responses[0]));
    // Plain concurrent transfers on the same accounts, without keys: each posts once.
    let plain = futures::future::join_all((0..6).map(|_| {
        api.post(
            "/transfers",
            json!({ "from": "ada", "to": "bob", "amount": 100, "currency": "EUR" }),
        )
    }))
    .await;
    assert!(
        plain
            .iter()
            .all(|(s, b)| *s == StatusCode::CREATED && b["status"] == "completed")
    );
    assert_eq!(
        (api.balance("ada").await, api.balance("bob").await),
        (100, 900)
    );
    ledger.check().await.unwrap();
}
