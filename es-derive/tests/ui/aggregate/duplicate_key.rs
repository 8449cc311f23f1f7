use es_core::prelude::*;

#[event]
pub struct Opened;

#[derive(Aggregate, Default)]
#[aggregate(name = "Door", events(Opened))]
#[aggregate(name = "Gate")]
pub struct Door {
    open: bool,
}

impl Apply<Opened> for Door {
    fn apply(&mut self, _: &Opened) {
        self.open = true;
    }
}

fn main() {}
