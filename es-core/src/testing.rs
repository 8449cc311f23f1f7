//! Test helpers: [`Scenario`] for aggregates and, behind the `testing` feature, the
//! store-conformance suite every [`EventStore`](crate::EventStore) runs against itself.

use std::fmt::Debug;

use crate::aggregate::Aggregate;
use crate::envelope::NewEvent;
use crate::event::{EventSet, IntoEvents};
use crate::metadata::Metadata;

#[cfg(feature = "testing")]
pub mod conformance;

/// Given events, when a command, then events or an error: a unit test of an aggregate's
/// decisions without a store.
///
/// The given events go through encode and decode first, as they would through a store, so a
/// payload that does not round-trip fails the test.
///
/// ```
/// use es_core::prelude::*;
/// use es_core::testing::Scenario;
///
/// #[event]
/// pub struct Deposited { pub amount: i64 }
/// #[event]
/// pub struct Withdrawn { pub amount: i64 }
///
/// #[derive(Aggregate, Default)]
/// #[aggregate(events(Deposited, Withdrawn))]
/// pub struct Wallet { balance: i64 }
///
/// impl Apply<Deposited> for Wallet { fn apply(&mut self, e: &Deposited) { self.balance += e.amount; } }
/// impl Apply<Withdrawn> for Wallet { fn apply(&mut self, e: &Withdrawn) { self.balance -= e.amount; } }
///
/// impl Wallet {
///     fn withdraw(&self, amount: i64) -> Result<Withdrawn, String> {
///         if amount > self.balance { return Err(format!("only {} available", self.balance)); }
///         Ok(Withdrawn { amount })
///     }
/// }
///
/// Scenario::<Wallet>::given(Deposited { amount: 100 })
///     .when(|w| w.withdraw(30))
///     .then_events(Withdrawn { amount: 30 });
///
/// Scenario::<Wallet>::given(vec![WalletEvent::from(Deposited { amount: 10 })])
///     .when(|w| w.withdraw(30))
///     .then_error("only 10 available".to_string());
/// ```
pub struct Scenario<A: Aggregate> {
    state: A,
}

impl<A: Aggregate> Scenario<A> {
    /// An aggregate with no history.
    pub fn new() -> Self {
        Self {
            state: A::default(),
        }
    }

    /// An aggregate whose history is `events`.
    ///
    /// # Panics
    /// If an event does not survive encode and decode.
    pub fn given(events: impl IntoEvents<A::Event>) -> Self {
        let mut state = A::default();
        for event in events.into_events() {
            state.apply_event(&round_trip(&event));
        }
        Self { state }
    }

    /// Runs a command against the given state.
    pub fn when<R, E>(self, decide: impl FnOnce(&A) -> Result<R, E>) -> Outcome<A, R, E> {
        let result = decide(&self.state);
        Outcome {
            state: self.state,
            result,
        }
    }

    /// The state after the given events.
    pub fn state(&self) -> &A {
        &self.state
    }
}

impl<A: Aggregate> Default for Scenario<A> {
    fn default() -> Self {
        Self::new()
    }
}

/// The result of [`Scenario::when`], to assert on.
pub struct Outcome<A, R, E> {
    state: A,
    result: Result<R, E>,
}

impl<A, R, E> Outcome<A, R, E>
where
    A: Aggregate,
    A::Event: PartialEq,
    R: IntoEvents<A::Event>,
    E: Debug,
{
    /// Asserts that the command succeeded with exactly `expected`, and returns the state after
    /// applying them.
    ///
    /// # Panics
    /// If the command failed or decided other events.
    #[track_caller]
    pub fn then_events(self, expected: impl IntoEvents<A::Event>) -> A {
        let actual = match self.result {
            Ok(decided) => decided.into_events(),
            Err(error) => panic!("expected events, the command failed with {error:?}"),
        };
        let expected = expected.into_events();
        assert_eq!(
            actual, expected,
            "the command decided other events than expected"
        );
        let mut state = self.state;
        for event in &actual {
            state.apply_event(&round_trip(event));
        }
        state
    }

    /// Asserts that the command refused with `expected`.
    ///
    /// # Panics
    /// If the command succeeded or failed with another error.
    #[track_caller]
    pub fn then_error(self, expected: E)
    where
        E: PartialEq,
    {
        match self.result {
            Ok(decided) => panic!(
                "expected error {expected:?}, the command decided {:?}",
                decided.into_events()
            ),
            Err(actual) => assert_eq!(
                actual, expected,
                "the command failed with another error than expected"
            ),
        }
    }

    /// Asserts that the command refused with an error for which `check` holds.
    ///
    /// # Panics
    /// If the command succeeded or `check` returns false.
    #[track_caller]
    pub fn then_error_matches(self, check: impl FnOnce(&E) -> bool) {
        match self.result {
            Ok(decided) => panic!(
                "expected an error, the command decided {:?}",
                decided.into_events()
            ),
            Err(actual) => assert!(
                check(&actual),
                "the error {actual:?} is not the expected one"
            ),
        }
    }
}

/// Encodes and decodes `event` as a store would.
#[track_caller]
fn round_trip<S: EventSet>(event: &S) -> S {
    let encoded = match NewEvent::from_set(event, Metadata::new()) {
        Ok(encoded) => encoded,
        Err(error) => panic!("{} does not encode: {error}", event.name()),
    };
    match S::decode(
        &encoded.event_name,
        encoded.schema_version,
        &encoded.payload,
    ) {
        Ok(decoded) => decoded,
        Err(error) => panic!("{} does not decode after encoding: {error}", event.name()),
    }
}
