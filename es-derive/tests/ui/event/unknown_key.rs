use es_core::prelude::*;

#[event(nmae = "Opened")]
pub struct Opened {
    pub owner: String,
}

fn main() {}
