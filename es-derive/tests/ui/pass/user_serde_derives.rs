//! An event whose struct already derives serde's traits (with serde in scope) keeps them.
#![deny(warnings)]

use es_core::prelude::*;

#[event]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Opened {
    pub owner: String,
}

fn main() {
    assert_eq!(Opened::NAME, "Opened");
}
