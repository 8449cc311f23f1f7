//! In-memory store throughput: append (single and batched), replay of one aggregate, scan of
//! the global log, and whole commands through the repository.
//!
//! Run with `cargo bench -p es-core --bench memory_store`.
#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Account, AccountEvent, Deposited};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use es_core::{
    ExpectedVersion, GlobalLogExt, LogFilter, MemoryStore, Metadata, NewEvent, Repository,
    StreamId, StreamStore,
};
use futures::StreamExt;
use futures::executor::block_on;

const EVENTS: u64 = 10_000;

fn deposits(count: u64) -> Vec<NewEvent> {
    (0..count)
        .map(|i| {
            let event = AccountEvent::from(Deposited {
                amount: i as i64,
                note: "salary".into(),
            });
            NewEvent::from_set(&event, Metadata::by_user("bench")).expect("encode")
        })
        .collect()
}

fn filled_store(streams: u64, per_stream: u64) -> MemoryStore {
    let store = MemoryStore::new();
    for s in 0..streams {
        let stream = StreamId::new("Account", format!("acc-{s}"));
        for chunk in deposits(per_stream).chunks(100) {
            block_on(store.append(&stream, ExpectedVersion::Any, chunk.to_vec())).expect("append");
        }
    }
    store
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory/append");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("1 event per call", |b| {
        b.iter_batched(
            || (MemoryStore::new(), deposits(EVENTS)),
            |(store, events)| {
                let stream = StreamId::new("Account", "acc-1");
                for (version, event) in events.into_iter().enumerate() {
                    block_on(store.append(
                        &stream,
                        ExpectedVersion::Exact(version as u64),
                        vec![event],
                    ))
                    .expect("append");
                }
                store
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("100 events per call", |b| {
        b.iter_batched(
            || (MemoryStore::new(), deposits(EVENTS)),
            |(store, mut events)| {
                let stream = StreamId::new("Account", "acc-1");
                let mut version = 0;
                while !events.is_empty() {
                    let batch: Vec<NewEvent> = events.drain(..100.min(events.len())).collect();
                    version += batch.len() as u64;
                    block_on(store.append(&stream, ExpectedVersion::Any, batch)).expect("append");
                }
                assert_eq!(version, EVENTS);
                store
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory/replay");
    group.throughput(Throughput::Elements(EVENTS));
    let store = filled_store(1, EVENTS);
    // Account snapshots every 5 events when written through the repository; these events were
    // appended directly, so there is no snapshot and load replays all 10,000.
    let accounts = Repository::<Account, _>::new(store.clone());
    group.bench_function("load 10k-event aggregate (decode + apply)", |b| {
        b.iter(|| {
            let loaded = block_on(accounts.load("acc-0")).expect("load");
            assert_eq!(loaded.version, EVENTS);
            loaded
        })
    });
    let scanned = filled_store(10, EVENTS / 10);
    group.bench_function("scan global log (batches of 1000)", |b| {
        b.iter(|| {
            let n = block_on(
                scanned
                    .stream_all(0, 1_000, LogFilter::all())
                    .fold(0u64, |n, e| async move { n + u64::from(e.is_ok()) }),
            );
            assert_eq!(n, EVENTS);
        })
    });
    group.finish();
}

fn commands(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory/command");
    const COMMANDS: u64 = 1_000;
    group.throughput(Throughput::Elements(COMMANDS));
    for (label, cache) in [
        ("load + decide + append", false),
        ("with state cache", true),
    ] {
        group.bench_function(label, |b| {
            b.iter_batched(
                || {
                    let store = MemoryStore::new();
                    let repo = Repository::<Account, _>::new(store);
                    let repo = if cache {
                        repo.with_state_cache(16)
                    } else {
                        repo
                    };
                    block_on(
                        repo.execute("acc-1", Metadata::by_user("bench"), |a| a.open("bench")),
                    )
                    .expect("open");
                    repo
                },
                |repo| {
                    for _ in 0..COMMANDS {
                        block_on(
                            repo.execute("acc-1", Metadata::by_user("bench"), |a| a.deposit(1)),
                        )
                        .expect("deposit");
                    }
                    repo
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, append, replay, commands);
criterion_main!(benches);
