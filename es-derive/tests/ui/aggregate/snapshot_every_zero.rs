use es_core::prelude::*;

#[event]
pub struct Opened;

#[derive(Aggregate, Default, Serialize, Deserialize)]
#[aggregate(events(Opened), snapshot_every = 0, state_version = 0)]
pub struct Door {
    open: bool,
}

impl Apply<Opened> for Door {
    fn apply(&mut self, _: &Opened) {
        self.open = true;
    }
}

fn main() {}
