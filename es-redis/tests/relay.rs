//! The relay against the local Redis: layouts, fields, PUBLISH, restarts, a second relay,
//! a broker that lost its data, trimming, and the source reading it all back.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use es_core::{GlobalLog, GlobalLogExt, LogFilter, MemoryStore};
use es_redis::{Layout, RedisLog, RedisOptions, RedisRelayConfig};
use futures::StreamExt;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layout_holds_each_event_once_with_all_its_fields() {
    for layout in [Layout::All, Layout::PerType, Layout::Both] {
        let config = RedisRelayConfig {
            chunk_size: 7,
            batch_size: 50,
            ..RedisRelayConfig::default().layout(layout)
        };
        let mut broker = RedisBroker::new("layouts", config).await;
        let keys = broker.keys().clone();
        let prefix = keys.prefix().to_owned();
        broker.config.publish = Some(prefix.clone());
        let store = MemoryStore::new();
        write(&store, 4, 60, Duration::ZERO).await;
        let log = log_of(&store).await;
        for aggregate_type in TYPES {
            assert!(
                log.iter()
                    .any(|e| e.stream.aggregate_type == aggregate_type)
            );
        }

        // Subscribe before relaying, to see the PUBLISH messages.
        let client = redis::Client::open(redis_url()).expect("url");
        let mut pubsub = client.get_async_pubsub().await.expect("pubsub connection");
        pubsub
            .psubscribe(format!("{prefix}*"))
            .await
            .expect("psubscribe");

        scenarios::relay_all(&broker, &store).await;
        // A second run (a restart) finds everything published and writes nothing.
        scenarios::relay_all(&broker, &store).await;
        assert_eq!(broker.last_published().await, log.len() as u64);

        broker.assert_holds(&log).await;
        if layout == Layout::All {
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
            assert_same_events(&read_in_pages(&source, 33).await, &log);
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
        broker.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_at_once_and_a_broker_that_lost_its_data_publish_nothing_twice() {
    let config = RedisRelayConfig {
        chunk_size: 10,
        batch_size: 40,
        ..RedisRelayConfig::default().layout(Layout::Both)
    };
    scenarios::two_relays_and_lost_data(&RedisBroker::new("two-relays", config).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_behind_the_trimmed_retention_is_told_instead_of_skipping() {
    let config = RedisRelayConfig {
        batch_size: 100,
        ..RedisRelayConfig::default().max_len(100)
    };
    let broker = RedisBroker::new("trim", config).await;
    let keys = broker.keys();
    let store = MemoryStore::new();
    write(&store, 1, 1_000, Duration::ZERO).await;
    scenarios::relay_all(&broker, &store).await;
    let held = stream_entries(&keys.all()).await;
    assert!(held.len() < 1_000, "MAXLEN ~ trims ({} held)", held.len());
    assert_eq!(broker.last_published().await, 1_000);

    let source = RedisLog::new(redis_url(), keys).expect("source");
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
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_follows_live_appends_woken_by_blocking_reads() {
    let broker = RedisBroker::new("live", RedisRelayConfig::default()).await;
    let store = MemoryStore::new();
    let relay = broker.relay("relay", store.clone()).spawn();
    let source = RedisLog::new(RedisOptions::new(redis_url()), broker.keys()).expect("source");
    let mut events = source.subscribe(0, LogFilter::all());
    write(&store, 3, 20, Duration::from_millis(1)).await;
    follow(&mut events, &log_of(&store).await, WAIT).await;
    relay.shutdown().await.expect("relay stops");
    broker.cleanup().await;
}

/// A burst of entries wakes followers a few times, not once per entry: the wake-up task used
/// to step through the stream with one `XREAD COUNT 1` round trip per entry, signalling each
/// time, and every signal sent every idle follower to read nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_entries_wakes_followers_a_few_times_not_once_per_entry() {
    let config = RedisRelayConfig {
        chunk_size: 1_000,
        batch_size: 5_000,
        ..RedisRelayConfig::default()
    };
    let broker = RedisBroker::new("burst", config).await;
    let name = format!("es-redis-test-burst-{}", unique_suffix());
    let options = RedisOptions::new(redis_url()).client_name(&name);
    // No polling: every return of `wait` is a signal.
    let source = RedisLog::new(options, broker.keys())
        .expect("source")
        .poll_interval(Duration::from_secs(3_600));
    wait_until_blocked(&name).await;
    let mut wakeup = source.wakeup();
    let signals = Arc::new(AtomicUsize::new(0));
    let counter = tokio::spawn({
        let signals = signals.clone();
        async move {
            loop {
                wakeup.wait().await;
                signals.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let store = MemoryStore::new();
    write(&store, 4, 5_000, Duration::ZERO).await;
    scenarios::relay_all(&broker, &store).await;
    // Blocked again: the task has seen the last entry (an XREAD with entries after its id
    // returns at once), and signalled for it.
    wait_until_blocked(&name).await;
    let signals = signals.load(Ordering::SeqCst);
    counter.abort();
    eprintln!("{signals} signals for 20,000 entries");
    assert!(signals > 0, "the burst was signalled");
    // 20 script calls wrote the 20,000 entries, each waking the task at most twice (its
    // XREAD returns the first entry, the next XREVRANGE the newest); 100 leaves room.
    assert!(signals <= 100, "{signals} signals for 20,000 entries");
    broker.cleanup().await;
}

/// An entry written while the wake-up task is reconnecting, before it has seen any entry,
/// still wakes followers: the task used to block on `$` ("entries from now on") and so
/// missed it, leaving followers to the next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_written_while_the_wake_up_connection_is_down_still_wakes_followers() {
    let broker = RedisBroker::new("reconnect", RedisRelayConfig::default()).await;
    let name = format!("es-redis-test-reconnect-{}", unique_suffix());
    let options = RedisOptions::new(redis_url()).client_name(&name);
    let source = RedisLog::new(options, broker.keys())
        .expect("source")
        .poll_interval(Duration::from_secs(3_600));
    wait_until_blocked(&name).await;
    let mut wakeup = source.wakeup();
    // The server closes the wake-up connection (the only one named so: nothing was read);
    // the task signals the failure, then waits before it reconnects.
    assert_eq!(kill_clients(&name).await, 1);
    tokio::time::timeout(WAIT, wakeup.wait())
        .await
        .expect("the failure is signalled");
    // Meanwhile, an entry.
    redis::cmd("XADD")
        .arg(broker.keys().all())
        .arg("1-0")
        .arg("field")
        .arg("value")
        .exec_async(&mut admin().await)
        .await
        .expect("XADD");
    tokio::time::timeout(WAIT, wakeup.wait())
        .await
        .expect("the entry written while disconnected wakes followers");
    broker.cleanup().await;
}
