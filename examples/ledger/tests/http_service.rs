//! The service as an operator runs it: timeouts against slow clients (raw TCP), the OpenAPI
//! description, logs with request ids and es-core's spans, redacted connection strings, and
//! a refused database connection reported at once with its cause.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use es_core::MemoryStore;
use ledger::http::HttpOptions;
use ledger::{Ledger, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server whose header and body timeouts are 300 ms and whose whole-request timeout is
/// `request` (the body timeout is raised above it when `request` is short).
async fn server(request: Duration) -> SocketAddr {
    let ledger = Ledger::open(MemoryStore::new(), Options::default())
        .await
        .unwrap();
    let short = Duration::from_millis(300);
    let options = HttpOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        header_timeout: short,
        body_timeout: if request < Duration::from_secs(1) {
            Duration::from_secs(30)
        } else {
            short
        },
        request_timeout: request,
        ..HttpOptions::default()
    };
    ledger::http::spawn(ledger, options).await.unwrap()
}

/// Sends `bytes` and then nothing; returns what the server sent until it closed the
/// connection. Fails if the server keeps it open for 20 s (far beyond every timeout).
async fn closed_after(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("the server closes the connection");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_the_timeouts() {
    let addr = server(Duration::from_secs(30)).await;
    // Nothing sent at all.
    assert_eq!(closed_after(addr, b"").await, "");
    // Partial headers.
    assert_eq!(
        closed_after(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n").await,
        ""
    );
    // A keep-alive connection left idle after one request.
    let answered = closed_after(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    // A partial body: refused once the body timeout passes, and the connection closed.
    let partial = b"POST /accounts HTTP/1.1\r\nHost: x\r\nx-user-id: u\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"id\":";
    let refused = closed_after(addr, partial).await;
    assert!(refused.starts_with("HTTP/1.1 4"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlives_the_request_timeout_gets_408_and_is_closed() {
    let addr = server(Duration::from_millis(500)).await;
    let partial = b"POST /accounts HTTP/1.1\r\nHost: x\r\nx-user-id: u\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{";
    let answer = closed_after(addr, partial).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_described_by_openapi() {
    let (api, _) = common::start(MemoryStore::new()).await;
    let (status, doc) = api.get("/openapi.json").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/accounts", "post"),
        ("/accounts/{id}/statement", "get"),
        ("/transfers", "post"),
        ("/trace/{correlation_id}", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{path} {method}");
    }
    for schema in [
        "AccountRow",
        "StatementLine",
        "AuditEntry",
        "Error",
        "Currency",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}

/// Runs the binary with `args` and `RUST_LOG`, returning (success, stdout, stderr).
fn ledger(args: &[&str], log: &str) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .env("RUST_LOG", log)
        .env_remove("DATABASE_URL")
        .output()
        .expect("the binary runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        output.status.success(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

#[test]
fn a_refused_database_connection_is_reported_at_once_with_its_cause_and_no_password() {
    let url = "postgres://postgres:s3cret-pw@127.0.0.1:1/postgres";
    let (ok, _, stderr) = ledger(&["--database-url", url, "balances"], "info");
    assert!(!ok);
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    let (_, _, stderr) = ledger(
        &["--database-url", url, "--log-format", "json", "serve"],
        "debug",
    );
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
}

#[test]
fn the_service_logs_request_ids_and_es_core_spans_as_json() {
    use std::io::{BufRead, BufReader};
    let mut serve = common::Running(
        Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args([
                "--memory",
                "--log-format",
                "json",
                "serve",
                "--addr",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "info,es_core=debug")
            .env_remove("DATABASE_URL")
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts"),
    );
    let mut lines = BufReader::new(serve.stderr.take().unwrap()).lines();
    let base = lines
        .find_map(|line| line.ok()?.split("listening on ").nth(1).map(str::to_owned))
        .expect("serve says where it listens");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let request_id = runtime.block_on(async {
        let body = serde_json::json!({ "id": "ada", "owner": "Ada", "currency": "EUR" });
        let response = reqwest::Client::new()
            .post(format!("{base}/accounts"))
            .header("x-user-id", "u")
            .header("x-request-id", "req-42")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned()
    });
    assert_eq!(request_id, "req-42");
    let (mut request_logged, mut execute_logged) = (false, false);
    for line in lines.by_ref() {
        let line = line.unwrap();
        let json: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        let spans = json["spans"].to_string() + &json["span"].to_string();
        request_logged |= spans.contains("req-42");
        execute_logged |= json["span"]["name"] == "execute" && spans.contains("Account/ada");
        if request_logged && execute_logged {
            break;
        }
    }
    serve.kill().unwrap();
    serve.wait().unwrap();
    assert!(request_logged && execute_logged);
}
