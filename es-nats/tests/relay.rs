//! The relay against the local NATS: the stream's messages, restarts, a second relay, a
//! stream that lost its data, stream settings checked, and the source reading it back.

mod support;

use std::time::Duration;

use es_core::{AtLeastOnce, GlobalLog, GlobalLogExt, LocalCheckpoints, LogFilter, MemoryStore};
use es_nats::{JetStreamRelayConfig, JetStreamSource, StreamSettings};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// A fresh stream for `test`, written by relays with small batches and few acknowledgements
/// in flight.
async fn broker(test: &str) -> NatsBroker {
    let config = JetStreamRelayConfig {
        batch_size: 50,
        max_in_flight: 16,
        ..JetStreamRelayConfig::default()
    };
    NatsBroker::new(test, config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_holds_each_event_once_with_its_subject_and_headers() {
    let broker = broker("layout").await;
    let store = MemoryStore::new();
    write(&store, 4, 60, Duration::ZERO).await;
    let log = log_of(&store).await;
    scenarios::relay_all(&broker, &store).await;
    // A restart finds everything published and publishes nothing.
    scenarios::relay_all(&broker, &store).await;
    assert_eq!(broker.last_published().await, log.len() as u64);
    broker.assert_holds(&log).await;

    // The source reads it all back, exactly, through a durable consumer.
    let source = JetStreamSource::new(nats_url(), broker.settings().clone());
    let (reader, _) = source.durable("reader");
    assert_eq!(
        reader.head_position().await.expect("head"),
        log.len() as u64
    );
    assert_same_events(&read_in_pages(&reader, 33).await, &log);
    // Reading before what it delivered (a replay) looks messages up by sequence.
    let (replayer, delivery) = source.durable("replayer");
    let mut consumer =
        es_core::Consumer::new("replayer", replayer.clone(), delivery, RecordAll::default());
    consumer.catch_up().await.expect("caught up");
    let page = replayer
        .read_log(99, 1, &LogFilter::all().before(101))
        .await
        .expect("random read");
    assert_eq!(page.events.len(), 1);
    assert_eq!(canonical(&page.events[0]), canonical(&log[99]));
    broker.cleanup().await;
}

#[derive(Default)]
struct RecordAll(Vec<u64>);

impl es_core::EventHandler for RecordAll {
    type Event = es_core::AnyEvent;
    async fn handle(
        &mut self,
        _: &mut (),
        event: &es_core::Envelope<es_core::AnyEvent>,
    ) -> Result<(), es_core::BoxError> {
        self.0.push(event.position());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_at_once_and_a_stream_that_lost_its_data_publish_nothing_twice() {
    scenarios::two_relays_and_lost_data(&broker("two_relays").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_other_settings_is_refused_with_the_differences() {
    let broker = broker("settings").await;
    let store = MemoryStore::new();
    write(&store, 1, 3, Duration::ZERO).await;
    scenarios::relay_all(&broker, &store).await;
    let mut other = broker.clone();
    other.config.stream = StreamSettings {
        duplicate_window: Duration::from_secs(30),
        ..broker.settings().clone()
    };
    let error = es_nats::JetStreamRelay::new(nats_url(), other.config)
        .last_published()
        .await
        .expect_err("settings differ");
    assert!(matches!(error, es_core::Error::Invalid(_)), "{error}");
    assert!(error.to_string().contains("duplicate window"), "{error}");
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_follows_live_appends_woken_by_head_announcements() {
    let broker = broker("live").await;
    let store = MemoryStore::new();
    let relay = broker.relay("relay", store.clone()).spawn();
    write(&store, 1, 1, Duration::ZERO).await;
    relay.wait_for(1, WAIT).await.expect("the stream exists");
    let source = JetStreamSource::new(nats_url(), broker.settings().clone());
    let (log, _) = source.durable("follower");
    let mut events = log.subscribe(0, LogFilter::all());
    write(&store, 3, 20, Duration::from_millis(1)).await;
    follow(&mut events, &log_of(&store).await, WAIT).await;
    // A view over the broker rebuilt at start, with in-process checkpoints, works too.
    let (log, _) = source.durable("view");
    let mut view = es_core::Consumer::new(
        "view",
        log,
        AtLeastOnce::new(LocalCheckpoints::new()),
        RecordAll::default(),
    );
    view.catch_up().await.expect("view");
    assert_eq!(
        view.handler().0.len() as u64,
        store.head_position().await.expect("head")
    );
    relay.shutdown().await.expect("relay stops");
    broker.cleanup().await;
}
