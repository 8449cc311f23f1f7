use es_core::prelude::*;

#[event]
pub struct Opened;

#[event(name = "Opened")]
pub struct Reopened;

#[derive(Aggregate, Default)]
#[aggregate(events(Opened, Reopened))]
pub struct Door {
    open: bool,
}

impl Apply<Opened> for Door {
    fn apply(&mut self, _: &Opened) {
        self.open = true;
    }
}

impl Apply<Reopened> for Door {
    fn apply(&mut self, _: &Reopened) {
        self.open = true;
    }
}

fn main() {}
