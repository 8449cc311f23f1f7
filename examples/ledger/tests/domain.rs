//! Domain unit tests with es-core's given/when/then `Scenario`, and schema evolution.

use es_core::prelude::*;
use es_core::testing::Scenario;
use es_core::{NewEvent, Repository};
use ledger::domain::*;
use serde_json::value::to_raw_value;
use std::str::FromStr;
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

#[test]
fn money_parses_exactly_and_refuses_what_would_lose_precision() {
    let eur = || Currency::from_str("EUR").unwrap();
    assert_eq!(Money::parse("0.05", eur()).map(|m| m.minor).ok(), Some(5));
    assert_eq!(Money::parse("10", eur()).map(|m| m.minor).ok(), Some(1000));
    assert_eq!(
        Money::parse("10.5", eur()).map(|m| m.minor).ok(),
        Some(1050)
    );
    for bad in [
        "",
        ".5",
        "5.",
        "-1",
        "1e3",
        "0.001",
        "1,00",
        "99999999999999999999",
        "1 0",
    ] {
        assert!(Money::parse(bad, eur()).is_err(), "{bad:?} parsed");
    }
    let yen = Currency::from_str("JPY").unwrap();
    assert_eq!(
        Money::parse("500", yen.clone()).map(|m| m.minor).ok(),
        Some(500)
    );
    assert!(Money::parse("5.1", yen.clone()).is_err());
    assert_eq!(Money::format_minor(-1205, &eur()), "-12.05");
    assert_eq!(Money::format_minor(7, &eur()), "0.07");
    assert_eq!(
        Money::format_minor(i64::MIN, &eur()),
        "-92233720368547758.08"
    );
    assert_eq!(
        Money::format_minor(i128::from(i64::MAX) * 2, &eur()),
        "184467440737095516.14"
    );
    assert_eq!(Money::format_minor(42, &yen), "42");
    assert!(serde_json::from_str::<Currency>("\"USD\"").is_ok());
    assert!(serde_json::from_str::<Currency>("\"usd\"").is_err());
    assert!(serde_json::from_str::<Currency>("\"EURO\"").is_err());
}

#[test]
fn text_with_control_characters_and_times_out_of_range_are_refused() {
    for bad in ["a\u{0}b", "tab\there", "\u{7f}", "line\nbreak"] {
        Scenario::<Account>::given(vec![opened(0)])
            .when(|a| a.deposit(&eur(1), bad))
            .then_error(LedgerError::ControlCharacter("reference"));
    }
    Scenario::<Account>::new()
        .when(|a| a.open("A\u{0}", "EUR".parse().unwrap(), 0))
        .then_error(LedgerError::ControlCharacter("owner"));
    Scenario::<Account>::given(vec![opened(0)])
        .when(|a| a.freeze("\u{1b}[31m"))
        .then_error(LedgerError::ControlCharacter("reason"));
    Scenario::<Transfer>::new()
        .when(|t| t.request("ada", "bob", &eur(1), "\u{0}"))
        .then_error(LedgerError::ControlCharacter("reference"));
    assert!(check_text("reference", "naïve – ok ✓", 200).is_ok());
    let year = |y: i32| {
        chrono::NaiveDate::from_ymd_opt(y, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
    };
    assert!(check_time(year(1)).is_ok() && check_time(year(9999)).is_ok());
    assert!(check_time(year(0)).is_err() && check_time(year(10_000)).is_err());
    assert!(check_time(year(-4713)).is_err());
}

#[test]
fn credits_leave_room_for_the_money_in_flight_so_refunds_never_overflow() {
    let id = Uuid::now_v7();
    let sent: AccountEvent = TransferSent {
        transfer_id: id,
        to_account: "bob".into(),
        amount: 10,
    }
    .into();
    // 10 in flight: the balance may reach i64::MAX - 10, not more.
    Scenario::<Account>::given(vec![opened(0), deposited(10), sent.clone()])
        .when(|a| a.deposit(&eur(i64::MAX - 10), ""))
        .then_events(MoneyDeposited {
            amount: i64::MAX - 10,
            reference: String::new(),
        });
    Scenario::<Account>::given(vec![opened(0), deposited(10), sent.clone()])
        .when(|a| a.deposit(&eur(i64::MAX - 9), ""))
        .then_error(LedgerError::Overflow);
    Scenario::<Account>::given(vec![
        opened(0),
        deposited(10),
        sent.clone(),
        deposited(i64::MAX - 10),
    ])
    .when(|a| a.receive_transfer(Uuid::now_v7(), "cy", &eur(1)))
    .then_error(LedgerError::Overflow);
    let state = Scenario::<Account>::given(vec![
        opened(0),
        deposited(10),
        sent,
        deposited(i64::MAX - 10),
    ])
    .when(|a| a.refund_transfer(id, "back"))
    .then_events(TransferRefunded {
        transfer_id: id,
        amount: 10,
        reason: "back".into(),
    });
    assert_eq!(state.balance(), i64::MAX);
    // An overdraft of i64::MAX: the funds check cannot overflow either.
    let state = Scenario::<Account>::given(vec![opened(i64::MAX)])
        .when(|a| a.withdraw(&eur(i64::MAX), ""))
        .then_events(MoneyWithdrawn {
            amount: i64::MAX,
            reference: String::new(),
        });
    assert_eq!(state.balance(), -i64::MAX);
    Scenario::<Account>::given(vec![opened(i64::MAX), deposited(5)])
        .when(|a| a.withdraw(&eur(1), ""))
        .then_events(MoneyWithdrawn {
            amount: 1,
            reference: String::new(),
        });
}

#[test]
fn a_credit_that_must_not_stand_is_reversed_once() {
    let id = Uuid::now_v7();
    let received: AccountEvent = TransferReceived {
        transfer_id: id,
        from_account: "ada".into(),
        amount: 40,
    }
    .into();
    let frozen: AccountEvent = AccountFrozen {
        reason: "kyc".into(),
    }
    .into();
    let state = Scenario::<Account>::given(vec![opened(0), received.clone(), frozen])
        .when(|a| a.reverse_transfer(id, "source never debited"))
        .then_events(TransferReversed {
            transfer_id: id,
            amount: 40,
            reason: "source never debited".into(),
        });
    assert_eq!(state.balance(), 0);
    let reversed: AccountEvent = TransferReversed {
        transfer_id: id,
        amount: 40,
        reason: String::new(),
    }
    .into();
    Scenario::<Account>::given(vec![opened(0), received.clone(), reversed.clone()])
        .when(|a| a.reverse_transfer(id, ""))
        .then_events(none());
    Scenario::<Account>::given(vec![opened(0), received, reversed])
        .when(|a| a.receive_transfer(id, "ada", &eur(40)))
        .then_events(none());
    let other = Uuid::now_v7();
    Scenario::<Account>::given(vec![opened(0)])
        .when(|a| a.reverse_transfer(other, ""))
        .then_error(LedgerError::UnknownIncomingTransfer(other));
    // A credited transfer whose source turned out never debited is compensated before it
    // completes; a completed transfer is final.
    Scenario::<Transfer>::given(vec![requested(), TransferDebited {}.into()])
        .when(|t| t.compensate())
        .then_events(TransferCompensated {});
    Scenario::<Transfer>::given(vec![
        requested(),
        TransferDebited {}.into(),
        TransferCompleted {}.into(),
    ])
    .when(|t| t.compensate())
    .then_error(LedgerError::InvalidTransferStep {
        status: TransferStatus::Completed,
        step: "compensate",
    });
}
