use es_core::prelude::*;

#[event(name = "Deposited", version = 1)]
pub struct DepositedV1 {
    pub amount: i64,
}

// Skips version 2.
#[event(version = 3, previous = DepositedV1)]
pub struct Deposited {
    pub amount: i64,
    pub reference: String,
}

impl From<DepositedV1> for Deposited {
    fn from(old: DepositedV1) -> Self {
        Self { amount: old.amount, reference: String::new() }
    }
}

fn main() {}
