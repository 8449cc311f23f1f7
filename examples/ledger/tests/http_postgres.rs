//! End-to-end tests of the HTTP API on PostgreSQL, each in a fresh schema, with the read
//! models in PostgreSQL tables. They fail (never skip) when the server at `DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`) is unreachable.

mod common;

use common::{drop_schema, fresh_schema, full_scenario, open_postgres, serve};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_api_end_to_end_on_postgres() {
    let (api, ledger) = serve(open_postgres(&fresh_schema()).await).await;
    assert_eq!(ledger.read_side().status().name, "ledger-tables");
    full_scenario(&api, "").await;
    ledger.wait_idle().await.unwrap();
    ledger.check().await.expect("read models consistent");
    let live = ledger.read_models().await.unwrap();
    assert_eq!(live, ledger.fresh_read_models().await.unwrap());
    drop_schema(&ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_concurrent_transfers_on_postgres() {
    let (api, ledger) = serve(open_postgres(&fresh_schema()).await).await;
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
    assert!(
        responses.iter().all(|r| r == &responses[0]),
        "{responses:?}"
    );
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
    drop_schema(&ledger).await;
}

/// Two servers on one schema (two processes in production) share the tables and split the
/// process manager's partitions: a write made through one is read through the other, and
/// the tables' one checkpoint moves each event into them exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_the_read_model_tables() {
    let schema = fresh_schema();
    let (one, first) = serve(open_postgres(&schema).await).await;
    let (two, second) = serve(open_postgres(&schema).await).await;
    one.open("ada", "EUR", 0).await;
    two.open("bob", "EUR", 0).await;
    one.deposit("ada", 500, "EUR").await;
    for _ in 0..4 {
        let (status, body) = two
            .post(
                "/transfers",
                json!({ "from": "ada", "to": "bob", "amount": 50, "currency": "EUR" }),
            )
            .await;
        assert_eq!(
            (status, body["status"].clone()),
            (StatusCode::CREATED, json!("completed")),
            "{body}"
        );
    }
    assert_eq!(
        (one.balance("ada").await, one.balance("bob").await),
        (300, 200)
    );
    let (_, lines) = one.get("/accounts/bob/statement").await;
    assert_eq!(lines["items"].as_array().map(Vec::len), Some(4), "{lines}");
    first.wait_idle().await.unwrap();
    second.wait_idle().await.unwrap();
    let fresh = first.fresh_read_models().await.unwrap();
    assert_eq!(first.read_models().await.unwrap(), fresh);
    assert_eq!(second.read_models().await.unwrap(), fresh);
    second.shutdown().await.unwrap();
    drop_schema(&first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_overflowing_deposits_leave_the_service_answering_on_postgres() {
    let (api, ledger) = serve(open_postgres(&fresh_schema()).await).await;
    common::overflowing_deposits(&api).await;
    ledger.check().await.expect("read models consistent");
    // The service opens again on the same schema.
    let again = open_postgres(ledger.store().schema()).await;
    assert_eq!(again.totals().await.unwrap().len(), 1);
    again.shutdown().await.unwrap();
    drop_schema(&ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_paths_and_times_get_400_on_postgres() {
    let (api, ledger) = serve(open_postgres(&fresh_schema()).await).await;
    common::hostile_input(&api).await;
    drop_schema(&ledger).await;
}
