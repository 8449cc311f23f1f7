//! Every `#[aggregate]` key, events by module path, and a renamed runtime path.
#![deny(warnings)]

use es_core::prelude::*;

mod runtime {
    pub use es_core as es;
}

mod events {
    use es_core::prelude::*;

    /// Opened.
    #[event]
    pub struct Opened {
        /// By whom.
        pub by: String,
    }

    /// Closed.
    #[event]
    pub struct Closed;
}

/// A door.
#[derive(Aggregate, Default, Debug, Serialize, Deserialize)]
#[aggregate(
    name = "door",
    events(events::Opened, events::Closed),
    snapshot_every = 10,
    state_version = 3,
    event_enum = DoorChange,
    crate = crate::runtime::es,
)]
pub struct Door {
    open: bool,
}

impl Apply<events::Opened> for Door {
    fn apply(&mut self, _: &events::Opened) {
        self.open = true;
    }
}

impl Apply<events::Closed> for Door {
    fn apply(&mut self, _: &events::Closed) {
        self.open = false;
    }
}

fn main() {
    assert_eq!(<Door as Aggregate>::TYPE, "door");
    assert_eq!(Door::SNAPSHOT_EVERY, Some(10));
    assert_eq!(Door::STATE_VERSION, 3);
    let mut door = Door::default();
    Aggregate::apply_event(&mut door, &DoorChange::from(events::Opened { by: "me".into() }));
    assert!(door.open);
    assert_eq!(DoorChange::NAMES, ["Opened", "Closed"]);
}
