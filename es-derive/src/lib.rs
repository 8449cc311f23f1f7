//! # es-derive
//!
//! The procedural macros of [`es_core`](https://docs.rs/es-core): `#[event]` makes a plain
//! struct a named, versioned, stored event, and `#[derive(Aggregate)]` turns a plain struct
//! into an event-sourced aggregate with a generated enum of its events.
//!
//! Use them through `es_core` (its default `derive` feature re-exports them), not directly:
//! generated code refers to `::es_core`, which `crate = path` overrides.
//!
//! Each macro parses its input into a typed model (`internals::ast`), checks it while
//! collecting every error with its span (`internals::check`), and only then generates code.
//! Mistakes the macro cannot see, such as a missing `Apply` impl or an upcaster chain whose
//! names or versions do not line up, are turned into readable compile errors by
//! `#[diagnostic::on_unimplemented]` on the runtime traits and by `const` assertions in the
//! expansion.

use proc_macro::TokenStream;

mod aggregate;
mod event;
mod internals;

#[cfg(test)]
mod tests;

/// Makes a struct a stored, named, versioned event: implements `es_core::Event` and derives
/// serde's `Serialize`/`Deserialize` through `es_core` (no serde dependency needed), plus
/// `Debug`, `Clone` and `PartialEq` unless the struct already derives them.
///
/// Keys, all optional:
/// - `name = "..."`: the stored event name; defaults to the type name.
/// - `version = N`: the schema version, at least 1; defaults to 1.
/// - `previous = Type`: the type holding this event's schema one version lower. Older stored
///   payloads decode as that type (recursively, so chains have any length) and convert with
///   `From`. A `const` assertion checks that it has the same name and a version one lower.
/// - `crate = path`: where `es_core` is, if it was renamed; defaults to `::es_core`.
///
/// ```
/// use es_core::prelude::*;
///
/// #[event(name = "Deposited", version = 1)]
/// pub struct DepositedV1 { pub amount: i64 }
///
/// #[event(version = 2, previous = DepositedV1)]
/// pub struct Deposited { pub amount: i64, pub reference: String }
///
/// impl From<DepositedV1> for Deposited {
///     fn from(old: DepositedV1) -> Self { Self { amount: old.amount, reference: String::new() } }
/// }
///
/// let stored = es_core::__private::serde_json::value::RawValue::from_string(r#"{"amount":5}"#.into()).unwrap();
/// let upcast = Deposited::decode_versioned(1, &stored).unwrap();
/// assert_eq!(upcast, Deposited { amount: 5, reference: String::new() });
/// assert_eq!((Deposited::NAME, Deposited::VERSION), ("Deposited", 2));
/// ```
#[proc_macro_attribute]
pub fn event(args: TokenStream, item: TokenStream) -> TokenStream {
    event::expand(args.into(), item.into()).into()
}

/// Makes a struct an event-sourced aggregate: generates the enum of its events, the
/// `es_core::EventSet` impl of that enum and the `es_core::Aggregate` impl, whose `apply_event`
/// dispatches each event to the struct's `Apply<E>` impl.
///
/// `#[aggregate(...)]` keys:
/// - `events(A, B, ...)` (required): the `#[event]` types the aggregate owns. Each becomes a
///   variant of the enum, named after the type, with `From<A>` for the enum.
/// - `name = "..."`: the stream type name; defaults to the type name.
/// - `event_enum = Name`: the enum's name; defaults to `<Type>Event`.
/// - `snapshot_every = N`: take a snapshot every `N` events (the struct must then derive
///   `Serialize` and `Deserialize`); no snapshots by default.
/// - `state_version = N`: the version of the state's shape (default 1); snapshots of
///   another version are ignored and the aggregate is replayed.
/// - `crate = path`: where `es_core` is, if it was renamed; defaults to `::es_core`.
///
/// The struct also needs `Default` (the state before the first event).
///
/// ```
/// use es_core::prelude::*;
///
/// #[event]
/// pub struct Opened { pub owner: String }
/// #[event]
/// pub struct Deposited { pub amount: i64 }
///
/// #[derive(Aggregate, Default, Serialize, Deserialize)]
/// #[aggregate(name = "Account", events(Opened, Deposited), snapshot_every = 100)]
/// pub struct Account { open: bool, balance: i64 }
///
/// impl Apply<Opened> for Account {
///     fn apply(&mut self, _: &Opened) { self.open = true; }
/// }
/// impl Apply<Deposited> for Account {
///     fn apply(&mut self, e: &Deposited) { self.balance += e.amount; }
/// }
///
/// let mut account = Account::default();
/// for event in [AccountEvent::from(Opened { owner: "Ada".into() }), Deposited { amount: 7 }.into()] {
///     Aggregate::apply_event(&mut account, &event);
/// }
/// assert!(account.open);
/// assert_eq!(account.balance, 7);
/// assert_eq!(AccountEvent::NAMES, ["Opened", "Deposited"]);
/// ```
#[proc_macro_derive(Aggregate, attributes(aggregate))]
pub fn derive_aggregate(input: TokenStream) -> TokenStream {
    aggregate::expand(input.into()).into()
}
