use es_core::prelude::*;

#[event(version = 0)]
pub struct Deposited {
    pub amount: i64,
}

fn main() {}
