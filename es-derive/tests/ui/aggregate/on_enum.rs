use es_core::prelude::*;

#[event]
pub struct Opened;

#[derive(Aggregate)]
#[aggregate(events(Opened))]
pub enum Door {
    Open,
    Closed,
}

fn main() {}
