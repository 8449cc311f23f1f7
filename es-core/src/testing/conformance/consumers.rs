//! The consumer runtime over the store: at-least-once delivery through the store's
//! checkpoints when a consumer is dropped between handling and checkpoint, parked events,
//! read-your-writes waits and single-active leases.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::*;
use crate::checkpoint::{CheckpointStore, ParkedEvent};
use crate::consumer::{
    AnyEvent, AtLeastOnce, Consumer, ConsumerState, Envelope, EventHandler, RetryPolicy,
};
use crate::error::BoxError;
use crate::lease::Leases;

/// A handler that records the positions it handled, refuses one event id on request, and can
/// arm a [`Gated`] checkpoint store once it has handled a number of events.
#[derive(Clone, Default)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<u64>>>,
    fail_on: Arc<Mutex<Option<Uuid>>>,
    arm: Option<(usize, Arc<AtomicBool>)>,
}

impl Recorder {
    /// The positions handled so far, in order (repeats included).
    pub fn seen(&self) -> Vec<u64> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Refuses the event with this id (or nothing).
    pub fn fail_on(&self, event_id: Option<Uuid>) {
        *self.fail_on.lock().unwrap_or_else(PoisonError::into_inner) = event_id;
    }
}

impl EventHandler for Recorder {
    type Event = AnyEvent;

    async fn handle(&mut self, _: &mut (), event: &Envelope<AnyEvent>) -> Result<(), BoxError> {
        if *self.fail_on.lock().unwrap_or_else(PoisonError::into_inner)
            == Some(event.record.event_id)
        {
            return Err(format!("refusing event {}", event.record.event_id).into());
        }
        let count = {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            seen.push(event.position());
            seen.len()
        };
        if let Some((after, armed)) = &self.arm
            && count >= *after
        {
            armed.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// Checkpoints whose writes hang forever once armed, telling the test they did: a consumer
/// future dropped there was dropped between handling its batch and saving its checkpoint.
#[derive(Clone)]
pub struct Gated<C> {
    inner: C,
    armed: Arc<AtomicBool>,
    blocked: Arc<Notify>,
    saves: Arc<AtomicUsize>,
}

impl<C> Gated<C> {
    fn new(inner: C) -> Self {
        Self {
            inner,
            armed: Arc::default(),
            blocked: Arc::default(),
            saves: Arc::default(),
        }
    }
}

impl<C: CheckpointStore> CheckpointStore for Gated<C> {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, Error> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), Error> {
        if self.armed.load(Ordering::Acquire) {
            self.blocked.notify_one();
            std::future::pending::<()>().await;
        }
        self.saves.fetch_add(1, Ordering::AcqRel);
        self.inner.save_checkpoint(name, position).await
    }

    async fn park(&self, consumer: &str, parked: &ParkedEvent) -> Result<(), Error> {
        self.inner.park(consumer, parked).await
    }

    async fn parked(&self, consumer: &str) -> Result<Vec<ParkedEvent>, Error> {
        self.inner.parked(consumer).await
    }

    async fn unpark(&self, consumer: &str, position: u64) -> Result<bool, Error> {
        self.inner.unpark(consumer, position).await
    }
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    }
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

/// A consumer future dropped after its handler ran a batch but before the batch's checkpoint
/// was saved: the store keeps the checkpoint of the batch before, and a restarted consumer
/// handles that batch again and goes on. Every event is handled; exactly the dropped batch
/// twice (at least once).
pub async fn at_least_once_survives_a_drop_between_handling_and_checkpoint<
    S: EventStore + Clone + 'static,
>(
    store: S,
) {
    let name = format!("dropped-{}", Uuid::now_v7());
    let appended = store
        .append(
            &stream("delivery"),
            ExpectedVersion::NoStream,
            events("E", 0, 10),
        )
        .await
        .expect("append");
    let p = positions(&appended);
    let gated = Gated::new(store.clone());
    let recorder = Recorder {
        arm: Some((4, gated.armed.clone())),
        ..Recorder::default()
    };
    let mut consumer = Consumer::new(
        name.as_str(),
        store.clone(),
        AtLeastOnce::new(gated.clone()).with_interval(Duration::ZERO),
        recorder.clone(),
    )
    .batch_size(3);
    tokio::select! {
        result = consumer.catch_up() => panic!("catch_up finished while its checkpoint write hangs: {result:?}"),
        () = within("the second batch's checkpoint write", gated.blocked.notified()) => {}
    }
    drop(consumer);
    assert_eq!(
        gated.saves.load(Ordering::Acquire),
        1,
        "one checkpoint saved before the drop"
    );
    assert_eq!(
        store.load_checkpoint(&name).await.expect("load"),
        Some(p[2]),
        "the checkpoint of the first batch"
    );
    assert_eq!(
        recorder.seen(),
        p[..6],
        "the second batch was handled, not checkpointed"
    );
    let mut restarted = Consumer::new(
        name.as_str(),
        store.clone(),
        AtLeastOnce::new(store.clone()).with_interval(Duration::ZERO),
        recorder.clone(),
    )
    .batch_size(3);
    let progress = restarted
        .catch_up()
        .await
        .expect("catch up after the restart");
    assert_eq!((progress.done, progress.position), (7, p[9]));
    let want: Vec<u64> = p[..6].iter().chain(&p[3..]).copied().collect();
    assert_eq!(
        recorder.seen(),
        want,
        "the dropped batch again, then the rest, once"
    );
    assert_eq!(
        store.load_checkpoint(&name).await.expect("load"),
        Some(p[9])
    );
}

/// An event the handler keeps refusing is parked (with its position, id, stream, version,
/// name, error and attempts) and the consumer goes on; fixed, it is replayed and unparked; a
/// running consumer parks and goes on too.
pub async fn a_parked_event_is_kept_and_the_consumer_goes_on<S: EventStore + Clone + 'static>(
    store: S,
) {
    let name = format!("parking-{}", Uuid::now_v7());
    let s = stream("parking");
    let appended = store
        .append(&s, ExpectedVersion::NoStream, events("E", 0, 6))
        .await
        .expect("append");
    let p = positions(&appended);
    let recorder = Recorder::default();
    recorder.fail_on(Some(appended[2].event_id));
    let consumer = |recorder: &Recorder| {
        Consumer::new(
            name.as_str(),
            store.clone(),
            AtLeastOnce::new(store.clone()).with_interval(Duration::ZERO),
            recorder.clone(),
        )
        .retry(quick_retries())
        .batch_size(4)
    };
    let mut first = consumer(&recorder);
    let progress = first
        .catch_up()
        .await
        .expect("a poison event is parked, not fatal");
    assert_eq!((progress.done, progress.position), (5, p[5]));
    assert_eq!(recorder.seen(), [p[0], p[1], p[3], p[4], p[5]]);
    assert_eq!(
        store.load_checkpoint(&name).await.expect("load"),
        Some(p[5])
    );
    let parked = store.parked(&name).await.expect("parked");
    assert_eq!(parked.len(), 1, "{parked:?}");
    let it = &parked[0];
    assert_eq!(
        (
            it.position,
            it.event_id,
            &it.stream,
            it.version,
            it.event_name.as_str(),
            it.attempts
        ),
        (p[2], Some(appended[2].event_id), &s, 3, "E", 2)
    );
    assert!(it.error.contains("refusing event"), "{}", it.error);
    assert_eq!(first.parked().await.expect("parked"), parked);
    assert_eq!(first.status().parked, 1);

    recorder.fail_on(None);
    assert!(first.replay_parked(p[2]).await.expect("replay"));
    assert_eq!(recorder.seen().last(), Some(&p[2]));
    assert!(store.parked(&name).await.expect("parked").is_empty());
    assert!(
        !first
            .replay_parked(p[2])
            .await
            .expect("nothing left to replay")
    );
    assert_eq!(
        store.load_checkpoint(&name).await.expect("load"),
        Some(p[5])
    );
    drop(first);

    let running = consumer(&recorder).spawn();
    let later_events = events("E", 6, 3);
    recorder.fail_on(Some(later_events[1].event_id));
    let later = store
        .append(&s, ExpectedVersion::Exact(6), later_events)
        .await
        .expect("append");
    running
        .wait_for(later[2].position, PATIENCE)
        .await
        .expect("the running consumer goes on past a parked event");
    let parked_live = running.parked().await.expect("parked");
    assert_eq!(
        parked_live
            .iter()
            .map(|x| (x.position, x.event_id))
            .collect::<Vec<_>>(),
        [(later[1].position, Some(later[1].event_id))]
    );
    assert_eq!(
        recorder.seen()[5..],
        [p[2], later[0].position, later[2].position],
        "after the replayed event, the later ones but the parked one"
    );
    assert_eq!(running.status().parked, 1);
    running.shutdown().await.expect("shutdown");
}

/// `wait_for` returns once the consumer has applied the position (the handler has seen it),
/// at once for a position already applied, and with [`Error::Timeout`] for one never reached.
pub async fn wait_for_returns_once_the_position_is_applied<S: EventStore + Clone + 'static>(
    store: S,
) {
    let name = format!("waiter-{}", Uuid::now_v7());
    let recorder = Recorder::default();
    let handle = Consumer::new(
        name.as_str(),
        store.clone(),
        AtLeastOnce::new(store.clone()).with_interval(Duration::ZERO),
        recorder.clone(),
    )
    .spawn();
    let mut status = handle.watch();
    within(
        "the consumer going live",
        status.wait_for(|s| s.state == ConsumerState::Live),
    )
    .await
    .expect("the consumer runs");
    let s = stream("waited");
    let mut appended = Vec::new();
    for round in 0..5u64 {
        let recorded = store
            .append(&s, ExpectedVersion::Any, events("E", round, 1 + round % 3))
            .await
            .expect("append");
        let last = recorded.last().map(|e| e.position).expect("appended");
        handle.wait_for(last, PATIENCE).await.expect("wait_for");
        let seen = recorder.seen();
        for e in &recorded {
            assert!(
                seen.contains(&e.position),
                "position {} applied when wait_for returns",
                e.position
            );
        }
        assert!(handle.status().checkpoint >= last);
        handle
            .wait_for(last, Duration::ZERO)
            .await
            .expect("an applied position is waited for without waiting");
        appended.extend(recorded);
    }
    assert_eq!(
        recorder.seen(),
        positions(&appended),
        "each event once, in order"
    );
    let head = store.head_position().await.expect("head");
    match handle
        .wait_for(head + 1_000_000, Duration::from_millis(50))
        .await
    {
        Err(Error::Timeout(_)) => {}
        other => panic!("waiting for a position never reached: expected a timeout, got {other:?}"),
    }
    handle.shutdown().await.expect("shutdown");
    assert_eq!(
        store.load_checkpoint(&name).await.expect("load"),
        appended.last().map(|e| e.position),
        "the checkpoint is saved"
    );
}

/// With its default checkpoint interval, at-least-once delivery still saves the checkpoint
/// when a catch-up reaches the head and when a running consumer stops, as its docs say: a
/// restart then repeats nothing.
pub async fn at_least_once_saves_the_checkpoint_when_caught_up_and_at_shutdown<
    S: EventStore + Clone + 'static,
>(
    store: S,
) {
    let name = format!("flushed-{}", Uuid::now_v7());
    let s = stream("flushed");
    let first = store
        .append(&s, ExpectedVersion::NoStream, events("E", 0, 3))
        .await
        .expect("append");
    let recorder = Recorder::default();
    let mut consumer = Consumer::new(
        name.as_str(),
        store.clone(),
        AtLeastOnce::new(store.clone()),
        recorder.clone(),
    );
    consumer.catch_up().await.expect("catch up");
    assert_eq!(
        store.load_checkpoint(&name).await.expect("load"),
        Some(first[2].position),
        "saved when the catch-up reached the head"
    );
    drop(consumer);
    let handle = Consumer::new(
        name.as_str(),
        store.clone(),
        AtLeastOnce::new(store.clone()),
        recorder.clone(),
    )
    .spawn();
    let second = store
        .append(&s, ExpectedVersion::Exact(3), events("E", 3, 2))
        .await
        .expect("append");
    handle
        .wait_for(second[1].position, PATIENCE)
        .await
        .expect("wait_for");
    handle.shutdown().await.expect("shutdown");
    assert_eq!(
        store.load_checkpoint(&name).await.expect("load"),
        Some(second[1].position),
        "saved when the consumer stopped"
    );
    assert_eq!(
        recorder.seen(),
        positions(&first)
            .into_iter()
            .chain(positions(&second))
            .collect::<Vec<_>>()
    );
}

/// Two runners of one consumer, on two handles, with a lease: one is active, the other waits;
/// when the first shuts down the other takes over from the shared checkpoint.
pub async fn two_runners_share_one_lease<S: EventStore + Leases + Clone + 'static>(
    store: S,
    other: S,
) {
    let name = format!("leased-{}", Uuid::now_v7());
    let poll = Duration::from_millis(20);
    let runner = |handle: &S, recorder: &Recorder| {
        Consumer::new(
            name.as_str(),
            handle.clone(),
            AtLeastOnce::new(handle.clone()).with_interval(Duration::ZERO),
            recorder.clone(),
        )
        .lease(handle.clone(), poll)
    };
    let (first_seen, second_seen) = (Recorder::default(), Recorder::default());
    let first = runner(&store, &first_seen).spawn();
    let mut first_status = first.watch();
    within(
        "the first runner going live",
        first_status.wait_for(|s| s.state == ConsumerState::Live),
    )
    .await
    .expect("the first runner runs");
    let second = runner(&other, &second_seen).spawn();
    let mut second_status = second.watch();
    within(
        "the second runner waiting for the lease",
        second_status.wait_for(|s| s.state == ConsumerState::WaitingForLease),
    )
    .await
    .expect("the second runner runs");
    let s = stream("leased");
    let before = store
        .append(&s, ExpectedVersion::NoStream, events("E", 0, 3))
        .await
        .expect("append");
    first
        .wait_for(before[2].position, PATIENCE)
        .await
        .expect("the lease holder handles");
    assert_eq!(first_seen.seen(), positions(&before));
    assert!(
        second_seen.seen().is_empty(),
        "the waiting runner handles nothing"
    );
    assert_eq!(second.status().state, ConsumerState::WaitingForLease);
    first
        .shutdown()
        .await
        .expect("the first runner stops and releases its lease");
    assert_eq!(
        other.load_checkpoint(&name).await.expect("load"),
        Some(before[2].position),
        "the checkpoint is saved before the lease is released"
    );
    let after = store
        .append(&s, ExpectedVersion::Exact(3), events("E", 3, 2))
        .await
        .expect("append");
    second
        .wait_for(after[1].position, PATIENCE)
        .await
        .expect("the second runner took over");
    assert_eq!(
        second_seen.seen(),
        positions(&after),
        "the second runner resumed from the shared checkpoint"
    );
    assert_eq!(first_seen.seen(), positions(&before));
    second.shutdown().await.expect("shutdown");
}
