//! Every event survives encode and decode through the generated event enum.

mod common;

use common::*;
use es_core::prelude::*;

#[test]
fn every_event_round_trips() {
    for event in every_event() {
        let payload = event.encode().expect("encode");
        let decoded = WalletEvent::decode(event.name(), event.version(), &payload).expect("decode");
        assert_eq!(decoded, event);
    }
}

#[test]
fn names_and_versions_come_from_the_events() {
    assert_eq!(
        WalletEvent::NAMES,
        ["Opened", "Deposited", "wallet.withdrawn", "Closed"]
    );
    let seen: Vec<(&str, u32)> = every_event()
        .iter()
        .map(|e| (e.name(), e.version()))
        .collect();
    assert_eq!(
        seen,
        [
            ("Opened", 1),
            ("Deposited", 3),
            ("wallet.withdrawn", 1),
            ("Closed", 1)
        ]
    );
}

#[test]
fn payloads_are_plain_serde_json() {
    let encoded: Vec<String> = every_event()
        .iter()
        .map(|e| e.encode().expect("encode").get().to_owned())
        .collect();
    assert_eq!(
        encoded,
        [
            r#"{"owner":"Ada"}"#,
            r#"{"amount":100,"currency":"EUR","reference":"salary"}"#,
            r#"[30,"rent"]"#,
            "null",
        ]
    );
}

#[test]
fn events_convert_into_the_enum() {
    let one: Vec<WalletEvent> = es_core::IntoEvents::into_events(Closed);
    let many: Vec<WalletEvent> = es_core::IntoEvents::into_events(vec![Closed, Closed]);
    let itself: Vec<WalletEvent> = es_core::IntoEvents::into_events(WalletEvent::from(Closed));
    assert_eq!(one, [WalletEvent::Closed(Closed)]);
    assert_eq!(many.len(), 2);
    assert_eq!(itself, one);
}
