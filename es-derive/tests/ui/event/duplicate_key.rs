use es_core::prelude::*;

#[event(version = 2, name = "Deposited", version = 3)]
pub struct Deposited {
    pub amount: i64,
}

fn main() {}
