//! The README's command, `ledger demo`, and the CLI's argument parsing.

use std::process::Command;

use clap::Parser;
use ledger::cli::{Cli, Command as Sub};

#[test]
fn the_demo_binary_runs_in_memory_and_reports_everything() {
    let output = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["--memory", "demo"])
        .env_remove("DATABASE_URL")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for expected in [
        "== 1. Opening accounts",
        "completed",
        "compensated",
        "rejected",
        "insufficient funds",
        "refused: account is frozen",
        "(schema v1) -> deposit of 42.00 EUR",
        "== 7. Time travel",
        "== 9. Audit trail of alice",
        "compliance-officer",
        "refund of 200.00 EUR (carol: account is frozen)",
        "EUR: paid in net",
        "conserved",
        "rebuilt read models equal the live ones",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("NOT CONSERVED") && !stdout.contains("unexpected"),
        "{stdout}"
    );
}

#[test]
fn a_database_url_is_taken_from_the_flag_or_the_environment() {
    let cli =
        Cli::try_parse_from(["ledger", "--database-url", "postgres://x", "balances"]).unwrap();
    assert_eq!(cli.storage.database_url.as_deref(), Some("postgres://x"));
    assert!(matches!(cli.command, Sub::Balances));
    let cli = Cli::try_parse_from([
        "ledger",
        "transfer",
        "a",
        "b",
        "12.50",
        "--reference",
        "rent",
        "--user",
        "u-1",
    ])
    .unwrap();
    assert_eq!(cli.user, "u-1");
    assert!(matches!(cli.command, Sub::Transfer { ref amount, .. } if amount == "12.50"));
    assert!(
        Cli::try_parse_from([
            "ledger",
            "balance",
            "a",
            "--version",
            "1",
            "--at",
            "2020-01-01T00:00:00Z"
        ])
        .is_err()
    );
    assert!(Cli::try_parse_from(["ledger", "frobnicate"]).is_err());
}

#[test]
fn single_commands_in_memory_keep_nothing_and_say_so() {
    let output = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["--memory", "deposit", "alice", "10.00"])
        .env_remove("DATABASE_URL")
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("account alice not found"), "{stderr}");
}

/// Runs the binary in `dir` on its default store (the file `./ledger.db`), without a database.
fn ledger_in(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("LEDGER_DATA")
        .output()
        .expect("the binary runs");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (
        output.status.success(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// Issue 14: every command keeps its data in `./ledger.db` between runs, with no server;
/// the demo runs there too, again and again (suffixed ids after the first run).
#[test]
fn commands_keep_their_data_in_the_default_file() {
    let dir = std::env::temp_dir().join(format!("ledger-cli-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    for args in [
        &["open", "alice", "Alice Martin", "EUR"][..],
        &["deposit", "alice", "100"],
        &["open", "bob", "Bob", "EUR"],
        &["transfer", "alice", "bob", "20", "--key", "rent-1"],
        &["transfer", "alice", "bob", "20", "--key", "rent-1"],
    ] {
        let (ok, stdout, stderr) = ledger_in(&dir, args);
        assert!(ok, "{args:?}: {stdout}{stderr}");
    }
    let (_, stdout, _) = ledger_in(&dir, &["balance", "alice"]);
    assert!(
        stdout.contains("alice: 80.00 EUR"),
        "the retried transfer ran once: {stdout}"
    );
    let (_, stdout, _) = ledger_in(&dir, &["--json", "history", "bob"]);
    let history: serde_json::Value = serde_json::from_str(&stdout).expect("history as JSON");
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");
    for run in 0..2 {
        let (ok, stdout, stderr) = ledger_in(&dir, &["demo"]);
        assert!(ok, "demo run {run}: {stdout}{stderr}");
        assert!(
            stdout.contains("rebuilt read models equal the live ones"),
            "{stdout}"
        );
    }
    let (_, stdout, _) = ledger_in(&dir, &["--json", "balances"]);
    let rows: serde_json::Value = serde_json::from_str(&stdout).expect("balances as JSON");
    assert_eq!(
        rows.as_array().map(Vec::len),
        Some(12),
        "alice, bob and two demos: {rows}"
    );
    let (ok, stdout, _) = ledger_in(&dir, &["status"]);
    assert!(
        ok && stdout.contains("ledger-views") && !stdout.contains("parked at"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `ledger --database-url … demo` runs on PostgreSQL in a fresh schema of its own, named on
/// stderr. Fails (never skips) when the server is unreachable.
#[test]
fn the_demo_binary_runs_on_postgres_in_a_fresh_schema() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let output = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["--database-url", &url, "demo"])
        .env_remove("DATABASE_URL")
        .env_remove("LEDGER_SCHEMA")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "PostgreSQL at {url} must be reachable; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let schema = stderr
        .split_whitespace()
        .find(|w| w.starts_with("ledger_demo_"))
        .map(|w| w.trim_end_matches(['.', ')']).to_owned())
        .expect("stderr names the schema");
    for expected in [
        "compensated",
        "-> conserved",
        "rebuilt read models equal the live ones",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // The read models are in that schema's tables.
    let balances = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args([
            "--database-url",
            &url,
            "--schema",
            &schema,
            "--json",
            "balances",
        ])
        .output()
        .expect("the binary runs");
    let rows: serde_json::Value =
        serde_json::from_slice(&balances.stdout).expect("balances as JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(5), "{rows}");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let sql = format!("DROP SCHEMA \"{schema}\" CASCADE");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
    });
}

/// Issue 14: the CLI and `serve` on one file at once. Writes from either are seen by the
/// other, and the transfer a CLI process requests completes, whoever runs the partition.
#[test]
fn the_cli_and_serve_share_one_file() {
    use std::io::{BufRead, BufReader};
    let dir = std::env::temp_dir().join(format!("ledger-serve-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    for args in [
        &["open", "ada", "Ada", "EUR"][..],
        &["deposit", "ada", "10"],
        &["open", "bob", "Bob", "EUR"],
    ] {
        assert!(ledger_in(&dir, args).0, "{args:?}");
    }
    let mut serve = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .current_dir(&dir)
        .env_remove("DATABASE_URL")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve starts");
    let mut lines = BufReader::new(serve.stderr.take().unwrap()).lines();
    let base = lines
        .find_map(|line| line.ok()?.split("listening on ").nth(1).map(str::to_owned))
        .expect("serve says where it listens");
    std::thread::spawn(move || lines.for_each(drop)); // keep its stderr flowing
    let (ok, stdout, stderr) = ledger_in(&dir, &["transfer", "ada", "bob", "4.00"]);
    assert!(ok && stdout.contains("completed"), "{stdout}{stderr}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bob: serde_json::Value = runtime.block_on(async {
        reqwest::get(format!("{base}/accounts/bob"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(bob["balance"], 400, "{bob}");
    let created = runtime.block_on(async {
        let body =
            serde_json::json!({ "from": "ada", "to": "bob", "amount": 100, "currency": "EUR" });
        let client = reqwest::Client::new();
        let request = client
            .post(format!("{base}/transfers"))
            .header("x-user-id", "u")
            .json(&body);
        request
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    assert_eq!(created["status"], "completed", "{created}");
    let (_, stdout, _) = ledger_in(&dir, &["balance", "ada"]);
    assert!(stdout.contains("ada: 5.00 EUR"), "{stdout}");
    serve.kill().unwrap();
    serve.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
