//! Issue 12 item 5: exact, durable idempotency across two server processes on one PostgreSQL
//! schema, while a killer terminates their database connections (`pg_terminate_backend`)
//! and clients disconnect mid-request. Every key executes once and every answer for it is
//! the first outcome; another request under a used key is a 422; a 4xx is not stored.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::conservation::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// `ledger serve` on `url` and `schema`; returns the child and its base URL.
fn serve(url: &str, schema: &str) -> (common::Running, String) {
    let mut child = common::Running(
        Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args([
                "--database-url",
                url,
                "--schema",
                schema,
                "serve",
                "--addr",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts"),
    );
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = lines
        .find_map(|line| line.ok()?.split("listening on ").nth(1).map(str::to_owned))
        .expect("serve says where it listens (PostgreSQL must be reachable)");
    std::thread::spawn(move || lines.for_each(drop));
    (child, base)
}

/// Posts `body` to `path` under `key`, first with a client that may give up (disconnect)
/// at a random moment, then until an answer that is not a 5xx, alternating servers.
/// Returns every answer received.
async fn post_until_answered(
    bases: &[String],
    path: &str,
    body: &Value,
    key: &str,
    rng: &mut Rng,
) -> Vec<(StatusCode, Value)> {
    let mut answers = Vec::new();
    for attempt in 0..60u64 {
        let timeout = match attempt {
            0 => Duration::from_millis(rng.below(40) + 1),
            _ => Duration::from_secs(15),
        };
        let client = reqwest::Client::builder().timeout(timeout).build().unwrap();
        let base = &bases[((attempt + rng.below(2)) % 2) as usize];
        let sent = client
            .post(format!("{base}{path}"))
            .header("x-user-id", "idem")
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await;
        let Ok(response) = sent else { continue }; // disconnected, or the connection was cut
        let status = response.status();
        let Ok(text) = response.text().await else {
            continue;
        };
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_server_error() {
            continue;
        }
        answers.push((status, value));
        if answers.len() == 2 {
            return answers;
        }
    }
    panic!("{key}: no answer in 60 attempts: {answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_commands_run_once_across_two_servers_killed_connections_and_disconnects() {
    let schema = common::fresh_schema();
    let app = format!("ledger_idem_{}", uuid::Uuid::now_v7().simple());
    let base_url = common::database_url();
    let sep = if base_url.contains('?') { '&' } else { '?' };
    let url = format!("{base_url}{sep}application_name={app}");
    let (one, first) = serve(&url, &schema);
    let (two, second) = serve(&url, &schema);
    let bases = [first.clone(), second.clone()];
    let api = common::Api {
        base: first.clone(),
        client: reqwest::Client::new(),
        user: "setup".into(),
    };
    for id in ["ada", "bob", "cy"] {
        api.open(id, "EUR", 0).await;
        assert_eq!(api.deposit(id, 1_000_000, "EUR").await.0, StatusCode::OK);
    }

    // The killer: terminates every database connection of the two servers, 12 times.
    let pool = sqlx::PgPool::connect(&base_url)
        .await
        .expect("PostgreSQL reachable");
    let stop = Arc::new(AtomicBool::new(false));
    let killer = tokio::spawn({
        let (pool, stop, app) = (pool.clone(), stop.clone(), app.clone());
        async move {
            let mut killed = 0u64;
            let mut ticks = tokio::time::interval(Duration::from_millis(700));
            for _ in 0..12 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                ticks.tick().await;
                let sql = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1";
                let (n,): (i64,) = sqlx::query_as(sql)
                    .bind(&app)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                killed += u64::try_from(n).unwrap_or(0);
            }
            killed
        }
    });

    let tasks = (0..8u64).map(|task| {
        let bases = bases.clone();
        tokio::spawn(async move {
            let mut rng = Rng::seeded(task + 77);
            let mut outcomes = Vec::new();
            for i in 0..6 {
                let key = format!("idem-{task}-{i}");
                let (path, body) = if i % 2 == 0 {
                    ("/accounts/ada/deposits".to_owned(), json!({ "amount": 100 + task, "currency": "EUR", "reference": key }))
                } else {
                    let (from, to) = if task % 2 == 0 { ("bob", "cy") } else { ("cy", "bob") };
                    ("/transfers".to_owned(), json!({ "from": from, "to": to, "amount": 7, "currency": "EUR", "reference": key }))
                };
                let answers = post_until_answered(&bases, &path, &body, &key, &mut rng).await;
                outcomes.push((key, path, body, answers));
            }
            outcomes
        })
    });
    let mut outcomes = Vec::new();
    for task in futures::future::join_all(tasks).await {
        outcomes.extend(task.unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    let killed = killer.await.unwrap();
    assert!(killed > 0, "the killer cut no connection");

    // Every answer under a key is the first outcome.
    for (key, path, _, answers) in &outcomes {
        let (status, first) = &answers[0];
        assert!(status.is_success(), "{key}: {answers:?}");
        for (status_again, again) in &answers[1..] {
            assert_eq!(status_again, status, "{key}");
            if path == "/transfers" {
                assert_eq!(again, first, "{key}");
            } else {
                assert_eq!(again["receipt"], first["receipt"], "{key}");
            }
        }
    }
    // Each key executed once: one deposit per deposit key, one transfer per transfer key.
    let (status, history) = get(&api, "/accounts/ada/history?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let references: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "MoneyDeposited")
        .filter_map(|e| e["data"]["reference"].as_str())
        .collect();
    let (status, transfers) = get(&api, "/transfers?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{transfers}");
    let transfers = transfers["items"].as_array().unwrap();
    for (key, path, _, answers) in &outcomes {
        let count = if path == "/transfers" {
            let id = &answers[0].1["transfer_id"];
            assert_eq!(answers[0].1["status"], "completed", "{key}");
            transfers.iter().filter(|t| t["id"] == *id).count()
        } else {
            references.iter().filter(|r| **r == key.as_str()).count()
        };
        assert_eq!(count, 1, "{key} executed {count} times");
    }
    let transfer_keys = outcomes.iter().filter(|o| o.1 == "/transfers").count();
    assert_eq!(transfers.len(), transfer_keys, "one transfer per key");
    let deposited: i64 = outcomes
        .iter()
        .filter(|o| o.1 != "/transfers")
        .map(|o| o.2["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(api.balance("ada").await, 1_000_000 + deposited);
    // As many transfers of 7 from bob to cy as back: each ran once, so both are where they began.
    assert_eq!(
        (api.balance("bob").await, api.balance("cy").await),
        (1_000_000, 1_000_000)
    );

    // Another request under a used key: 422, on either server. A refused command (4xx) is not
    // stored: the same key runs again once the funds are there.
    let (key, path, body, _) = &outcomes[0];
    let mut other = body.clone();
    other["amount"] = json!(999);
    for base in &bases {
        let api = common::Api {
            base: base.clone(),
            ..api.clone()
        };
        let (status, answer) = api
            .post_with(path, other.clone(), &[("idempotency-key", key)])
            .await;
        assert_eq!(
            (status, common::code(&answer)),
            (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
        );
    }
    let big = json!({ "amount": 5_000_000, "currency": "EUR" });
    let key = [("idempotency-key", "idem-big")];
    let (status, _) = api
        .post_with("/accounts/bob/withdrawals", big.clone(), &key)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.deposit("bob", 5_000_000, "EUR").await.0, StatusCode::OK);
    let api_two = common::Api {
        base: second.clone(),
        ..api.clone()
    };
    let (status, answer) = api_two
        .post_with("/accounts/bob/withdrawals", big, &key)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    drop((one, two));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
}

/// A GET, repeated while it answers a 5xx: each pooled connection the killer cut may fail
/// one read of the ledger's own tables before the pool discards it (reads through the store
/// run again by themselves), and each server's pool holds up to 16.
async fn get(api: &common::Api, path: &str) -> (StatusCode, Value) {
    for _ in 0..40 {
        let (status, body) = api.get(path).await;
        if !status.is_server_error() {
            return (status, body);
        }
    }
    api.get(path).await
}
