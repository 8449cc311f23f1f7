use es_core::prelude::*;

// Forgot `name = "Deposited"`: this is the event `DepositedV1`, not an older `Deposited`.
#[event(version = 1)]
pub struct DepositedV1 {
    pub amount: i64,
}

#[event(version = 2, previous = DepositedV1)]
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
