use es_core::prelude::*;

#[event]
pub struct Opened;

#[event]
pub struct Closed;

#[derive(Aggregate, Default)]
#[aggregate(events(Opened, Closed))]
pub struct Door {
    open: bool,
}

impl Apply<Opened> for Door {
    fn apply(&mut self, _: &Opened) {
        self.open = true;
    }
}

fn main() {}
