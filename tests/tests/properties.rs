//! Property tests over the macros and the repository together, on the memory store and on
//! PostgreSQL: for any command sequence, what the repository commits and refuses, what it loads
//! (from snapshots and as of any version) equals a model of the wallet's rules written here,
//! independently of the domain type; events round-trip; upcaster chains equal hand-built
//! current versions.

mod common;

use std::fmt::Debug;

use es_core::NewEvent;
use es_core::prelude::*;
use integration_tests::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use uuid::Uuid;

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

/// The wallet's rules, restated without the domain type: what each command must store (event
/// name, schema version, payload) or why it must be refused, and the state that results.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    open: bool,
    balance: i64,
    applied: u64,
    references: Vec<String>,
}

/// An event as the model expects it stored.
type Stored = (&'static str, u32, Value);

impl Model {
    fn step(&mut self, command: &Command) -> Result<Stored, WalletError> {
        match command {
            Command::Open if self.open => Err(WalletError::AlreadyOpen),
            Command::Open => {
                self.open = true;
                self.applied += 1;
                Ok(("Opened", 1, json!({ "owner": "prop" })))
            }
            _ if !self.open => Err(WalletError::NotOpen),
            Command::Deposit(amount, reference) => {
                self.balance += amount;
                self.references.push(reference.clone());
                self.applied += 1;
                Ok((
                    "Deposited",
                    3,
                    json!({ "amount": amount, "currency": "EUR", "reference": reference }),
                ))
            }
            Command::Withdraw(amount) if *amount > self.balance => {
                Err(WalletError::InsufficientFunds)
            }
            Command::Withdraw(amount) => {
                self.balance -= amount;
                self.applied += 1;
                Ok(("Withdrawn", 1, json!({ "amount": amount })))
            }
            Command::Close if self.balance != 0 => Err(WalletError::NotEmpty),
            Command::Close => {
                self.open = false;
                self.applied += 1;
                Ok(("Closed", 1, Value::Null))
            }
        }
    }

    fn check(&self, wallet: &Wallet, what: &str) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            (
                wallet.open,
                wallet.balance,
                wallet.applied,
                &wallet.references
            ),
            (self.open, self.balance, self.applied, &self.references),
            "{}",
            what
        );
        Ok(())
    }
}

/// Runs `commands` on a fresh wallet in `store` and compares everything with the model.
async fn commands_match_the_model<S>(store: &S, commands: &[Command]) -> Result<(), TestCaseError>
where
    S: EventStore + Clone + 'static,
{
    let id = format!("w-{}", Uuid::now_v7());
    let wallets = Repository::<Wallet, _>::new(store.clone());
    let mut model = Model::default();
    let mut states = vec![model.clone()];
    for command in commands {
        let want = model.step(command);
        let got = wallets
            .execute(&id, Metadata::by_user("prop"), |w| w.handle(command))
            .await;
        match (got, want) {
            (Ok(committed), Ok((name, schema_version, payload))) => {
                prop_assert_eq!(committed.events.len(), 1);
                let e = &committed.events[0];
                prop_assert_eq!(
                    (e.event_name.as_str(), e.schema_version, e.version),
                    (name, schema_version, states.len() as u64)
                );
                let stored: Value = serde_json::from_str(e.payload.get())
                    .map_err(|err| TestCaseError::fail(err.to_string()))?;
                prop_assert_eq!(stored, payload);
                states.push(model.clone());
            }
            (Err(ExecuteError::Rejected(got)), Err(want)) => prop_assert_eq!(got, want),
            (got, want) => {
                return Err(TestCaseError::fail(format!(
                    "{command:?}: the repository gave {got:?}, the model {want:?}"
                )));
            }
        }
    }
    let history = wallets.history(&id).await.map_err(fail)?;
    prop_assert_eq!(history.len() + 1, states.len());
    for (i, e) in history.iter().enumerate() {
        prop_assert_eq!(e.version, i as u64 + 1);
    }
    // A repository without this one's cache: the load goes through the store's snapshot.
    let reader = Repository::<Wallet, _>::new(store.clone());
    let loaded = reader.load(&id).await.map_err(fail)?;
    prop_assert_eq!(loaded.version, history.len() as u64);
    model.check(&loaded.state, "loaded (snapshot + newer events)")?;
    if history.len() >= 3 {
        let snapshot = store
            .load_snapshot(&StreamId::of::<Wallet>(id.as_str()))
            .await
            .map_err(fail)?;
        prop_assert_eq!(
            snapshot.map(|s| s.version),
            Some(history.len() as u64 / 3 * 3),
            "a snapshot every 3 events"
        );
    }
    for (version, state) in states.iter().enumerate() {
        let as_of = reader
            .load_as_of(&id, AsOf::Version(version as u64))
            .await
            .map_err(fail)?;
        prop_assert_eq!(as_of.version, version as u64);
        state.check(&as_of.state, &format!("as of version {version}"))?;
    }
    Ok(())
}

fn fail(error: impl Debug) -> TestCaseError {
    TestCaseError::fail(format!("{error:?}"))
}

/// Runs the model property `cases` times on `store`.
fn run_model_property<S: EventStore + Clone + 'static>(rt: &Runtime, store: &S, cases: u32) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&prop::collection::vec(command(), 1..40), |commands| {
        rt.block_on(commands_match_the_model(store, &commands))
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

#[test]
fn commands_match_an_independent_model_on_the_memory_store() {
    let rt = Runtime::new().expect("a tokio runtime");
    run_model_property(&rt, &MemoryStore::new(), 64);
}

#[test]
fn commands_match_an_independent_model_on_postgres() {
    let rt = Runtime::new().expect("a tokio runtime");
    let db = rt.block_on(common::TestDb::create());
    let store = rt.block_on(db.store(es_postgres::StoreOptions::new()));
    run_model_property(&rt, &store, 24);
    rt.block_on(async {
        store.pool().close().await;
        db.drop_now().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

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
