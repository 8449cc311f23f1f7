//! Domain unit tests with es-core's given/when/then `Scenario`, and schema evolution.

use es_core::prelude::*;
use es_core::testing::Scenario;
use es_core::{NewEvent, Repository};
use ledger::domain::*;
use serde_json::value::to_raw_value;
use uuid::Uuid;

fn eur(minor: i64) -> Money {
    Money::new(minor, "EUR".parse().unwrap())
}

fn opened(overdraft_limit: i64) -> AccountEvent {
    AccountOpened {
        owner: "Ada".into(),
        currency: "EUR".parse().unwrap(),
        overdraft_limit,
    }
    .into()
}

fn deposited(amount: i64) -> AccountEvent {
    MoneyDeposited {
        amount,
        reference: String::new(),
    }
    .into()
}

fn none() -> Vec<AccountEvent> {
    Vec::new()
}

#[test]
fn an_account_opens_once_with_a_valid_owner_and_overdraft() {
    Scenario::<Account>::new()
        .when(|a| a.open("  Ada  ", "EUR".parse().unwrap(), 500))
        .then_events(AccountOpened {
            owner: "Ada".into(),
            currency: "EUR".parse().unwrap(),
            overdraft_limit: 500,
        });
    Scenario::<Account>::given(vec![opened(0)])
        .when(|a| a.open("Ada", "EUR".parse().unwrap(), 0))
        .then_error(LedgerError::AccountAlreadyExists);
    Scenario::<Account>::new()
        .when(|a| a.open(" ", "EUR".parse().unwrap(), 0))
        .then_error(LedgerError::InvalidOwner);
    Scenario::<Account>::new()
        .when(|a| a.open("Ada", "EUR".parse().unwrap(), -1))
        .then_error(LedgerError::NegativeOverdraftLimit(-1));
}

#[test]
fn deposits_need_an_open_account_a_positive_amount_and_the_same_currency() {
    let state = Scenario::<Account>::given(vec![opened(0)])
        .when(|a| a.deposit(&eur(1250), "salary"))
        .then_events(MoneyDeposited {
            amount: 1250,
            reference: "salary".into(),
        });
    assert_eq!(state.balance(), 1250);
    Scenario::<Account>::new()
        .when(|a| a.deposit(&eur(1), ""))
        .then_error(LedgerError::AccountNotFound);
    Scenario::<Account>::given(vec![opened(0)])
        .when(|a| a.deposit(&eur(0), ""))
        .then_error(LedgerError::NonPositiveAmount(0));
    Scenario::<Account>::given(vec![opened(0)])
        .when(|a| a.deposit(&Money::new(5, "USD".parse().unwrap()), ""))
        .then_error(LedgerError::CurrencyMismatch {
            expected: "EUR".parse().unwrap(),
            actual: "USD".parse().unwrap(),
        });
    Scenario::<Account>::given(vec![opened(0), deposited(i64::MAX)])
        .when(|a| a.deposit(&eur(1), ""))
        .then_error(LedgerError::Overflow);
}

#[test]
fn withdrawals_may_use_the_overdraft_but_no_more() {
    Scenario::<Account>::given(vec![opened(100), deposited(50)])
        .when(|a| a.withdraw(&eur(150), "rent"))
        .then_events(MoneyWithdrawn {
            amount: 150,
            reference: "rent".into(),
        });
    Scenario::<Account>::given(vec![opened(100), deposited(50)])
        .when(|a| a.withdraw(&eur(151), "rent"))
        .then_error(LedgerError::InsufficientFunds {
            available: eur(150),
            requested: eur(151),
        });
}

#[test]
fn a_frozen_account_moves_no_money_until_unfrozen() {
    let frozen = || {
        vec![
            opened(0),
            deposited(100),
            AccountFrozen {
                reason: "fraud".into(),
            }
            .into(),
        ]
    };
    Scenario::<Account>::given(frozen())
        .when(|a| a.withdraw(&eur(10), ""))
        .then_error(LedgerError::AccountFrozen);
    Scenario::<Account>::given(frozen())
        .when(|a| a.deposit(&eur(10), ""))
        .then_error(LedgerError::AccountFrozen);
    Scenario::<Account>::given(frozen())
        .when(|a| a.freeze("again"))
        .then_error(LedgerError::AccountFrozen);
    let state = Scenario::<Account>::given(frozen())
        .when(|a| a.unfreeze("cleared"))
        .then_events(AccountUnfrozen {
            reason: "cleared".into(),
        });
    assert_eq!(state.status(), AccountStatus::Open);
    Scenario::<Account>::given(vec![opened(0)])
        .when(|a| a.unfreeze(""))
        .then_error(LedgerError::AccountNotFrozen);
}

#[test]
fn an_account_closes_only_at_zero_with_nothing_in_flight() {
    Scenario::<Account>::given(vec![opened(0), deposited(1)])
        .when(|a| a.close(""))
        .then_error(LedgerError::NonZeroBalance(eur(1)));
    let transfer_id = Uuid::now_v7();
    let sent: AccountEvent = TransferSent {
        transfer_id,
        to_account: "bob".into(),
        amount: 1,
    }
    .into();
    Scenario::<Account>::given(vec![opened(0), deposited(1), sent.clone()])
        .when(|a| a.close(""))
        .then_error(LedgerError::TransfersInFlight(1));
    let settled: AccountEvent = TransferSettled { transfer_id }.into();
    let state = Scenario::<Account>::given(vec![opened(0), deposited(1), sent, settled])
        .when(|a| a.close("moving"))
        .then_events(AccountClosed {
            reason: "moving".into(),
        });
    assert_eq!(state.status(), AccountStatus::Closed);
    Scenario::<Account>::given(vec![
        opened(0),
        AccountClosed {
            reason: String::new(),
        }
        .into(),
    ])
    .when(|a| a.deposit(&eur(1), ""))
    .then_error(LedgerError::AccountClosed);
}

#[test]
fn transfer_legs_are_idempotent_per_transfer_id() {
    let id = Uuid::now_v7();
    let sent: AccountEvent = TransferSent {
        transfer_id: id,
        to_account: "bob".into(),
        amount: 30,
    }
    .into();
    Scenario::<Account>::given(vec![opened(0), deposited(100)])
        .when(|a| a.send_transfer(id, "bob", &eur(30)))
        .then_events(TransferSent {
            transfer_id: id,
            to_account: "bob".into(),
            amount: 30,
        });
    Scenario::<Account>::given(vec![opened(0), deposited(100), sent.clone()])
        .when(|a| a.send_transfer(id, "bob", &eur(30)))
        .then_events(none());
    Scenario::<Account>::given(vec![opened(0), deposited(10)])
        .when(|a| a.send_transfer(id, "bob", &eur(30)))
        .then_error(LedgerError::InsufficientFunds {
            available: eur(10),
            requested: eur(30),
        });
    let received: AccountEvent = TransferReceived {
        transfer_id: id,
        from_account: "ada".into(),
        amount: 30,
    }
    .into();
    Scenario::<Account>::given(vec![opened(0), received])
        .when(|a| a.receive_transfer(id, "ada", &eur(30)))
        .then_events(none());
    Scenario::<Account>::given(vec![opened(0), deposited(100), sent.clone()])
        .when(|a| a.settle_transfer(id))
        .then_events(TransferSettled { transfer_id: id });
}

#[test]
fn a_refund_is_accepted_even_when_frozen_and_only_once() {
    let id = Uuid::now_v7();
    let history = vec![
        opened(0),
        deposited(100),
        TransferSent {
            transfer_id: id,
            to_account: "bob".into(),
            amount: 100,
        }
        .into(),
        AccountFrozen {
            reason: "fraud".into(),
        }
        .into(),
    ];
    let state = Scenario::<Account>::given(history.clone())
        .when(|a| a.refund_transfer(id, "bob: account is frozen"))
        .then_events(TransferRefunded {
            transfer_id: id,
            amount: 100,
            reason: "bob: account is frozen".into(),
        });
    assert_eq!((state.balance(), state.in_flight()), (100, 0));
    let mut refunded = history;
    refunded.push(
        TransferRefunded {
            transfer_id: id,
            amount: 100,
            reason: String::new(),
        }
        .into(),
    );
    Scenario::<Account>::given(refunded.clone())
        .when(|a| a.refund_transfer(id, ""))
        .then_events(none());
    Scenario::<Account>::given(refunded)
        .when(|a| a.settle_transfer(id))
        .then_error(LedgerError::UnknownOutgoingTransfer(id));
    let other = Uuid::now_v7();
    Scenario::<Account>::given(vec![opened(0)])
        .when(|a| a.refund_transfer(other, ""))
        .then_error(LedgerError::UnknownOutgoingTransfer(other));
}

fn requested() -> TransferEvent {
    TransferRequested {
        from_account: "ada".into(),
        to_account: "bob".into(),
        amount: 10,
        currency: "EUR".parse().unwrap(),
        reference: "r".into(),
    }
    .into()
}

#[test]
fn a_transfer_is_validated_when_requested() {
    Scenario::<Transfer>::new()
        .when(|t| t.request("ada", "bob", &eur(10), "r"))
        .then_events(requested());
    Scenario::<Transfer>::new()
        .when(|t| t.request("ada", "ada", &eur(10), ""))
        .then_error(LedgerError::SameAccount);
    Scenario::<Transfer>::new()
        .when(|t| t.request("ada", "bob", &eur(-5), ""))
        .then_error(LedgerError::NonPositiveAmount(-5));
    Scenario::<Transfer>::new()
        .when(|t| t.request("ada", "b o b", &eur(5), ""))
        .then_error(LedgerError::InvalidAccountId("b o b".into()));
    Scenario::<Transfer>::given(vec![requested()])
        .when(|t| t.request("ada", "bob", &eur(10), "r"))
        .then_error(LedgerError::TransferAlreadyExists);
}

#[test]
fn a_transfer_moves_through_its_states_and_repeats_are_no_ops() {
    let debited: TransferEvent = TransferDebited {}.into();
    let failed: TransferEvent = TransferCreditFailed {
        reason: "frozen".into(),
    }
    .into();
    Scenario::<Transfer>::given(vec![requested()])
        .when(|t| t.mark_debited())
        .then_events(TransferDebited {});
    Scenario::<Transfer>::given(vec![requested(), debited.clone()])
        .when(|t| t.mark_debited())
        .then_events(Vec::<TransferEvent>::new());
    let state = Scenario::<Transfer>::given(vec![requested(), debited.clone()])
        .when(|t| t.credit_failed("frozen"))
        .then_events(failed.clone());
    assert_eq!(state.status(), TransferStatus::CreditFailed);
    // A failed credit can never turn into a completed transfer: no double spend.
    Scenario::<Transfer>::given(vec![requested(), debited.clone(), failed.clone()])
        .when(|t| t.complete())
        .then_error(LedgerError::InvalidTransferStep {
            status: TransferStatus::CreditFailed,
            step: "complete",
        });
    let state = Scenario::<Transfer>::given(vec![requested(), debited, failed])
        .when(|t| t.compensate())
        .then_events(TransferCompensated {});
    assert!(state.status().is_final());
    Scenario::<Transfer>::new()
        .when(|t| t.mark_debited())
        .then_error(LedgerError::TransferNotFound);
    Scenario::<Transfer>::given(vec![requested()])
        .when(|t| t.reject("insufficient funds"))
        .then_events(TransferRejected {
            reason: "insufficient funds".into(),
        });
}

/// Payloads written by the first release (no `reference`) are read back as version 2.
#[tokio::test]
async fn stored_version_1_deposits_are_upcast_on_read() {
    let store = MemoryStore::new();
    let stream = StreamId::new("Account", "legacy");
    let raw = |name: &str, version: u32, json: serde_json::Value| NewEvent {
        event_id: Uuid::now_v7(),
        event_name: name.into(),
        schema_version: version,
        payload: to_raw_value(&json).unwrap(),
        metadata: Metadata::by_user("migration"),
    };
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![
                raw(
                    "AccountOpened",
                    1,
                    serde_json::json!({ "owner": "Old", "currency": "EUR", "overdraft_limit": 0 }),
                ),
                raw("MoneyDeposited", 1, serde_json::json!({ "amount": 4200 })),
                raw(
                    "MoneyDeposited",
                    2,
                    serde_json::json!({ "amount": 800, "reference": "new" }),
                ),
            ],
        )
        .await
        .unwrap();
    let stored = store
        .read_stream(&stream, &StreamQuery::all())
        .await
        .unwrap();
    assert_eq!(stored[1].schema_version, 1, "stored as written");
    assert_eq!(
        stored[1].decode::<AccountEvent>().unwrap(),
        AccountEvent::from(MoneyDeposited {
            amount: 4200,
            reference: String::new()
        })
    );
    let accounts = Repository::<Account, _>::new(store.clone());
    let loaded = accounts.load("legacy").await.unwrap();
    assert_eq!((loaded.balance(), loaded.version), (5000, 3));

    // A payload from the future, or one that does not decode, is a typed error, not a panic.
    store
        .append(
            &stream,
            ExpectedVersion::Exact(3),
            vec![raw("MoneyDeposited", 3, serde_json::json!({ "amount": 1 }))],
        )
        .await
        .unwrap();
    let error = accounts.load("legacy").await.unwrap_err();
    assert!(error.to_string().contains("newer"), "{error}");
}
