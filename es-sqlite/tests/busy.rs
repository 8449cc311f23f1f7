//! Another connection (as another process would) holding the file's write lock: writes
//! wait for it and then succeed; past the store's patience they fail as `Backend` with
//! nothing written; reads are never blocked.

mod common;

use std::time::Duration;

use common::{noise, temporary};
use es_core::{
    Error, ExpectedVersion, GlobalLog, LogFilter, Metadata, NewEvent, StreamId, StreamStore,
};
use es_sqlite::{SqliteStore, StoreOptions};

fn event() -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_name: "E".into(),
        schema_version: 1,
        payload: serde_json::value::to_raw_value(&serde_json::json!({})).expect("json"),
        metadata: Metadata::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waits_for_another_processs_lock_and_reads_go_on() {
    let store = temporary().await;
    noise(&store).await;
    let other = SqliteStore::open(store.path()).await.expect("second store");
    let holder = other
        .begin()
        .await
        .expect("the other store takes the write lock");
    let stream = StreamId::new("Waiting", "w");
    let append = {
        let store = store.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            store
                .append(&stream, ExpectedVersion::NoStream, vec![event()])
                .await
        })
    };
    // Reads are not blocked by the writer (WAL), and see only what is committed.
    for _ in 0..10 {
        let page = store
            .read_log(0, 100, &LogFilter::all())
            .await
            .expect("read while locked");
        assert_eq!((page.events.len(), page.scanned_to), (1, 1));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!append.is_finished(), "the append waits for the lock");
    holder.rollback().await.expect("release");
    let recorded = append
        .await
        .expect("task")
        .expect("the append succeeds once the lock is free");
    assert_eq!((recorded[0].version, recorded[0].position), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_the_patience_is_a_backend_error_and_nothing_is_written() {
    let store =
        SqliteStore::temporary_with(StoreOptions::new().lock_patience(Duration::from_millis(150)))
            .await
            .expect("store");
    let other = SqliteStore::open(store.path()).await.expect("second store");
    let holder = other.begin().await.expect("take the write lock");
    let stream = StreamId::new("Waiting", "w");
    let started = std::time::Instant::now();
    let result = store
        .append(&stream, ExpectedVersion::Any, vec![event()])
        .await;
    match result {
        Err(Error::Backend(source)) => {
            let message = source.to_string();
            assert!(
                message.contains("stayed locked") && message.contains("nothing was written"),
                "{message}"
            );
        }
        other => panic!("expected Backend, got {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "it waited its patience"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "and not much longer: {:?}",
        started.elapsed()
    );
    holder.rollback().await.expect("release");
    assert_eq!(store.stream_version(&stream).await.expect("version"), 0);
    store
        .append(&stream, ExpectedVersion::Any, vec![event()])
        .await
        .expect("the store works once the lock is free");
}
