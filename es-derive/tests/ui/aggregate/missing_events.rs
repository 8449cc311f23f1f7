use es_core::prelude::*;

#[derive(Aggregate, Default)]
#[aggregate(name = "Door")]
pub struct Door {
    open: bool,
}

fn main() {}
