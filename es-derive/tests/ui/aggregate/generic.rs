use es_core::prelude::*;

#[event]
pub struct Opened;

#[derive(Aggregate, Default)]
#[aggregate(events(Opened))]
pub struct Door<T> {
    label: T,
}

fn main() {}
