//! Shared helpers of the end-to-end tests: a small JSON client and the API scenario that
//! runs against every store.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use es_core::EventStore;
use es_postgres::PostgresStore;
use ledger::Ledger;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A JSON client for one server.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub user: String,
}

/// Starts the API on 127.0.0.1, port 0, over `store`, with the read models in memory.
pub async fn start<S: EventStore>(store: S) -> (Api, Ledger<S>) {
    let ledger = Ledger::open(store, &format!("view-{}", uuid::Uuid::now_v7()))
        .await
        .expect("ledger opens");
    serve(ledger).await
}

/// Starts the API on 127.0.0.1, port 0, over an opened ledger.
pub async fn serve<S: EventStore>(ledger: Ledger<S>) -> (Api, Ledger<S>) {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let bound = ledger::http::spawn(ledger.clone(), addr)
        .await
        .expect("server binds");
    let api = Api {
        base: format!("http://{bound}"),
        client: reqwest::Client::new(),
        user: "tester".into(),
    };
    (api, ledger)
}

impl Api {
    pub fn as_user(&self, user: &str) -> Api {
        Api {
            user: user.into(),
            ..self.clone()
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request sent");
        read(response).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.post_with(path, body, &[]).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("x-user-id", &self.user)
            .json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.expect("request sent")).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.expect("request sent")).await
    }

    pub async fn open(&self, id: &str, currency: &str, overdraft: i64) {
        let (status, body) = self
            .post(
                "/accounts",
                json!({ "id": id, "owner": format!("Owner of {id}"), "currency": currency, "overdraft_limit": overdraft }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    pub async fn deposit(&self, id: &str, amount: i64, currency: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/accounts/{id}/deposits"),
            json!({ "amount": amount, "currency": currency, "reference": "test" }),
        )
        .await
    }

    pub async fn balance(&self, id: &str) -> i64 {
        let (status, body) = self.get(&format!("/accounts/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["balance"].as_i64().expect("balance is an integer")
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body read");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// The whole API, end to end: commands, a completed and a compensated transfer, queries,
/// audit and time travel. Account ids get `tag` appended.
pub async fn full_scenario(api: &Api, tag: &str) {
    let [ada, bob, cy] = ["ada", "bob", "cy"].map(|n| format!("{n}{tag}"));
    api.open(&ada, "EUR", 0).await;
    api.open(&bob, "EUR", 5_000).await;
    api.open(&cy, "EUR", 0).await;

    let (status, body) = api.deposit(&ada, 100_000, "EUR").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["account"]["balance"], 100_000);
    assert_eq!(body["receipt"]["events"], json!(["MoneyDeposited"]));
    let after_deposit = chrono::Utc::now();

    let (status, body) = api
        .post(
            &format!("/accounts/{ada}/withdrawals"),
            json!({ "amount": 2_500, "currency": "EUR", "reference": "cash" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["account"]["balance"], 97_500);

    // A transfer that completes.
    let (status, body) = api
        .as_user("ada-herself")
        .post(
            "/transfers",
            json!({ "from": ada, "to": bob, "amount": 7_500, "currency": "EUR", "reference": "rent" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(api.balance(&ada).await, 90_000);
    assert_eq!(api.balance(&bob).await, 7_500);

    // A transfer whose credit fails (destination frozen) and is compensated.
    let (status, body) = api
        .as_user("compliance")
        .post(
            &format!("/accounts/{cy}/freeze"),
            json!({ "reason": "kyc" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["account"]["status"], "frozen");
    let (status, body) = api
        .post(
            "/transfers",
            json!({ "from": ada, "to": cy, "amount": 10_000, "currency": "EUR" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "compensated", "{body}");
    assert!(
        body["reason"].as_str().unwrap_or("").contains("frozen"),
        "{body}"
    );
    let compensated_correlation = body["correlation_id"].as_str().unwrap().to_owned();
    let transfer_id = body["transfer_id"].as_str().unwrap().to_owned();
    assert_eq!(api.balance(&ada).await, 90_000, "refunded");
    assert_eq!(api.balance(&cy).await, 0);

    let (status, body) = api.get(&format!("/transfers/{transfer_id}")).await;
    assert_eq!(
        (status, body["status"].clone()),
        (StatusCode::OK, json!("compensated"))
    );

    // A transfer the source refuses: rejected, nothing moves. Bob may overdraw by 50.00.
    let (status, body) = api
        .post(
            "/transfers",
            json!({ "from": bob, "to": ada, "amount": 12_501, "currency": "EUR" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "rejected", "{body}");
    assert_eq!(api.balance(&bob).await, 7_500);

    // Statement with running balance.
    let (status, lines) = api.get(&format!("/accounts/{ada}/statement")).await;
    assert_eq!(status, StatusCode::OK);
    let running: Vec<i64> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["balance"].as_i64().unwrap())
        .collect();
    assert_eq!(running, vec![100_000, 97_500, 90_000, 80_000, 90_000]);

    // Audit: who, what, when, correlation.
    let (status, history) = api.get(&format!("/accounts/{ada}/history")).await;
    assert_eq!(status, StatusCode::OK);
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 7, "{history:?}");
    assert_eq!(history[0]["event"], "AccountOpened");
    assert_eq!(history[0]["user_id"], "tester");
    assert_eq!(history[3]["event"], "TransferSent");
    assert_eq!(
        history[3]["user_id"], "ada-herself",
        "the requester, through the process"
    );
    assert!(history[3]["causation_id"].is_string());
    assert_eq!(history[6]["event"], "TransferRefunded");
    assert_eq!(history[6]["correlation_id"], json!(compensated_correlation));

    // Time travel, by version and by time.
    let (status, body) = api.get(&format!("/accounts/{ada}/balance?version=2")).await;
    assert_eq!(
        (status, body["balance"].clone()),
        (StatusCode::OK, json!(100_000))
    );
    let at = after_deposit.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (status, body) = api
        .get(&format!(
            "/accounts/{ada}/balance?at={}",
            at.replace('+', "%2B")
        ))
        .await;
    assert_eq!(
        (status, body["balance"].clone()),
        (StatusCode::OK, json!(100_000)),
        "{body}"
    );
    let (_, body) = api.get(&format!("/accounts/{ada}/balance")).await;
    assert_eq!(body["balance"], 90_000);

    // The trace of the compensated transfer spans the transfer and both accounts' streams.
    let (status, trace) = api.get(&format!("/trace/{compensated_correlation}")).await;
    assert_eq!(status, StatusCode::OK);
    let events: Vec<&str> = trace
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "TransferRequested",
            "TransferSent",
            "TransferDebited",
            "TransferCreditFailed",
            "TransferRefunded",
            "TransferCompensated"
        ]
    );

    // Totals: money is conserved.
    let (status, totals) = api.get("/totals").await;
    assert_eq!(status, StatusCode::OK);
    let eur = &totals["EUR"];
    assert_eq!(
        eur["balances"].as_i64().unwrap() + eur["in_flight"].as_i64().unwrap(),
        eur["net_inflow"].as_i64().unwrap(),
        "{totals}"
    );

    // Close: refused with money on it, accepted at zero.
    let (status, body) = api.post(&format!("/accounts/{bob}/close"), json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "non_zero_balance")
    );
    let (status, body) = api
        .post(
            &format!("/accounts/{bob}/withdrawals"),
            json!({ "amount": 7_500, "currency": "EUR" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api
        .post(
            &format!("/accounts/{bob}/close"),
            json!({ "reason": "done" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["account"]["status"], "closed");
}

/// `DATABASE_URL`, or the local server's default.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh schema name, so tests never see each other's events or tables.
pub fn fresh_schema() -> String {
    format!("ledger_test_{}", uuid::Uuid::now_v7().simple())
}

/// The ledger on PostgreSQL in `schema`, read models in tables. Panics (the test fails,
/// never skips) when the server is unreachable.
pub async fn open_postgres(schema: &str) -> Ledger<PostgresStore> {
    match ledger::storage::open(&database_url(), schema).await {
        Ok(ledger) => ledger,
        Err(error) => panic!(
            "PostgreSQL at {} must be reachable for these tests: {error}",
            database_url()
        ),
    }
}

/// Drops a test's schema (called at the end of a passing test; a failing one leaves it for
/// inspection).
pub async fn drop_schema(store: &PostgresStore) {
    let sql = format!("DROP SCHEMA \"{}\" CASCADE", store.schema());
    es_postgres::sqlx::query(es_postgres::sqlx::AssertSqlSafe(sql))
        .execute(store.pool())
        .await
        .expect("test schema dropped");
}
