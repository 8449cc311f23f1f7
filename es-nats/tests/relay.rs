//! The relay against the local NATS: the stream's messages, restarts, a second relay, a
//! stream that lost its data, stream settings checked, and the source reading it back.

mod support;

use std::time::Duration;

use es_core::{AtLeastOnce, GlobalLog, GlobalLogExt, LocalCheckpoints, LogFilter, MemoryStore};
use es_nats::{JetStreamRelay, JetStreamRelayConfig, JetStreamSource, StreamSettings};
use futures::StreamExt;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn config(stream: &StreamSettings) -> JetStreamRelayConfig {
    JetStreamRelayConfig {
        batch_size: 50,
        max_in_flight: 16,
        ..JetStreamRelayConfig::new(stream.clone())
    }
}

async fn relay_all(relay: &JetStreamRelay, store: &MemoryStore) {
    let mut consumer = relay.consumer("relay", store.clone());
    let progress = consumer.catch_up().await.expect("relay catches up");
    assert_eq!(
        progress.position,
        store.head_position().await.expect("head")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_holds_each_event_once_with_its_subject_and_headers() {
    let _ = admin().await;
    let settings = unique_stream("layout");
    let store = MemoryStore::new();
    write(&store, 4, 60, Duration::ZERO).await;
    let log = log_of(&store).await;
    let relay = JetStreamRelay::new(nats_url(), config(&settings));
    relay_all(&relay, &store).await;
    // A restart finds everything published and publishes nothing.
    let again = JetStreamRelay::new(nats_url(), config(&settings));
    relay_all(&again, &store).await;
    assert_eq!(
        again.last_published().await.expect("last"),
        log.len() as u64
    );
    assert_stream_holds(&settings, &log).await;

    // The source reads it all back, exactly, through a durable consumer.
    let source = JetStreamSource::new(nats_url(), settings.clone());
    let (reader, _) = source.durable("reader");
    assert_eq!(
        reader.head_position().await.expect("head"),
        log.len() as u64
    );
    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = reader
            .read_log(after, 33, &LogFilter::all())
            .await
            .expect("read");
        if page.events.is_empty() {
            assert_eq!(page.scanned_to, after);
            break;
        }
        after = page.scanned_to;
        read.extend(page.events);
    }
    assert_eq!(
        read.iter().map(canonical).collect::<Vec<_>>(),
        log.iter().map(canonical).collect::<Vec<_>>()
    );
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
    cleanup(&settings).await;
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
    let _ = admin().await;
    let settings = unique_stream("two_relays");
    let store = MemoryStore::new();
    let first = JetStreamRelay::new(nats_url(), config(&settings))
        .consumer("a", store.clone())
        .spawn();
    let second = JetStreamRelay::new(nats_url(), config(&settings))
        .consumer("b", store.clone())
        .spawn();
    write(&store, 8, 100, Duration::from_micros(200)).await;
    let head = store.head_position().await.expect("head");
    first
        .wait_for(head, WAIT)
        .await
        .expect("first relay catches up");
    second
        .wait_for(head, WAIT)
        .await
        .expect("second relay catches up");
    assert_stream_holds(&settings, &log_of(&store).await).await;

    // The stream is lost (deleted, as a server that lost its storage would): the next batch
    // is refused, and the relays create it again and publish the whole log again, once.
    let js = admin().await;
    js.delete_stream(&settings.name)
        .await
        .expect("delete the stream");
    write(&store, 2, 10, Duration::ZERO).await;
    let head = store.head_position().await.expect("head");
    first
        .wait_for(head, WAIT)
        .await
        .expect("first relay refills the stream");
    second
        .wait_for(head, WAIT)
        .await
        .expect("second relay goes on");
    let log = log_of(&store).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while messages(&settings).await.len() < log.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_stream_holds(&settings, &log).await;
    first.shutdown().await.expect("clean stop");
    second.shutdown().await.expect("clean stop");
    cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_other_settings_is_refused_with_the_differences() {
    let _ = admin().await;
    let settings = unique_stream("settings");
    let store = MemoryStore::new();
    write(&store, 1, 3, Duration::ZERO).await;
    relay_all(&JetStreamRelay::new(nats_url(), config(&settings)), &store).await;
    let other = StreamSettings {
        duplicate_window: Duration::from_secs(30),
        ..settings.clone()
    };
    let error = JetStreamRelay::new(nats_url(), config(&other))
        .last_published()
        .await
        .expect_err("settings differ");
    assert!(matches!(error, es_core::Error::Invalid(_)), "{error}");
    assert!(error.to_string().contains("duplicate window"), "{error}");
    cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_follows_live_appends_woken_by_head_announcements() {
    let _ = admin().await;
    let settings = unique_stream("live");
    let store = MemoryStore::new();
    let relay = JetStreamRelay::new(nats_url(), config(&settings))
        .consumer("relay", store.clone())
        .spawn();
    write(&store, 1, 1, Duration::ZERO).await;
    relay.wait_for(1, WAIT).await.expect("the stream exists");
    let source = JetStreamSource::new(nats_url(), settings.clone());
    let (log, _) = source.durable("follower");
    let mut follow = log.subscribe(0, LogFilter::all());
    write(&store, 3, 20, Duration::from_millis(1)).await;
    for expected in &log_of(&store).await {
        let event = tokio::time::timeout(WAIT, follow.next())
            .await
            .expect("the follower gets every event")
            .expect("stream open")
            .expect("no read error");
        assert_eq!(canonical(&event), canonical(expected));
    }
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
    cleanup(&settings).await;
}
