//! The generated `Aggregate` impl: constants, `apply` dispatch and snapshots.

mod common;

use common::*;
use es_core::prelude::*;

#[test]
fn constants_come_from_the_attribute() {
    assert_eq!(Wallet::TYPE, "wallet");
    assert_eq!(Wallet::SNAPSHOT_EVERY, Some(2));
    assert_eq!(Wallet::STATE_VERSION, 4);
}

#[test]
fn apply_dispatches_each_variant_to_its_apply_impl() {
    let mut wallet = Wallet::default();
    for event in every_event() {
        Aggregate::apply_event(&mut wallet, &event);
    }
    assert_eq!(
        wallet.applied,
        ["Opened", "Deposited(salary)", "Withdrawn(rent)", "Closed"]
    );
    assert_eq!(wallet.owner, "Ada");
    assert_eq!(wallet.balance, 70);
    assert!(!wallet.open);
}

#[test]
fn snapshot_state_round_trips() {
    let mut wallet = Wallet::default();
    for event in every_event().into_iter().take(3) {
        Aggregate::apply_event(&mut wallet, &event);
    }
    let state = wallet
        .encode_state()
        .expect("snapshots are on")
        .expect("encode");
    let restored = Wallet::decode_state(&state)
        .expect("snapshots are on")
        .expect("decode");
    assert_eq!(restored, wallet);
}

/// Without `snapshot_every`, the default (no snapshots) is kept.
mod no_snapshots {
    use es_core::prelude::*;

    #[event]
    pub(crate) struct Rang;

    #[derive(Aggregate, Default)]
    #[aggregate(events(Rang))]
    pub(crate) struct Bell {
        pub(crate) rings: u32,
    }

    impl Apply<Rang> for Bell {
        fn apply(&mut self, _: &Rang) {
            self.rings += 1;
        }
    }

    #[test]
    fn takes_no_snapshots() {
        let mut bell = Bell::default();
        Aggregate::apply_event(&mut bell, &BellEvent::from(Rang));
        assert_eq!(bell.rings, 1);
        assert_eq!(Bell::TYPE, "Bell");
        assert_eq!(Bell::SNAPSHOT_EVERY, None);
        assert_eq!(Bell::STATE_VERSION, 1);
        assert!(bell.encode_state().is_none());
    }
}
