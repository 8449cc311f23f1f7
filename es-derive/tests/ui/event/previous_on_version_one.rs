use es_core::prelude::*;

#[event(name = "Deposited")]
pub struct DepositedV0 {
    pub amount: i64,
}

#[event(previous = DepositedV0)]
pub struct Deposited {
    pub amount: i64,
}

fn main() {}
