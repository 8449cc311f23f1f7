//! Shared helpers of the end-to-end tests: a small JSON client and the API scenario that
//! runs against every store.
#![allow(dead_code, unreachable_pub)]

pub mod conservation;

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::process::Child;

use es_core::EventStore;
use ledger::{Ledger, Options};
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
pub async fn start<S: EventStore + Clone + 'static>(store: S) -> (Api, Ledger<S>) {
    let ledger = Ledger::open(store, Options::default())
        .await
        .expect("ledger opens");
    serve(ledger).await
}

/// Starts the API on 127.0.0.1, port 0, over an opened ledger.
pub async fn serve<S: EventStore + Clone + 'static>(ledger: Ledger<S>) -> (Api, Ledger<S>) {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let options = ledger::http::HttpOptions {
        addr,
        ..Default::default()
    };
    let bound = ledger::http::spawn(ledger.clone(), options)
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
    let running: Vec<i64> = lines["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["balance"].as_i64().unwrap())
        .collect();
    assert_eq!(running, vec![100_000, 97_500, 90_000, 80_000, 90_000]);

    // Audit: who, what, when, correlation.
    let (status, history) = api.get(&format!("/accounts/{ada}/history")).await;
    assert_eq!(status, StatusCode::OK);
    let history = history["items"].as_array().unwrap();
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
    let events: Vec<&str> = trace["items"]
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

impl Api {
    /// The raw body of a GET, for numbers beyond 64 bits.
    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("sent");
        (response.status(), response.text().await.expect("body read"))
    }

    /// The EUR totals, read exactly (they may exceed 64 bits).
    pub async fn eur_totals(&self) -> (i128, i128, i128) {
        #[derive(serde::Deserialize)]
        struct Totals {
            net_inflow: i128,
            balances: i128,
            in_flight: i128,
        }
        let (status, text) = self.get_text("/totals").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let totals: std::collections::BTreeMap<String, Totals> =
            serde_json::from_str(&text).expect("totals decode");
        let eur = &totals["EUR"];
        (eur.net_inflow, eur.balances, eur.in_flight)
    }
}

/// Issue 12: two legal deposits (i64::MAX into x, then 1 into y) once broke the service for
/// good. Now the totals are exact, the account that would pass 2^63-1 refuses with a typed
/// error, and everything keeps answering.
pub async fn overflowing_deposits(api: &Api) {
    let max = i64::MAX;
    api.open("x", "EUR", 0).await;
    api.open("y", "EUR", 0).await;
    api.open("z", "EUR", max).await;
    let (status, body) = api.deposit("x", max, "EUR").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.deposit("y", 1, "EUR").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((api.balance("x").await, api.balance("y").await), (max, 1));
    let sum = i128::from(max) + 1;
    assert_eq!(api.eur_totals().await, (sum, sum, 0));
    // One more minor unit into x is refused, with a typed error.
    let (status, body) = api.deposit("x", 1, "EUR").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "overflow"),
        "{body}"
    );
    // A withdrawal against an i64::MAX overdraft limit.
    let (status, body) = api
        .post(
            "/accounts/z/withdrawals",
            json!({ "amount": max, "currency": "EUR" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(api.balance("z").await, -max);
    assert_eq!(api.eur_totals().await, (1, 1, 0));
    // A transfer into x cannot be credited: compensated, y keeps its money.
    let (status, body) = api
        .post(
            "/transfers",
            json!({ "from": "y", "to": "x", "amount": 1, "currency": "EUR" }),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::CREATED, Some("compensated"))
    );
    assert_eq!(api.balance("y").await, 1);
    for path in [
        "/accounts",
        "/accounts/x/statement",
        "/accounts/x/history",
        "/transfers",
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (status, health) = api.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    let consumers = health["consumers"].as_array().expect("consumers listed");
    assert!(consumers.iter().all(|c| c["parked"] == 0), "{health}");
}

/// One validation for every text field and path id, and time bounds, on every store.
pub async fn hostile_input(api: &Api) {
    api.open("ada", "EUR", 0).await;
    let user = [("x-user-id", "u")];
    for (path, body, expected) in [
        (
            "/accounts",
            json!({ "id": "nul", "owner": "A\u{0}da", "currency": "EUR" }),
            "invalid_text",
        ),
        (
            "/accounts",
            json!({ "id": "a\u{0}", "owner": "Ada", "currency": "EUR" }),
            "invalid_account_id",
        ),
        (
            "/accounts/ada/deposits",
            json!({ "amount": 1, "currency": "EUR", "reference": "x\u{1}" }),
            "invalid_text",
        ),
        (
            "/accounts/ada/freeze",
            json!({ "reason": "\u{7f}" }),
            "invalid_text",
        ),
        (
            "/transfers",
            json!({ "from": "ada", "to": "bob", "amount": 1, "currency": "EUR", "reference": "\u{0}" }),
            "invalid_text",
        ),
    ] {
        let (status, response) = api.post_raw(path, body.to_string(), &user).await;
        assert_eq!(
            (status, code(&response)),
            (StatusCode::BAD_REQUEST, expected),
            "{path} {body}"
        );
    }
    let tab = [("x-user-id", "u\tv")];
    let (status, response) = api
        .post_raw(
            "/accounts/ada/deposits",
            r#"{"amount": 1, "currency": "EUR"}"#,
            &tab,
        )
        .await;
    assert_eq!(
        (status, code(&response)),
        (StatusCode::BAD_REQUEST, "invalid_text")
    );
    for path in [
        "/accounts/a%00b",
        "/accounts/a%00b/history",
        "/accounts/a%00b/statement",
        "/accounts/a%00b/balance",
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_account_id"),
            "{path}"
        );
    }
    for at in [
        "0000-12-31T23:59:59Z",
        "-4713-01-01T00:00:00Z",
        "99999-01-01T00:00:00Z",
    ] {
        let (status, body) = api.get(&format!("/accounts/ada/balance?at={at}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{at}: {body}");
    }
    let (status, body) = api
        .get("/accounts/ada/balance?at=0001-01-01T00:00:00Z")
        .await;
    assert_eq!(
        (status, body["version"].as_u64()),
        (StatusCode::OK, Some(0)),
        "{body}"
    );
    assert_eq!(api.balance("ada").await, 0, "nothing was written");
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
pub async fn open_postgres(schema: &str) -> Ledger<es_postgres::PostgresStore> {
    match ledger::storage::postgres(&database_url(), schema, true).await {
        Ok(ledger) => ledger,
        Err(error) => {
            panic!(
                "PostgreSQL at {} must be reachable for these tests: {error}",
                database_url()
            )
        }
    }
}

/// Drops a test's schema (at the end of a passing test; a failing one leaves it).
pub async fn drop_schema(ledger: &Ledger<es_postgres::PostgresStore>) {
    ledger.shutdown().await.expect("process manager stops");
    let store = ledger.store();
    let sql = format!("DROP SCHEMA \"{}\" CASCADE", store.schema());
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(store.pool())
        .await
        .expect("schema dropped");
}

/// A child process (a `ledger serve` or `relay`) that is killed when the test ends, also when
/// it panics: a server left running would keep working on the test's database.
pub struct Running(pub Child);

impl Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
