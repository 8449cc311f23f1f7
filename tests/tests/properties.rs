//! Property tests over the macros and the repository together: snapshots never change what a
//! load returns, events round-trip, upcaster chains equal hand-built current versions.

use es_core::NewEvent;
use es_core::prelude::*;
use futures::executor::block_on;
use integration_tests::*;
use proptest::prelude::*;
use serde_json::json;

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        1 => Just(Command::Open),
        4 => (1i64..1_000, "[a-z]{0,6}").prop_map(|(a, r)| Command::Deposit(a, r)),
        3 => (1i64..1_500).prop_map(Command::Withdraw),
        1 => Just(Command::Close),
    ]
}

fn wallet_event() -> impl Strategy<Value = WalletEvent> {
    prop_oneof![
        "\\PC{0,12}".prop_map(|owner| WalletEvent::from(Opened { owner })),
        (any::<i64>(), "[A-Z]{3}", "\\PC{0,20}").prop_map(|(amount, currency, reference)| {
            Deposited {
                amount,
                currency,
                reference,
            }
            .into()
        }),
        any::<i64>().prop_map(|amount| Withdrawn { amount }.into()),
        Just(Closed.into()),
    ]
}

fn replay(events: &[RecordedEvent]) -> Wallet {
    let mut wallet = Wallet::default();
    for recorded in events {
        wallet.apply_event(
            &recorded
                .decode::<WalletEvent>()
                .expect("stored events decode"),
        );
    }
    wallet
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For any command sequence, the repository's load (snapshot + newer events) equals a full
    /// replay and the state the commands saw; every as-of load equals a replay of the prefix.
    #[test]
    fn snapshot_loads_equal_full_replay(commands in prop::collection::vec(command(), 1..40)) {
        block_on(async {
            let store = MemoryStore::new();
            let wallets = Repository::<Wallet, _>::new(store.clone());
            let mut model = Wallet::default();
            for command in &commands {
                match wallets.execute("w", Metadata::by_user("prop"), |w| w.handle(command)).await {
                    Ok(committed) => {
                        for e in &committed.events {
                            model.apply_event(&e.decode::<WalletEvent>().expect("decode"));
                        }
                    }
                    Err(ExecuteError::Rejected(expected)) => prop_assert_eq!(Some(expected), model.handle(command).err()),
                    Err(ExecuteError::Store(error)) => prop_assert!(false, "store error {error}"),
                }
            }
            let history = wallets.history("w").await.expect("history");
            let loaded = wallets.load("w").await.expect("load");
            prop_assert_eq!(&loaded.state, &replay(&history));
            prop_assert_eq!(&loaded.state, &model);
            prop_assert_eq!(loaded.version, history.len() as u64);
            if history.len() >= 3 {
                let snapshot = store.load_snapshot(&StreamId::of::<Wallet>("w")).await.expect("snapshot read");
                prop_assert!(snapshot.is_some(), "a snapshot is taken every 3 events");
            }
            for version in 0..=history.len() {
                let as_of = wallets.load_as_of("w", AsOf::Version(version as u64)).await.expect("as of");
                prop_assert_eq!(&as_of.state, &replay(&history[..version]));
            }
            Ok(())
        })?;
    }

    /// Every event survives encode and decode unchanged.
    #[test]
    fn events_round_trip(event in wallet_event()) {
        let encoded = NewEvent::from_set(&event, Metadata::new()).expect("encode");
        let decoded = WalletEvent::decode(&encoded.event_name, encoded.schema_version, &encoded.payload).expect("decode");
        prop_assert_eq!(decoded, event);
    }

    /// A stored v1 or v2 payload climbs the chain to the same value a hand-built v3 has.
    #[test]
    fn upcast_chains_equal_hand_built_current_versions(amount in any::<i64>(), currency in "[A-Z]{3}") {
        let v1 = serde_json::value::to_raw_value(&json!({ "amount": amount })).expect("json");
        let v2 = serde_json::value::to_raw_value(&json!({ "amount": amount, "currency": currency })).expect("json");
        prop_assert_eq!(
            WalletEvent::decode("Deposited", 1, &v1).expect("v1 decodes"),
            WalletEvent::from(Deposited { amount, currency: "EUR".into(), reference: String::new() })
        );
        prop_assert_eq!(
            WalletEvent::decode("Deposited", 2, &v2).expect("v2 decodes"),
            WalletEvent::from(Deposited { amount, currency: currency.clone(), reference: String::new() })
        );
    }
}
