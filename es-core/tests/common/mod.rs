//! A small account aggregate implemented by hand, without the macros: it shows the traits
//! can be implemented directly, and keeps es-core's tests independent of es-derive.
#![allow(dead_code, unreachable_pub)]

use es_core::{Aggregate, DecodeError, Event, EventSet, decode_upcast};
use serde::{Deserialize, Serialize};
use serde_json::value::{RawValue, to_raw_value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opened {
    pub owner: String,
}
impl Event for Opened {
    const NAME: &'static str = "Opened";
    const VERSION: u32 = 1;
}

/// Version 1 of `Deposited`, before it carried a note.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepositedV1 {
    pub amount: i64,
}
impl Event for DepositedV1 {
    const NAME: &'static str = "Deposited";
    const VERSION: u32 = 1;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deposited {
    pub amount: i64,
    pub note: String,
}
impl Event for Deposited {
    const NAME: &'static str = "Deposited";
    const VERSION: u32 = 2;
    fn decode_versioned(version: u32, payload: &RawValue) -> Result<Self, DecodeError> {
        decode_upcast::<Self, DepositedV1>(version, payload)
    }
}
impl From<DepositedV1> for Deposited {
    fn from(old: DepositedV1) -> Self {
        Self {
            amount: old.amount,
            note: "(v1)".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withdrawn {
    pub amount: i64,
}
impl Event for Withdrawn {
    const NAME: &'static str = "Withdrawn";
    const VERSION: u32 = 1;
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    Opened(Opened),
    Deposited(Deposited),
    Withdrawn(Withdrawn),
}

impl From<Opened> for AccountEvent {
    fn from(e: Opened) -> Self {
        Self::Opened(e)
    }
}
impl From<Deposited> for AccountEvent {
    fn from(e: Deposited) -> Self {
        Self::Deposited(e)
    }
}
impl From<Withdrawn> for AccountEvent {
    fn from(e: Withdrawn) -> Self {
        Self::Withdrawn(e)
    }
}

impl EventSet for AccountEvent {
    const NAMES: &'static [&'static str] = &[Opened::NAME, Deposited::NAME, Withdrawn::NAME];
    fn name(&self) -> &'static str {
        match self {
            Self::Opened(_) => Opened::NAME,
            Self::Deposited(_) => Deposited::NAME,
            Self::Withdrawn(_) => Withdrawn::NAME,
        }
    }
    fn version(&self) -> u32 {
        match self {
            Self::Opened(_) => Opened::VERSION,
            Self::Deposited(_) => Deposited::VERSION,
            Self::Withdrawn(_) => Withdrawn::VERSION,
        }
    }
    fn encode(&self) -> Result<Box<RawValue>, serde_json::Error> {
        match self {
            Self::Opened(e) => to_raw_value(e),
            Self::Deposited(e) => to_raw_value(e),
            Self::Withdrawn(e) => to_raw_value(e),
        }
    }
    fn decode(name: &str, version: u32, payload: &RawValue) -> Result<Self, DecodeError> {
        match name {
            Opened::NAME => Opened::decode_versioned(version, payload).map(Self::Opened),
            Deposited::NAME => Deposited::decode_versioned(version, payload).map(Self::Deposited),
            Withdrawn::NAME => Withdrawn::decode_versioned(version, payload).map(Self::Withdrawn),
            other => Err(DecodeError::UnknownEvent {
                name: other.to_owned(),
                known: Self::NAMES,
            }),
        }
    }
}

impl es_core::LogEvent for AccountEvent {
    fn filter() -> es_core::LogFilter {
        es_core::LogFilter::all().aggregate_types([Account::TYPE])
    }
    fn from_record(record: &es_core::RecordedEvent) -> Option<Result<Self, es_core::Error>> {
        (record.stream.aggregate_type == Account::TYPE).then(|| record.decode())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub open: bool,
    pub balance: i64,
    pub applied: u64,
    pub notes: Vec<String>,
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    const SNAPSHOT_EVERY: Option<u64> = Some(5);
    type Event = AccountEvent;

    fn apply_event(&mut self, event: &AccountEvent) {
        self.applied += 1;
        match event {
            AccountEvent::Opened(_) => self.open = true,
            AccountEvent::Deposited(e) => {
                self.balance += e.amount;
                self.notes.push(e.note.clone());
            }
            AccountEvent::Withdrawn(e) => self.balance -= e.amount,
        }
    }

    fn encode_state(&self) -> Option<Result<Box<RawValue>, serde_json::Error>> {
        Some(to_raw_value(self))
    }

    fn decode_state(state: &RawValue) -> Option<Result<Self, serde_json::Error>> {
        Some(serde_json::from_str(state.get()))
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("account is not open")]
    NotOpen,
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds { balance: i64, asked: i64 },
}

impl Account {
    pub fn open(&self, owner: &str) -> Result<Option<Opened>, AccountError> {
        Ok((!self.open).then(|| Opened {
            owner: owner.into(),
        }))
    }

    pub fn deposit(&self, amount: i64) -> Result<Deposited, AccountError> {
        if !self.open {
            return Err(AccountError::NotOpen);
        }
        Ok(Deposited {
            amount,
            note: format!("deposit {amount}"),
        })
    }

    pub fn withdraw(&self, amount: i64) -> Result<Withdrawn, AccountError> {
        if !self.open {
            return Err(AccountError::NotOpen);
        }
        if amount > self.balance {
            return Err(AccountError::InsufficientFunds {
                balance: self.balance,
                asked: amount,
            });
        }
        Ok(Withdrawn { amount })
    }
}
