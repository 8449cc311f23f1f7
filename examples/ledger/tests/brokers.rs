//! Issue 13: the ledger's log relayed to Redis Streams and to NATS JetStream, and the read
//! models built from each broker equal the ones built from the store. Against the local
//! servers (Redis on 6379, NATS on 4222, PostgreSQL at `DATABASE_URL`); each test uses its own
//! key prefix, stream and schema, and fails (never skips) when a server is unreachable.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::conservation::{setup, worker};
use es_core::GlobalLog;
use ledger::broker::Broker;
use ledger::read_models::Scope;

async fn relayed_read_models_equal_the_stores(broker: Broker) {
    let ledger = common::open_postgres(&common::fresh_schema()).await;
    let ids = setup(&ledger).await;
    for seed in 0..3 {
        worker(ledger.clone(), ids.clone(), seed).await.unwrap();
    }
    ledger.wait_idle().await.unwrap();
    let name = format!("ledger-test-{}", uuid::Uuid::now_v7().simple());
    let store = ledger.store().clone();
    let relay = broker
        .relay(store.clone(), Arc::new(store.clone()), &name)
        .unwrap();
    let head = store.head_position().await.unwrap();
    relay
        .wait_for(head, Duration::from_secs(60))
        .await
        .expect("the relay publishes the log");
    let from_broker = broker
        .read_side(&name)
        .await
        .expect("the broker is reachable");
    from_broker
        .wait_for(head, Duration::from_secs(60))
        .await
        .unwrap();
    let relayed = from_broker.read(Scope::All).await.unwrap();
    let stored = ledger.read_models().await.unwrap();
    assert!(!stored.accounts.is_empty() && !stored.transfers.is_empty());
    assert_eq!(relayed.accounts, stored.accounts);
    assert_eq!(relayed.totals, stored.totals);
    assert_eq!(relayed, stored, "statements, transfers and traces too");
    from_broker.shutdown().await.unwrap();
    relay.shutdown().await.unwrap();
    common::drop_schema(&ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_from_redis_equal_the_stores() {
    relayed_read_models_equal_the_stores(Broker::Redis("redis://127.0.0.1:6379".into())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_from_nats_equal_the_stores() {
    relayed_read_models_equal_the_stores(Broker::Nats("nats://127.0.0.1:4222".into())).await;
}

/// `ledger relay --redis` on the default file, until it reports the log published; then
/// `ledger serve --read-from redis://…` answers the same totals as the CLI reads from the file.
#[test]
fn the_relay_command_feeds_serve_read_from() {
    let dir = std::env::temp_dir().join(format!("ledger-relay-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!("ledger-cli-{}", uuid::Uuid::now_v7().simple());
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .args(args)
            .current_dir(&dir)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    run(&["open", "ada", "Ada", "EUR"]);
    run(&["open", "bob", "Bob", "EUR"]);
    run(&["deposit", "ada", "10"]);
    run(&["transfer", "ada", "bob", "4"]);
    let spawn = |args: &[&str]| {
        let mut child = common::Running(
            Command::new(env!("CARGO_BIN_EXE_ledger"))
                .args(args)
                .current_dir(&dir)
                .env_remove("DATABASE_URL")
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        (child, lines)
    };
    let redis = "redis://127.0.0.1:6379";
    let (mut relay, mut lines) = spawn(&["relay", "--redis", redis, "--broker-name", &name]);
    let caught_up = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("(lag 0)") && !line.contains("up to 0 "));
    assert!(caught_up.is_some(), "the relay reports its progress");
    std::thread::spawn(move || lines.for_each(drop));
    let args = [
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--read-from",
        redis,
        "--broker-name",
        &name,
    ];
    let (mut serve, mut lines) = spawn(&args);
    let base = lines
        .by_ref()
        .find_map(|line| line.ok()?.split("listening on ").nth(1).map(str::to_owned))
        .expect("serve says where it listens");
    std::thread::spawn(move || lines.for_each(drop));
    let totals: serde_json::Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::get(format!("{base}/totals"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let from_file: serde_json::Value = serde_json::from_str(&run(&["--json", "totals"])).unwrap();
    assert_eq!(totals, from_file);
    assert_eq!(totals["EUR"]["balances"], 1000);
    for child in [&mut relay, &mut serve] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
