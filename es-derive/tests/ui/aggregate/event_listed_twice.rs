use es_core::prelude::*;

#[event]
pub struct Opened;

#[event]
pub struct Closed;

#[derive(Aggregate, Default)]
#[aggregate(events(Opened, Closed, Opened))]
pub struct Door {
    open: bool,
}

impl Apply<Opened> for Door {
    fn apply(&mut self, _: &Opened) {
        self.open = true;
    }
}

impl Apply<Closed> for Door {
    fn apply(&mut self, _: &Closed) {
        self.open = false;
    }
}

fn main() {
    // The enum is still generated (once per event), so this line adds no error.
    let _ = DoorEvent::from(Closed);
}
