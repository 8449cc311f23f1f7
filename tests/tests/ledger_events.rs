//! Every ledger event round-trips through a store (memory and PostgreSQL): stored and read back
//! it decodes to the same value, and an event holding a NUL character (which PostgreSQL cannot
//! store) is refused by both with `Error::Invalid`, writing nothing. Stored version-1
//! `MoneyDeposited` payloads upcast to the current schema.

mod common;

use std::fmt::Debug;

use es_core::{
    Error, EventSet, EventStore, ExpectedVersion, MemoryStore, Metadata, NewEvent, RecordedEvent,
    StreamId, StreamQuery,
};
use ledger::domain::{
    AccountClosed, AccountEvent, AccountFrozen, AccountOpened, AccountUnfrozen, Currency,
    MoneyDeposited, MoneyWithdrawn, TransferCompensated, TransferCompleted, TransferCreditFailed,
    TransferDebited, TransferEvent, TransferReceived, TransferRefunded, TransferRejected,
    TransferRequested, TransferSent, TransferSettled,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;
use tokio::runtime::Runtime;
use uuid::Uuid;

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(fields) => fields
            .iter()
            .any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// Appends `event` to a fresh stream of `store` and reads it back: the same value, or, for an
/// event with a NUL character, `Invalid` and nothing stored.
async fn through_the_store<S, E>(store: &S, event: &E) -> Result<(), TestCaseError>
where
    S: EventStore,
    E: EventSet + PartialEq,
{
    let new = NewEvent::from_set(event, Metadata::by_user("prop")).expect("encode");
    let payload: Value = serde_json::from_str(new.payload.get()).expect("the payload is JSON");
    let nul = contains_nul(&payload);
    let stream = StreamId::new("Prop", format!("p-{}", Uuid::now_v7()));
    match store
        .append(&stream, ExpectedVersion::NoStream, vec![new.clone()])
        .await
    {
        Err(Error::Invalid(_)) if nul => {
            let stored = store.read_event(new.event_id).await.map_err(fail)?;
            prop_assert!(stored.is_none(), "a refused event is stored");
        }
        Ok(recorded) if !nul => {
            prop_assert_eq!(&recorded[0].decode::<E>().map_err(fail)?, event);
            let stored = store
                .read_stream(&stream, &StreamQuery::all())
                .await
                .map_err(fail)?;
            prop_assert_eq!(stored.len(), 1);
            prop_assert_eq!(&stored[0].decode::<E>().map_err(fail)?, event);
        }
        other => {
            return Err(TestCaseError::fail(format!(
                "{} with NUL: {nul}: {other:?}",
                event.name()
            )));
        }
    }
    Ok(())
}

fn fail(error: impl Debug) -> TestCaseError {
    TestCaseError::fail(format!("{error:?}"))
}

/// Runs both event strategies `cases` times through `store`.
fn run_through<S: EventStore>(rt: &Runtime, store: &S, cases: u32) {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let accounts = TestRunner::new(config.clone()).run(&account_event(), |event| {
        rt.block_on(through_the_store(store, &event))
    });
    if let Err(error) = accounts {
        panic!("account events: {error}");
    }
    let transfers = TestRunner::new(config).run(&transfer_event(), |event| {
        rt.block_on(through_the_store(store, &event))
    });
    if let Err(error) = transfers {
        panic!("transfer events: {error}");
    }
}

#[test]
fn ledger_events_round_trip_through_the_memory_store() {
    let rt = Runtime::new().expect("a tokio runtime");
    run_through(&rt, &MemoryStore::new(), 512);
}

#[test]
fn ledger_events_round_trip_through_postgres() {
    let rt = Runtime::new().expect("a tokio runtime");
    let db = rt.block_on(common::TestDb::create());
    let store = rt.block_on(db.store(es_postgres::StoreOptions::new()));
    run_through(&rt, &store, 128);
    rt.block_on(async {
        store.pool().close().await;
        db.drop_now().await;
    });
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, with NUL, quotes, backslashes and other control characters made common.
    let character = prop_oneof![
        8 => any::<char>(),
        1 => Just('\0'),
        2 => prop::sample::select(vec!['"', '\\', '\u{1}', '\u{1f}', '\u{7f}', '\u{2028}', '\u{FEFF}', '🦀']),
    ];
    proptest::collection::vec(character, 0..24).prop_map(|c| c.into_iter().collect())
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
