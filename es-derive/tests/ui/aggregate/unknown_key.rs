use es_core::prelude::*;

#[event]
pub struct Opened;

#[derive(Aggregate, Default)]
#[aggregate(events(Opened), snapshots = 10)]
pub struct Door {
    open: bool,
}

impl Apply<Opened> for Door {
    fn apply(&mut self, _: &Opened) {
        self.open = true;
    }
}

fn main() {
    let _ = DoorEvent::from(Opened);
}
