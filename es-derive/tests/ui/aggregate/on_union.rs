use es_core::prelude::*;

#[event]
pub struct Opened;

#[derive(Aggregate)]
#[aggregate(events(Opened))]
pub union Door {
    open: u8,
    closed: u16,
}

fn main() {}
