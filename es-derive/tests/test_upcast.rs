//! Older payloads climb the `previous` chain; unknown names and newer versions are typed errors.

mod common;

use common::*;
use es_core::DecodeError;
use es_core::prelude::*;

#[test]
fn v1_payload_is_read_back_as_v3() {
    let decoded = WalletEvent::decode("Deposited", 1, &raw("42")).expect("decode v1");
    assert_eq!(
        decoded,
        WalletEvent::Deposited(Deposited {
            amount: 42,
            currency: "EUR".into(),
            reference: "(none)".into(),
        })
    );
}

#[test]
fn v2_payload_is_read_back_as_v3() {
    let payload = raw(r#"{"amount":7,"currency":"CHF"}"#);
    let decoded = Deposited::decode_versioned(2, &payload).expect("decode v2");
    assert_eq!(
        decoded,
        Deposited {
            amount: 7,
            currency: "CHF".into(),
            reference: "(none)".into(),
        }
    );
}

#[test]
fn each_link_of_the_chain_is_an_event_of_the_same_name() {
    assert_eq!(
        [DepositedV1::NAME, DepositedV2::NAME, Deposited::NAME],
        ["Deposited"; 3]
    );
    assert_eq!(
        [
            DepositedV1::VERSION,
            DepositedV2::VERSION,
            Deposited::VERSION
        ],
        [1, 2, 3]
    );
}

#[test]
fn a_version_newer_than_the_code_is_a_typed_error() {
    let err = WalletEvent::decode("Deposited", 4, &raw("{}")).expect_err("v4 is unknown");
    assert!(
        matches!(
            &err,
            DecodeError::VersionTooNew { event, stored: 4, supported: 3 } if event == "Deposited"
        ),
        "{err:?}"
    );
}

#[test]
fn a_version_older_than_the_chain_is_a_typed_error() {
    let err = WalletEvent::decode("Opened", 0, &raw("{}")).expect_err("v0 does not exist");
    assert!(
        matches!(
            err,
            DecodeError::VersionTooOld {
                event: "Opened",
                stored: 0,
                oldest: 1
            }
        ),
        "{err:?}"
    );
}

#[test]
fn an_unknown_event_name_is_a_typed_error() {
    let err = WalletEvent::decode("Renamed", 1, &raw("{}")).expect_err("unknown name");
    match err {
        DecodeError::UnknownEvent { name, known } => {
            assert_eq!(name, "Renamed");
            assert_eq!(known, WalletEvent::NAMES);
        }
        other => panic!("expected UnknownEvent, got {other:?}"),
    }
}

#[test]
fn a_payload_that_does_not_match_its_schema_is_a_typed_error() {
    let err = WalletEvent::decode("Deposited", 1, &raw(r#""ten""#)).expect_err("bad payload");
    assert!(
        matches!(
            err,
            DecodeError::Payload {
                event: "Deposited",
                version: 1,
                ..
            }
        ),
        "{err:?}"
    );
}
