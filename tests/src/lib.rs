//! A shared test domain for the cross-crate integration tests in `tests/`: a wallet whose
//! deposit event went through three schema versions, written with the macros exactly as a
//! user would.

use es_core::prelude::*;

/// The wallet was opened.
#[event]
pub struct Opened {
    /// Owner's name.
    pub owner: String,
}

/// Schema 1 of `Deposited`: an amount only.
#[event(name = "Deposited", version = 1)]
pub struct DepositedV1 {
    /// Minor units.
    pub amount: i64,
}

/// Schema 2 of `Deposited`: adds the currency.
#[event(name = "Deposited", version = 2, previous = DepositedV1)]
pub struct DepositedV2 {
    /// Minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
}

/// The current schema (3) of `Deposited`: adds a reference.
#[event(version = 3, previous = DepositedV2)]
pub struct Deposited {
    /// Minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
    /// Free text reference.
    pub reference: String,
}

impl From<DepositedV1> for DepositedV2 {
    fn from(old: DepositedV1) -> Self {
        Self {
            amount: old.amount,
            currency: "EUR".into(),
        }
    }
}

impl From<DepositedV2> for Deposited {
    fn from(old: DepositedV2) -> Self {
        Self {
            amount: old.amount,
            currency: old.currency,
            reference: String::new(),
        }
    }
}

/// Money left the wallet.
#[event]
pub struct Withdrawn {
    /// Minor units.
    pub amount: i64,
}

/// The wallet was closed.
#[event]
pub struct Closed;

/// A wallet: snapshots every 3 events so that tests cross snapshot boundaries often.
#[derive(Aggregate, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[aggregate(events(Opened, Deposited, Withdrawn, Closed), snapshot_every = 3)]
pub struct Wallet {
    /// Opened and not closed.
    pub open: bool,
    /// Balance in minor units.
    pub balance: i64,
    /// Number of events applied: catches a snapshot that skips or repeats one.
    pub applied: u64,
    /// Every reference seen, in order.
    pub references: Vec<String>,
}

impl Apply<Opened> for Wallet {
    fn apply(&mut self, _: &Opened) {
        self.open = true;
        self.applied += 1;
    }
}

impl Apply<Deposited> for Wallet {
    fn apply(&mut self, e: &Deposited) {
        self.balance += e.amount;
        self.references.push(e.reference.clone());
        self.applied += 1;
    }
}

impl Apply<Withdrawn> for Wallet {
    fn apply(&mut self, e: &Withdrawn) {
        self.balance -= e.amount;
        self.applied += 1;
    }
}

impl Apply<Closed> for Wallet {
    fn apply(&mut self, _: &Closed) {
        self.open = false;
        self.applied += 1;
    }
}

/// Why a wallet refused a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalletError {
    /// Not open (never opened, or closed).
    NotOpen,
    /// Opening an open wallet.
    AlreadyOpen,
    /// Not enough money.
    InsufficientFunds,
    /// Closing with money left.
    NotEmpty,
}

/// A command on a wallet, for generated command sequences.
#[derive(Debug, Clone)]
pub enum Command {
    /// Open it.
    Open,
    /// Deposit an amount with a reference.
    Deposit(i64, String),
    /// Withdraw an amount.
    Withdraw(i64),
    /// Close it.
    Close,
}

impl Wallet {
    /// Decides the events for `command`, or refuses.
    pub fn handle(&self, command: &Command) -> Result<WalletEvent, WalletError> {
        match command {
            Command::Open if self.open => Err(WalletError::AlreadyOpen),
            Command::Open => Ok(Opened {
                owner: "prop".into(),
            }
            .into()),
            _ if !self.open => Err(WalletError::NotOpen),
            Command::Deposit(amount, reference) => Ok(Deposited {
                amount: *amount,
                currency: "EUR".into(),
                reference: reference.clone(),
            }
            .into()),
            Command::Withdraw(amount) if *amount > self.balance => {
                Err(WalletError::InsufficientFunds)
            }
            Command::Withdraw(amount) => Ok(Withdrawn { amount: *amount }.into()),
            Command::Close if self.balance != 0 => Err(WalletError::NotEmpty),
            Command::Close => Ok(Closed.into()),
        }
    }
}
