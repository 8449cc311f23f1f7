//! Snapshots of `#[event]` expansions.

use super::{assert_expansion, pretty};

/// Expands the `#[event(...)]` attribute on the item in `source`.
fn expand(source: &str) -> String {
    let mut item: syn::ItemStruct = match syn::parse_str(source) {
        Ok(item) => item,
        Err(err) => panic!("test input does not parse: {err}"),
    };
    let Some(pos) = item.attrs.iter().position(|a| a.path().is_ident("event")) else {
        panic!("test input has no #[event] attribute");
    };
    let attr = item.attrs.remove(pos);
    let args = match attr.meta {
        syn::Meta::List(list) => list.tokens,
        _ => proc_macro2::TokenStream::new(),
    };
    pretty(crate::event::expand(args, quote::quote!(#item)))
}

#[test]
fn minimal_event() {
    let input = "\
#[event]
pub struct AccountOpened {
    pub owner: String,
    pub overdraft_limit: i64,
}";
    assert_expansion!("minimal_event", input, expand(input));
}

#[test]
fn event_with_version_and_previous() {
    let input = "\
/// Money was paid in: schema 2, which added `reference`.
#[event(version = 2, previous = MoneyDepositedV1)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyDeposited {
    pub amount: i64,
    pub reference: String,
}";
    assert_expansion!("event_with_version_and_previous", input, expand(input));
}

#[test]
fn three_step_chain() {
    let inputs = [
        "#[event(name = \"Deposited\", version = 1)]\npub struct DepositedV1(pub i64);",
        "#[event(name = \"Deposited\", version = 2, previous = DepositedV1)]\n\
         pub struct DepositedV2 { pub amount: i64, pub currency: String }",
        "#[event(version = 3, previous = DepositedV2)]\n\
         pub struct Deposited { pub amount: i64, pub currency: String, pub reference: String }",
    ];
    let input = inputs.join("\n\n");
    let output: Vec<String> = inputs.iter().map(|i| expand(i)).collect();
    assert_expansion!("three_step_chain", input, output.join("\n"));
}

#[test]
fn unit_event_with_custom_crate() {
    let input = "#[event(crate = ::my_runtime::es)]\npub struct Closed;";
    assert_expansion!("unit_event_with_custom_crate", input, expand(input));
}

#[test]
fn invalid_event_emits_errors_and_stub() {
    let input = "#[event(version = 0, colour = \"red\")]\npub struct Bad { pub x: u8 }";
    assert_expansion!("invalid_event_emits_errors_and_stub", input, expand(input));
}
