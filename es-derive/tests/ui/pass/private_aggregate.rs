//! `missing_docs` is satisfied by the docs on the generated enum and its variants.
#![deny(missing_docs)]
//! Crate docs.

use es_core::prelude::*;

/// Opened.
#[event]
pub struct Opened;

/// A public aggregate: the generated enum and its variants carry docs.
#[derive(Aggregate, Default)]
#[aggregate(events(Opened))]
pub struct Door {
    /// Open.
    pub open: bool,
}

impl Apply<Opened> for Door {
    fn apply(&mut self, _: &Opened) {
        self.open = true;
    }
}

fn main() {
    let events: Vec<DoorEvent> = es_core::IntoEvents::into_events(DoorEvent::from(Opened));
    assert_eq!(events.len(), 1);
}
