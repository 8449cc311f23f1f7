//! Aggregates: state rebuilt by applying events, and the snapshot policy that caches it.

use serde_json::value::RawValue;

use crate::event::EventSet;

/// An event-sourced aggregate: its state is the fold of its events.
///
/// Implemented by `#[derive(Aggregate)]`, which also generates the event enum.
/// `Default` is the state before the first event.
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The stable type name; together with an id it names a stream.
    const TYPE: &'static str;

    /// Take a snapshot after every this many events; `None` never snapshots.
    const SNAPSHOT_EVERY: Option<u64> = None;

    /// Version of the state's shape. A stored snapshot with another state version is
    /// ignored and the aggregate is rebuilt from its events.
    const STATE_VERSION: u32 = 1;

    /// The enum of every event this aggregate owns.
    type Event: EventSet;

    /// Folds one event into the state by dispatching to the matching [`Apply`] impl.
    /// (Named apart from [`Apply::apply`] so that calls are unambiguous with both in scope.)
    fn apply_event(&mut self, event: &Self::Event);

    /// Serialises the state for a snapshot; `None` when the aggregate takes no snapshots.
    fn encode_state(&self) -> Option<Result<Box<RawValue>, serde_json::Error>> {
        None
    }

    /// Restores the state from a snapshot written with [`Aggregate::STATE_VERSION`].
    fn decode_state(state: &RawValue) -> Option<Result<Self, serde_json::Error>> {
        let _ = state;
        None
    }
}

/// How an aggregate changes when one event happens. One impl per event it owns.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not apply `{E}`",
    label = "`{E}` is listed in `events(...)` but has no `Apply` impl",
    note = "add `impl Apply<{E}> for {Self} {{ fn apply(&mut self, event: &{E}) {{ ... }} }}`"
)]
pub trait Apply<E> {
    /// Folds `event` into the state. It records a fact that already happened: never refuse it.
    fn apply(&mut self, event: &E);
}
