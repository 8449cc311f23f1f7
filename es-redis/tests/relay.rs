//! The relay against the local Redis: layouts, fields, PUBLISH, restarts, a second relay,
//! a broker that lost its data, trimming, and the source reading it all back.

mod support;

use std::time::Duration;

use es_core::{GlobalLog, GlobalLogExt, LogFilter, MemoryStore};
use es_redis::{Keys, Layout, RedisLog, RedisOptions, RedisRelay, RedisRelayConfig};
use futures::StreamExt;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

async fn relay_all(relay: &RedisRelay, store: &MemoryStore) {
    let mut consumer = relay.consumer("relay", store.clone());
    let progress = consumer.catch_up().await.expect("relay catches up");
    assert_eq!(
        progress.position,
        store.head_position().await.expect("head")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layout_holds_each_event_once_with_all_its_fields() {
    for layout in [Layout::All, Layout::PerType, Layout::Both] {
        let prefix = unique_prefix("layouts");
        let keys = Keys::new(&prefix);
        let store = MemoryStore::new();
        write(&store, 4, 60, Duration::ZERO).await;
        let log = log_of(&store).await;

        // Subscribe before relaying, to see the PUBLISH messages.
        let client = redis::Client::open(redis_url()).expect("url");
        let mut pubsub = client.get_async_pubsub().await.expect("pubsub connection");
        pubsub
            .psubscribe(format!("{prefix}*"))
            .await
            .expect("psubscribe");

        let config = RedisRelayConfig::new(keys.clone())
            .layout(layout)
            .publish(&prefix);
        let relay = RedisRelay::new(
            redis_url(),
            RedisRelayConfig {
                chunk_size: 7,
                batch_size: 50,
                ..config
            },
        )
        .expect("relay");
        relay_all(&relay, &store).await;
        // A second run (a restart) finds everything published and writes nothing.
        let again = RedisRelay::new(redis_url(), relay.config().clone()).expect("relay");
        relay_all(&again, &store).await;
        assert_eq!(
            again.last_published().await.expect("last"),
            log.len() as u64
        );

        if layout != Layout::PerType {
            assert_stream_holds(&keys.all(), &log).await;
        }
        if layout != Layout::All {
            for aggregate_type in ["Account", "Transfer", "Odd type.with*chars>"] {
                let of_type: Vec<_> = log
                    .iter()
                    .filter(|e| e.stream.aggregate_type == aggregate_type)
                    .cloned()
                    .collect();
                assert!(!of_type.is_empty());
                assert_stream_holds(&keys.per_type(aggregate_type), &of_type).await;
            }
        } else {
            assert!(stream_entries(&keys.per_type("Account")).await.is_empty());
        }

        // One PUBLISH per event, in order, with the original system's JSON.
        let mut messages = pubsub.on_message();
        for event in &log {
            let message = tokio::time::timeout(WAIT, messages.next())
                .await
                .expect("a PUBLISH for every event")
                .expect("pubsub open");
            assert_eq!(
                message.get_channel_name(),
                format!("{prefix}{}", event.stream.aggregate_type)
            );
            let json: serde_json::Value =
                serde_json::from_slice(message.get_payload_bytes()).expect("JSON");
            assert_eq!(json["id"], event.event_id.to_string());
            assert_eq!(json["aggregateId"], event.stream.aggregate_id.as_str());
            assert_eq!(json["aggregateType"], event.stream.aggregate_type.as_str());
            assert_eq!(json["eventType"], event.event_name.as_str());
            assert_eq!(json["version"], event.version);
            assert_eq!(json["position"], event.position);
            assert_eq!(
                json["metadata"]["user_id"],
                event.metadata.user_id.clone().expect("user")
            );
            let data: serde_json::Value =
                serde_json::from_str(event.payload.get()).expect("payload");
            assert_eq!(json["data"], data);
        }
        drop(messages);

        // The source reads it all back, exactly, in pages.
        if layout != Layout::PerType {
            let source = RedisLog::new(redis_url(), &keys).expect("source");
            assert_eq!(
                source.head_position().await.expect("head"),
                log.len() as u64
            );
            let mut read = Vec::new();
            let mut after = 0;
            loop {
                let page = source
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
            // Filters apply, and scanned_to still covers what was skipped.
            let page = source
                .read_log(0, 1_000, &LogFilter::all().aggregate_types(["Transfer"]))
                .await
                .expect("filtered read");
            assert!(
                page.events
                    .iter()
                    .all(|e| e.stream.aggregate_type == "Transfer")
            );
            assert_eq!(page.scanned_to, log.len() as u64);
            assert!(
                source
                    .read_log(5, 0, &LogFilter::all())
                    .await
                    .expect("empty")
                    .events
                    .is_empty()
            );
        }
        cleanup(&prefix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_at_once_and_a_broker_that_lost_its_data_publish_nothing_twice() {
    let prefix = unique_prefix("two-relays");
    let keys = Keys::new(&prefix);
    let store = MemoryStore::new();
    let config = RedisRelayConfig {
        chunk_size: 10,
        batch_size: 40,
        ..RedisRelayConfig::new(keys.clone()).layout(Layout::Both)
    };
    let first = RedisRelay::new(redis_url(), config.clone())
        .expect("relay")
        .consumer("a", store.clone())
        .spawn();
    let second = RedisRelay::new(redis_url(), config.clone())
        .expect("relay")
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
    let log = log_of(&store).await;
    assert_stream_holds(&keys.all(), &log).await;

    // Redis loses the whole-log stream (a restart without persistence): the next batch finds
    // the broker behind, and the relay publishes everything again, once.
    let mut admin = admin().await;
    redis::cmd("DEL")
        .arg(keys.all())
        .exec_async(&mut admin)
        .await
        .expect("DEL");
    write(&store, 2, 10, Duration::ZERO).await;
    let head = store.head_position().await.expect("head");
    first
        .wait_for(head, WAIT)
        .await
        .expect("first relay refills the broker");
    second
        .wait_for(head, WAIT)
        .await
        .expect("second relay goes on");
    let log = log_of(&store).await;
    // Both relays may refill concurrently; the stream still ends up exactly the log.
    let deadline = tokio::time::Instant::now() + WAIT;
    while stream_entries(&keys.all()).await.len() < log.len()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_stream_holds(&keys.all(), &log).await;
    first.shutdown().await.expect("first relay stops cleanly");
    second.shutdown().await.expect("second relay stops cleanly");
    cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_behind_the_trimmed_retention_is_told_instead_of_skipping() {
    let prefix = unique_prefix("trim");
    let keys = Keys::new(&prefix);
    let store = MemoryStore::new();
    write(&store, 1, 1_000, Duration::ZERO).await;
    let relay = RedisRelay::new(
        redis_url(),
        RedisRelayConfig {
            batch_size: 100,
            ..RedisRelayConfig::new(keys.clone()).max_len(100)
        },
    )
    .expect("relay");
    relay_all(&relay, &store).await;
    let held = stream_entries(&keys.all()).await;
    assert!(held.len() < 1_000, "MAXLEN ~ trims ({} held)", held.len());
    assert_eq!(relay.last_published().await.expect("last"), 1_000);

    let source = RedisLog::new(redis_url(), &keys).expect("source");
    let error = source
        .read_log(0, 10, &LogFilter::all())
        .await
        .expect_err("trimmed");
    assert!(error.to_string().contains("trimmed or deleted"), "{error}");
    // After the trimmed range, reads work.
    let page = source
        .read_log(999, 10, &LogFilter::all())
        .await
        .expect("tail");
    assert_eq!(page.events.len(), 1);
    cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_follows_live_appends_woken_by_blocking_reads() {
    let prefix = unique_prefix("live");
    let keys = Keys::new(&prefix);
    let store = MemoryStore::new();
    let relay = RedisRelay::new(redis_url(), RedisRelayConfig::new(keys.clone()))
        .expect("relay")
        .consumer("relay", store.clone())
        .spawn();
    let source = RedisLog::new(RedisOptions::new(redis_url()), &keys).expect("source");
    let mut follow = source.subscribe(0, LogFilter::all());
    write(&store, 3, 20, Duration::from_millis(1)).await;
    let log = log_of(&store).await;
    for expected in &log {
        let event = tokio::time::timeout(WAIT, follow.next())
            .await
            .expect("the follower gets every event")
            .expect("stream open")
            .expect("no read error");
        assert_eq!(canonical(&event), canonical(expected));
    }
    relay.shutdown().await.expect("relay stops");
    cleanup(&prefix).await;
}
