//! Every ledger event round-trips through encode and decode (the envelope a store records),
//! and stored version-1 `MoneyDeposited` payloads upcast to the current schema.

use es_core::{EventSet, Metadata, NewEvent, RecordedEvent, StreamId};
use ledger::domain::{
    AccountClosed, AccountEvent, AccountFrozen, AccountOpened, AccountUnfrozen, Currency,
    MoneyDeposited, MoneyWithdrawn, TransferCompensated, TransferCompleted, TransferCreditFailed,
    TransferDebited, TransferEvent, TransferReceived, TransferRefunded, TransferRejected,
    TransferRequested, TransferSent, TransferSettled,
};
use proptest::prelude::*;
use uuid::Uuid;

/// Encodes `event` as a store would receive it, records it, and decodes it back.
fn round_trip<S: EventSet>(event: &S) -> S {
    let new = NewEvent::from_set(event, Metadata::by_user("prop")).expect("encode");
    let recorded = RecordedEvent {
        event_id: new.event_id,
        stream: StreamId::new("Prop", "p-1"),
        version: 1,
        position: 1,
        event_name: new.event_name,
        schema_version: new.schema_version,
        payload: new.payload,
        metadata: new.metadata,
        recorded_at: chrono::Utc::now(),
    };
    recorded.decode::<S>().expect("decode")
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, including quotes, backslashes and control characters.
    proptest::collection::vec(any::<char>(), 0..24).prop_map(|c| c.into_iter().collect())
}

fn currency() -> impl Strategy<Value = Currency> {
    "[A-Z]{3}".prop_map(|c| c.parse().expect("three upper-case letters"))
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn account_event() -> impl Strategy<Value = AccountEvent> {
    prop_oneof![
        (text(), currency(), any::<i64>()).prop_map(|(owner, currency, overdraft_limit)| {
            AccountOpened {
                owner,
                currency,
                overdraft_limit,
            }
            .into()
        }),
        (any::<i64>(), text())
            .prop_map(|(amount, reference)| MoneyDeposited { amount, reference }.into()),
        (any::<i64>(), text())
            .prop_map(|(amount, reference)| MoneyWithdrawn { amount, reference }.into()),
        text().prop_map(|reason| AccountFrozen { reason }.into()),
        text().prop_map(|reason| AccountUnfrozen { reason }.into()),
        text().prop_map(|reason| AccountClosed { reason }.into()),
        (uuid(), text(), any::<i64>()).prop_map(|(transfer_id, to_account, amount)| {
            TransferSent {
                transfer_id,
                to_account,
                amount,
            }
            .into()
        }),
        (uuid(), text(), any::<i64>()).prop_map(|(transfer_id, from_account, amount)| {
            TransferReceived {
                transfer_id,
                from_account,
                amount,
            }
            .into()
        }),
        uuid().prop_map(|transfer_id| TransferSettled { transfer_id }.into()),
        (uuid(), any::<i64>(), text()).prop_map(|(transfer_id, amount, reason)| {
            TransferRefunded {
                transfer_id,
                amount,
                reason,
            }
            .into()
        }),
    ]
}

fn transfer_event() -> impl Strategy<Value = TransferEvent> {
    prop_oneof![
        (text(), text(), any::<i64>(), currency(), text()).prop_map(
            |(from_account, to_account, amount, currency, reference)| TransferRequested {
                from_account,
                to_account,
                amount,
                currency,
                reference,
            }
            .into()
        ),
        text().prop_map(|reason| TransferRejected { reason }.into()),
        Just(TransferDebited {}.into()),
        Just(TransferCompleted {}.into()),
        text().prop_map(|reason| TransferCreditFailed { reason }.into()),
        Just(TransferCompensated {}.into()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_account_event_round_trips(event in account_event()) {
        prop_assert_eq!(round_trip(&event), event);
    }

    #[test]
    fn every_transfer_event_round_trips(event in transfer_event()) {
        prop_assert_eq!(round_trip(&event), event);
    }

    #[test]
    fn version_one_deposits_upcast_to_the_current_schema(amount in any::<i64>()) {
        let recorded = RecordedEvent {
            event_id: Uuid::now_v7(),
            stream: StreamId::new("Account", "a-1"),
            version: 1,
            position: 1,
            event_name: "MoneyDeposited".into(),
            schema_version: 1,
            payload: serde_json::value::to_raw_value(&serde_json::json!({ "amount": amount }))
                .expect("encode v1"),
            metadata: Metadata::new(),
            recorded_at: chrono::Utc::now(),
        };
        let decoded = recorded.decode::<AccountEvent>().expect("decode v1");
        prop_assert_eq!(
            decoded,
            AccountEvent::from(MoneyDeposited { amount, reference: String::new() })
        );
    }
}
