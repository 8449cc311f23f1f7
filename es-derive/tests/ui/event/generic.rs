use es_core::prelude::*;

#[event]
pub struct Tagged<T> {
    pub tag: T,
}

fn main() {}
