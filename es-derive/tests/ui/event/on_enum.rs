use es_core::prelude::*;

#[event]
pub enum AccountEvent {
    Opened,
    Closed,
}

fn main() {}
