use es_core::prelude::*;

#[event]
pub struct Opened;

// A plain struct: no `#[event]`.
#[derive(Debug, Clone, PartialEq)]
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

impl Apply<Closed> for Door {
    fn apply(&mut self, _: &Closed) {
        self.open = false;
    }
}

fn main() {}
