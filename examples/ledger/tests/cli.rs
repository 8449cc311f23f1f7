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
    assert!(output.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
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
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("NOT CONSERVED") && !stdout.contains("unexpected"), "{stdout}");
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
