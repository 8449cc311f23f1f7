//! A small domain written with the macros exactly as a user would: a wallet whose deposit
//! event went through three schemas, plus a tuple event and a unit event.
//! Each test crate uses part of it.
#![allow(dead_code)]

use es_core::prelude::*;

/// The wallet was opened.
#[event]
pub(crate) struct Opened {
    pub(crate) owner: String,
}

/// Schema 1 of `Deposited`: an amount only, as a newtype.
#[event(name = "Deposited", version = 1)]
pub(crate) struct DepositedV1(pub(crate) i64);

/// Schema 2 of `Deposited`: adds the currency.
#[event(name = "Deposited", version = 2, previous = DepositedV1)]
pub(crate) struct DepositedV2 {
    pub(crate) amount: i64,
    pub(crate) currency: String,
}

/// The current schema of `Deposited`: adds a reference.
#[event(version = 3, previous = DepositedV2)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Deposited {
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) reference: String,
}

impl From<DepositedV1> for DepositedV2 {
    fn from(old: DepositedV1) -> Self {
        Self {
            amount: old.0,
            currency: "EUR".into(),
        }
    }
}

impl From<DepositedV2> for Deposited {
    fn from(old: DepositedV2) -> Self {
        Self {
            amount: old.amount,
            currency: old.currency,
            reference: "(none)".into(),
        }
    }
}

/// Money left the wallet: a tuple event with a custom stored name.
#[event(name = "wallet.withdrawn")]
pub(crate) struct Withdrawn(pub(crate) i64, pub(crate) String);

/// The wallet was closed: a unit event.
#[event]
pub(crate) struct Closed;

/// A wallet that records which `Apply` impl ran, and snapshots every 2 events.
#[derive(Aggregate, Debug, Default, PartialEq, Serialize, Deserialize)]
#[aggregate(
    name = "wallet",
    events(Opened, Deposited, Withdrawn, Closed),
    snapshot_every = 2,
    state_version = 4
)]
pub(crate) struct Wallet {
    pub(crate) owner: String,
    pub(crate) open: bool,
    pub(crate) balance: i64,
    pub(crate) applied: Vec<String>,
}

impl Apply<Opened> for Wallet {
    fn apply(&mut self, e: &Opened) {
        self.owner.clone_from(&e.owner);
        self.open = true;
        self.applied.push("Opened".into());
    }
}

impl Apply<Deposited> for Wallet {
    fn apply(&mut self, e: &Deposited) {
        self.balance += e.amount;
        self.applied.push(format!("Deposited({})", e.reference));
    }
}

impl Apply<Withdrawn> for Wallet {
    fn apply(&mut self, e: &Withdrawn) {
        self.balance -= e.0;
        self.applied.push(format!("Withdrawn({})", e.1));
    }
}

impl Apply<Closed> for Wallet {
    fn apply(&mut self, _: &Closed) {
        self.open = false;
        self.applied.push("Closed".into());
    }
}

/// One value of every event of the wallet.
pub(crate) fn every_event() -> Vec<WalletEvent> {
    vec![
        Opened {
            owner: "Ada".into(),
        }
        .into(),
        Deposited {
            amount: 100,
            currency: "EUR".into(),
            reference: "salary".into(),
        }
        .into(),
        Withdrawn(30, "rent".into()).into(),
        Closed.into(),
    ]
}

/// A stored payload.
pub(crate) fn raw(json: &str) -> Box<es_core::__private::RawValue> {
    match es_core::__private::RawValue::from_string(json.to_owned()) {
        Ok(raw) => raw,
        Err(err) => panic!("test payload is not JSON: {err}"),
    }
}
