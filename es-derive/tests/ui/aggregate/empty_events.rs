use es_core::prelude::*;

#[derive(Aggregate, Default)]
#[aggregate(events())]
pub struct Door {
    open: bool,
}

fn main() {}
