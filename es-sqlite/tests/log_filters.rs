//! The global log's filters, which run in SQL (through the type and name indexes, one branch
//! per value, or along positions for long lists), agree with the memory store's on random
//! filters: the same events and the same `scanned_to`.

use es_core::testing::conformance::Rng;
use es_core::{
    ExpectedVersion, GlobalLog, LogFilter, MemoryStore, Metadata, NewEvent, StreamId, StreamStore,
};
use es_sqlite::SqliteStore;

fn pick_list(rng: &mut Rng, prefix: &str, universe: u64, longest: u64) -> Option<Vec<String>> {
    if rng.chance(30) {
        return None;
    }
    let len = rng.below(longest + 1);
    // Values outside the stored ones, and repeats, on purpose.
    Some(
        (0..len)
            .map(|_| format!("{prefix}{}", rng.below(universe + 3)))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_log_agrees_with_the_memory_store_on_random_filters() {
    const TYPES: u64 = 20;
    const NAMES: u64 = 6;
    let mut rng = Rng::for_case("read_log_agrees_with_the_memory_store_on_random_filters");
    let sqlite = SqliteStore::temporary().await.expect("store");
    let memory = MemoryStore::new();
    let mut total = 0u64;
    while total < 400 {
        let stream = StreamId::new(
            format!("T{}", rng.below(TYPES)),
            format!("s{}", rng.below(5)),
        );
        let batch: Vec<NewEvent> = (0..1 + rng.below(4))
            .map(|n| NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_name: format!("N{}", rng.below(NAMES)),
                schema_version: 1,
                payload: serde_json::value::to_raw_value(&serde_json::json!({ "n": n }))
                    .expect("json"),
                metadata: Metadata::new(),
            })
            .collect();
        total += batch.len() as u64;
        let a = sqlite
            .append(&stream, ExpectedVersion::Any, batch.clone())
            .await
            .expect("sqlite append");
        let b = memory
            .append(&stream, ExpectedVersion::Any, batch)
            .await
            .expect("memory append");
        assert_eq!(a[0].position, b[0].position, "both logs number alike");
    }
    for case in 0..500 {
        let filter = LogFilter {
            aggregate_types: pick_list(&mut rng, "T", TYPES, 24),
            event_names: pick_list(&mut rng, "N", NAMES, 4),
            recorded_from: None,
            before_position: rng
                .chance(30)
                .then(|| *rng.pick(&[0, 1, total / 2, total, total + 3, u64::MAX])),
        };
        let middle = rng.below(total + 1);
        let after = *rng.pick(&[0, 1, middle, middle, total, total + 5, u64::MAX]);
        let limit = *rng.pick(&[0, 1, 2, 3, 7, 50, 1000, usize::MAX]);
        let got = sqlite
            .read_log(after, limit, &filter)
            .await
            .expect("sqlite read");
        let want = memory
            .read_log(after, limit, &filter)
            .await
            .expect("memory read");
        let ids = |events: &[es_core::RecordedEvent]| {
            events
                .iter()
                .map(|e| (e.position, e.event_id))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            (ids(&got.events), got.scanned_to),
            (ids(&want.events), want.scanned_to),
            "case {case}: after {after}, limit {limit}, {filter:?}"
        );
    }
}
