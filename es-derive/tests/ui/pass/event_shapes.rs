//! Every struct shape, the user's own derives and serde attributes, and a renamed runtime path.
#![deny(warnings)]

use es_core::prelude::*;

mod runtime {
    pub use es_core as es;
}

/// Named fields with serde attributes of the user's own.
#[event(name = "account-opened")]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct AccountOpened {
    /// Owner.
    pub owner_name: String,
}

/// Tuple struct.
#[event(version = 2, previous = DepositedV1)]
pub struct Deposited(pub i64, pub String);

/// Its first schema, a newtype.
#[event(name = "Deposited")]
pub struct DepositedV1(pub i64);

impl From<DepositedV1> for Deposited {
    fn from(old: DepositedV1) -> Self {
        Self(old.0, String::new())
    }
}

/// Unit struct, through a renamed runtime path.
#[event(crate = crate::runtime::es)]
pub struct Closed;

fn main() {
    assert_eq!(AccountOpened::NAME, "account-opened");
    assert_eq!((Deposited::NAME, Deposited::VERSION), ("Deposited", 2));
    assert_eq!(<Closed as Event>::NAME, "Closed");
    let _ = Closed.clone();
}
