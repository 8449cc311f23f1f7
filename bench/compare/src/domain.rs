//! The bank-account workload, written once for our framework and once for cqrs-es 0.5.

use es_core::prelude::*;

/// Why a command was refused (both frameworks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankError {
    /// The account is not open.
    NotOpen,
}

impl std::fmt::Display for BankError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BankError::NotOpen => f.write_str("account not open"),
        }
    }
}

impl std::error::Error for BankError {}

/// The account was opened.
#[event]
pub struct AccountOpened {
    /// Owner's name.
    pub owner: String,
    /// How far below zero the balance may go.
    pub overdraft_limit: i64,
}

/// Money came in.
#[event]
pub struct MoneyDeposited {
    /// Minor units.
    pub amount: i64,
    /// Free text.
    pub reference: String,
}

/// Money went out.
#[event]
pub struct MoneyWithdrawn {
    /// Minor units.
    pub amount: i64,
    /// Free text.
    pub reference: String,
}

/// Our aggregate, without snapshots.
#[derive(Aggregate, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[aggregate(
    name = "BankAccount",
    events(AccountOpened, MoneyDeposited, MoneyWithdrawn)
)]
pub struct BankAccount {
    /// Balance in minor units.
    pub balance: i64,
    /// Opened.
    pub open: bool,
    /// Overdraft limit.
    pub overdraft_limit: i64,
    /// Number of deposits seen.
    pub deposits: u64,
}

/// The same aggregate with snapshots every 1,000 events (for the snapshot load row).
#[derive(Aggregate, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[aggregate(
    name = "BankAccount",
    events(AccountOpened, MoneyDeposited, MoneyWithdrawn),
    snapshot_every = 1000
)]
pub struct SnapAccount {
    /// Balance in minor units.
    pub balance: i64,
    /// Opened.
    pub open: bool,
    /// Overdraft limit.
    pub overdraft_limit: i64,
    /// Number of deposits seen.
    pub deposits: u64,
}

macro_rules! applies {
    ($ty:ty) => {
        impl Apply<AccountOpened> for $ty {
            fn apply(&mut self, e: &AccountOpened) {
                self.open = true;
                self.overdraft_limit = e.overdraft_limit;
            }
        }
        impl Apply<MoneyDeposited> for $ty {
            fn apply(&mut self, e: &MoneyDeposited) {
                self.balance += e.amount;
                self.deposits += 1;
            }
        }
        impl Apply<MoneyWithdrawn> for $ty {
            fn apply(&mut self, e: &MoneyWithdrawn) {
                self.balance -= e.amount;
            }
        }
    };
}
applies!(BankAccount);
applies!(SnapAccount);

impl BankAccount {
    /// Deposit command.
    pub fn deposit(&self, amount: i64, reference: &str) -> Result<MoneyDeposited, BankError> {
        if !self.open {
            return Err(BankError::NotOpen);
        }
        Ok(MoneyDeposited {
            amount,
            reference: reference.to_owned(),
        })
    }
}

/// The state the hand-written baseline folds (same fields, no framework).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PlainAccount {
    /// Balance.
    pub balance: i64,
    /// Opened.
    pub open: bool,
    /// Overdraft.
    pub overdraft_limit: i64,
    /// Deposits.
    pub deposits: u64,
}

impl PlainAccount {
    /// Applies one stored row by hand: match on the name, decode the payload.
    pub fn apply_row(&mut self, name: &str, payload: &str) -> Result<(), serde_json::Error> {
        match name {
            "AccountOpened" => {
                let e: AccountOpened = serde_json::from_str(payload)?;
                self.open = true;
                self.overdraft_limit = e.overdraft_limit;
            }
            "MoneyDeposited" => {
                let e: MoneyDeposited = serde_json::from_str(payload)?;
                self.balance += e.amount;
                self.deposits += 1;
            }
            "MoneyWithdrawn" => {
                let e: MoneyWithdrawn = serde_json::from_str(payload)?;
                self.balance -= e.amount;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The cqrs-es 0.5 version of the same aggregate.
pub mod peer {
    use cqrs_es::DomainEvent;
    use cqrs_es::event_sink::EventSink;
    use serde::{Deserialize, Serialize};

    use super::BankError;

    /// cqrs-es aggregate.
    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    pub struct PeerAccount {
        /// Balance.
        pub balance: i64,
        /// Opened.
        pub open: bool,
        /// Overdraft.
        pub overdraft_limit: i64,
        /// Deposits.
        pub deposits: u64,
    }

    /// cqrs-es events (externally tagged JSON, as cqrs-es stores them).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum PeerEvent {
        /// Opened.
        AccountOpened {
            /// Owner.
            owner: String,
            /// Overdraft.
            overdraft_limit: i64,
        },
        /// Deposit.
        MoneyDeposited {
            /// Amount.
            amount: i64,
            /// Reference.
            reference: String,
        },
        /// Withdrawal.
        MoneyWithdrawn {
            /// Amount.
            amount: i64,
            /// Reference.
            reference: String,
        },
    }

    impl DomainEvent for PeerEvent {
        fn event_type(&self) -> String {
            match self {
                PeerEvent::AccountOpened { .. } => "AccountOpened",
                PeerEvent::MoneyDeposited { .. } => "MoneyDeposited",
                PeerEvent::MoneyWithdrawn { .. } => "MoneyWithdrawn",
            }
            .to_owned()
        }
        fn event_version(&self) -> String {
            "1.0".to_owned()
        }
    }

    /// cqrs-es commands.
    #[derive(Debug, Clone)]
    pub enum PeerCommand {
        /// Deposit one amount.
        Deposit(i64, String),
    }

    impl cqrs_es::Aggregate for PeerAccount {
        const TYPE: &'static str = "BankAccount";
        type Command = PeerCommand;
        type Event = PeerEvent;
        type Error = BankError;
        type Services = ();

        async fn handle(
            &mut self,
            command: PeerCommand,
            _services: &(),
            sink: &EventSink<Self>,
        ) -> Result<(), BankError> {
            match command {
                PeerCommand::Deposit(amount, reference) => {
                    if !self.open {
                        return Err(BankError::NotOpen);
                    }
                    sink.write(PeerEvent::MoneyDeposited { amount, reference }, self)
                        .await
                }
            }
            Ok(())
        }

        fn apply(&mut self, event: PeerEvent) {
            match event {
                PeerEvent::AccountOpened {
                    overdraft_limit, ..
                } => {
                    self.open = true;
                    self.overdraft_limit = overdraft_limit;
                }
                PeerEvent::MoneyDeposited { amount, .. } => {
                    self.balance += amount;
                    self.deposits += 1;
                }
                PeerEvent::MoneyWithdrawn { amount, .. } => self.balance -= amount,
            }
        }
    }
}
