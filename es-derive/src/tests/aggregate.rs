//! Snapshots of `#[derive(Aggregate)]` expansions.

use super::{assert_expansion, pretty};

fn expand(source: &str) -> String {
    let tokens: proc_macro2::TokenStream = match source.parse() {
        Ok(tokens) => tokens,
        Err(err) => panic!("test input does not tokenize: {err}"),
    };
    pretty(crate::aggregate::expand(tokens))
}

#[test]
fn aggregate_with_four_events_and_snapshots() {
    let input = r#"#[derive(Aggregate, Default, Serialize, Deserialize)]
#[aggregate(
    name = "BankAccount",
    events(AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed),
    snapshot_every = 100,
    state_version = 2
)]
pub struct BankAccount {
    balance: i64,
    open: bool,
}"#;
    assert_expansion!(
        "aggregate_with_four_events_and_snapshots",
        input,
        expand(input)
    );
}

#[test]
fn aggregate_with_custom_crate_and_enum_name() {
    let input = r#"#[derive(Aggregate, Default)]
#[aggregate(events(domain::Opened, Closed), event_enum = DoorChange, crate = ::my_runtime::es)]
pub(crate) struct Door {
    open: bool,
}"#;
    assert_expansion!(
        "aggregate_with_custom_crate_and_enum_name",
        input,
        expand(input)
    );
}

#[test]
fn invalid_aggregate_emits_errors_and_stub() {
    let input = r#"#[derive(Aggregate, Default)]
#[aggregate(events(Opened, Opened), snapshot_every = 0, colour = "red")]
pub struct Door {
    open: bool,
}"#;
    assert_expansion!(
        "invalid_aggregate_emits_errors_and_stub",
        input,
        expand(input)
    );
}
