//! The store-conformance suite: one set of checks that every [`EventStore`] runs against
//! itself, organised like the store traits:
//!
//! | module | what it checks |
//! |---|---|
//! | [`streams`] | appends, optimistic concurrency, idempotent retries, stream reads, `read_event` |
//! | [`snapshots`] | which snapshot is kept, `load_stream`, a snapshot newer than its stream |
//! | [`log`] | the global log: pages, `scanned_to`, filters, the head, followers, subscriptions |
//! | [`checkpoints`] | consumer checkpoints and parked events |
//! | [`limits`] | the input rules of [`Limits`](crate::Limits), the same on every store |
//! | [`values`] | payloads and states come back exactly as they went in |
//! | [`cancellation`] | dropped futures leave appends whole or absent |
//! | [`consumers`] | the consumer runtime over the store: delivery, parked events, waits, leases |
//!
//! Each case is a public async function taking a fresh, empty store (and, for the cases that
//! model a second process, a second handle onto the same store). The suite assumes the
//! store enforces [`Limits::default`](crate::Limits::default). Run every case with
//! [`conformance_tests!`](crate::conformance_tests), which generates one test per case:
//!
//! ```ignore
//! async fn fresh_store() -> MyStore { /* an empty store */ }
//! // Second handles are clones of the first:
//! es_core::conformance_tests!(fresh_store().await);
//! // Or: a second handle as another process would open it (its own connections):
//! es_core::conformance_tests!(fresh_store().await, other_handle(store) = reopen(&store).await);
//! ```
//!
//! Randomised cases draw from a seeded generator; the seed is printed, and setting
//! `CONFORMANCE_SEED` replays a run.

use std::future::Future;
use std::time::Duration;

use serde_json::value::{RawValue, to_raw_value};
use uuid::Uuid;

use crate::envelope::{NewEvent, RecordedEvent, StreamId};
use crate::error::Error;
use crate::json::same_json;
use crate::log::{GlobalLog, LogFilter};
use crate::metadata::Metadata;
use crate::store::{EventStore, ExpectedVersion, StreamQuery};

pub mod cancellation;
pub mod checkpoints;
pub mod consumers;
pub mod limits;
pub mod log;
pub mod snapshots;
pub mod streams;
pub mod values;

/// Generates one `#[tokio::test]` per conformance case, each on the store `$fresh` evaluates
/// to (the expression may `.await`).
///
/// Cases that model a second process get a second handle onto the same store: by default a
/// clone of the first; with `other_handle(store) = expr`, the value of `expr`, evaluated with
/// `store` bound to the first handle (for example a new connection pool to the same
/// database). The calling crate needs tokio with `macros` and `rt-multi-thread`.
///
/// A case that fails on every store for a known bug outside the stores is generated with
/// `#[ignore = "..."]` naming the bug, so that `cargo test -- --ignored` shows whether it is
/// fixed.
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:expr $(,)?) => {
        $crate::conformance_tests!($fresh, other_handle(store) = ::core::clone::Clone::clone(&store));
    };
    ($fresh:expr, other_handle($store:ident) = $other:expr $(,)?) => {
        $crate::conformance_tests!(@one $fresh;
            streams::append_to_new_stream_starts_at_version_one,
            streams::versions_are_gapless_across_appends,
            streams::no_stream_conflicts_when_stream_exists,
            streams::stream_exists_conflicts_when_stream_is_missing,
            streams::exact_version_mismatch_reports_actual_and_writes_nothing,
            streams::any_version_always_appends,
            streams::batch_is_atomic,
            streams::empty_append_checks_expectation,
            streams::large_batches_keep_order,
            streams::idempotent_retry_returns_original_events,
            streams::retry_after_later_appends_returns_the_first_outcome,
            streams::retry_differing_in_name_or_schema_version_is_a_duplicate,
            streams::retry_differing_only_in_metadata_returns_the_stored_metadata,
            streams::same_id_with_other_content_is_rejected,
            streams::partially_replayed_batch_is_rejected,
            streams::streams_are_isolated_by_type_and_id,
            streams::stream_ids_are_compared_exactly,
            streams::read_stream_by_version_range,
            streams::inverted_and_extreme_ranges_read_nothing_or_everything,
            streams::read_stream_by_event_names,
            streams::read_stream_until_time,
            streams::read_event_finds_stored_events_only,
            streams::contested_stream_has_one_winner_per_round,
            streams::contested_stream_has_one_winner_per_version,
            snapshots::snapshots_keep_the_newest,
            snapshots::snapshot_ties_replace,
            snapshots::snapshots_round_trip_every_field,
            snapshots::load_stream_uses_matching_snapshot,
            snapshots::snapshot_newer_than_its_stream_makes_the_repository_replay,
            log::read_log_pages_have_exact_sizes,
            log::read_log_with_limit_zero_or_past_the_head_is_empty,
            log::stream_all_from_the_middle_yields_exactly_the_rest,
            log::filters_select_in_the_store_and_pin_scanned_to,
            log::empty_filter_lists_select_nothing_and_skip_nothing,
            log::head_position_tracks_the_log,
            log::head_never_passes_an_unreadable_event,
            log::concurrent_writers_keep_the_global_log_complete,
            log::follower_during_concurrent_writes_sees_every_event_once,
            log::filtered_subscription_never_skips,
            checkpoints::checkpoints_round_trip,
            checkpoints::checkpoint_names_and_positions_are_checked,
            checkpoints::parked_events_round_trip,
            limits::numeric_limits_are_refused_before_any_write,
            limits::reads_beyond_the_storable_range_find_nothing,
            limits::stream_ids_and_names_at_and_beyond_their_limits,
            limits::nul_is_refused_everywhere,
            limits::json_the_store_cannot_keep_is_refused,
            limits::oversize_documents_are_refused,
            limits::batch_limits_and_duplicate_ids,
            values::values_round_trip_exactly,
            values::retries_of_json_the_store_may_normalise_are_identical,
            values::state_from_a_snapshot_equals_a_full_replay,
            cancellation::dropped_appends_commit_whole_or_not_at_all,
            consumers::at_least_once_survives_a_drop_between_handling_and_checkpoint,
            consumers::a_parked_event_is_kept_and_the_consumer_goes_on,
            consumers::wait_for_returns_once_the_position_is_applied,
            consumers::at_least_once_saves_the_checkpoint_when_caught_up_and_at_shutdown,
        );
        $crate::conformance_tests!(@two $fresh; $store; $other;
            streams::concurrent_identical_retries_converge,
            log::subscription_resumes_from_a_saved_position,
            consumers::two_runners_share_one_lease,
        );
    };
    (@one $fresh:expr; $($(#[$meta:meta])* $module:ident :: $case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            $(#[$meta])*
            async fn $case() {
                let store = $fresh;
                $crate::testing::conformance::$module::$case(store).await;
            }
        )*
    };
    (@two $fresh:expr; $store:ident; $other:expr; $($(#[$meta:meta])* $module:ident :: $case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            $(#[$meta])*
            async fn $case() {
                let $store = $fresh;
                let other = $other;
                $crate::testing::conformance::$module::$case($store, other).await;
            }
        )*
    };
}

/// The longest any single wait in the suite may take before the case fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub(crate) fn payload(value: serde_json::Value) -> Box<RawValue> {
    to_raw_value(&value).expect("a serde_json::Value always encodes")
}

/// A payload from JSON text, exactly as written.
pub(crate) fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).expect("test JSON is valid syntax")
}

/// A new event named `name` with payload `{"n": n}` and a fresh id.
pub fn event(name: &str, n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_name: name.to_owned(),
        schema_version: 1,
        payload: payload(serde_json::json!({ "n": n })),
        metadata: Metadata::by_user("conformance"),
    }
}

/// `count` events named `name`, payloads numbered from `first`.
pub fn events(name: &str, first: u64, count: u64) -> Vec<NewEvent> {
    (first..first + count).map(|n| event(name, n)).collect()
}

/// A stream of type `Conformance` with a unique id starting with `id`.
pub(crate) fn stream(id: &str) -> StreamId {
    StreamId::new("Conformance", format!("{id}-{}", Uuid::now_v7()))
}

pub(crate) fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

pub(crate) fn ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

pub(crate) fn new_ids(events: &[NewEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

pub(crate) async fn read<S: EventStore>(store: &S, stream: &StreamId) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, &StreamQuery::all())
        .await
        .expect("read_stream")
}

/// The whole global log after `after`, read page by page, continuing after `scanned_to`.
pub(crate) async fn read_log_all<L: GlobalLog>(
    log: &L,
    after: u64,
    filter: &LogFilter,
) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut cursor = after;
    loop {
        let page = log.read_log(cursor, 1000, filter).await.expect("read_log");
        assert!(page.scanned_to >= cursor, "scanned_to never goes back");
        if page.events.is_empty() {
            return events;
        }
        cursor = page.scanned_to;
        events.extend(page.events);
    }
}

/// Waits for `future`, failing the case after [`PATIENCE`] instead of hanging.
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: nothing after {PATIENCE:?}"),
    }
}

/// Asserts an optimistic-concurrency conflict with exactly these versions.
#[track_caller]
pub(crate) fn assert_conflict<T: std::fmt::Debug>(
    result: Result<T, Error>,
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: u64,
) {
    match result {
        Err(Error::Conflict {
            stream: s,
            expected: e,
            actual: a,
        }) => assert_eq!(
            (&s, e, a),
            (stream, expected, actual),
            "a conflict reports the stream, the expected and the actual version"
        ),
        other => panic!("expected a conflict at {actual}, got {other:?}"),
    }
}

/// Asserts [`Error::Invalid`].
#[track_caller]
pub(crate) fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Error>, what: &str) {
    match result {
        Err(Error::Invalid(_)) => {}
        other => panic!("{what}: expected Error::Invalid, got {other:?}"),
    }
}

/// Asserts [`Error::DuplicateEventId`] naming `event_id` stored in `stream`.
#[track_caller]
pub(crate) fn assert_duplicate<T: std::fmt::Debug>(
    result: Result<T, Error>,
    event_id: Uuid,
    stream: &StreamId,
) {
    match result {
        Err(Error::DuplicateEventId {
            event_id: id,
            stream: s,
        }) => assert_eq!(
            (id, &s),
            (event_id, stream),
            "DuplicateEventId names the reused id and where it is stored"
        ),
        other => panic!("expected DuplicateEventId for {event_id}, got {other:?}"),
    }
}

/// Asserts that two records of one stored event agree on every field (payloads by JSON
/// value, since a store may hand back the text it was given or its own rendering).
#[track_caller]
pub(crate) fn assert_same_record(got: &RecordedEvent, want: &RecordedEvent, what: &str) {
    assert_eq!(
        (
            got.event_id,
            &got.stream,
            got.version,
            got.position,
            &got.event_name,
            got.schema_version,
            &got.metadata,
            got.recorded_at,
        ),
        (
            want.event_id,
            &want.stream,
            want.version,
            want.position,
            &want.event_name,
            want.schema_version,
            &want.metadata,
            want.recorded_at,
        ),
        "{what}: the envelope differs"
    );
    assert!(
        same_json(got.payload.get(), want.payload.get()),
        "{what}: payload {} differs from {}",
        got.payload.get(),
        want.payload.get()
    );
}

/// Asserts that a recorded event holds what was appended (payload by JSON value).
#[track_caller]
pub(crate) fn assert_holds(got: &RecordedEvent, sent: &NewEvent, stream: &StreamId, what: &str) {
    assert_eq!(
        (
            got.event_id,
            &got.stream,
            &got.event_name,
            got.schema_version,
            &got.metadata
        ),
        (
            sent.event_id,
            stream,
            &sent.event_name,
            sent.schema_version,
            &sent.metadata
        ),
        "{what}: the stored envelope differs from what was appended"
    );
    assert!(
        same_json(got.payload.get(), sent.payload.get()),
        "{what}: stored payload {} differs from the appended {}",
        got.payload.get(),
        sent.payload.get()
    );
}

/// A small, seeded pseudo-random generator (SplitMix64): reproducible runs without a
/// dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `CONFORMANCE_SEED` if set, otherwise from the clock; the seed
    /// is printed so that a failing run can be replayed.
    pub fn for_case(case: &str) -> Self {
        let seed = std::env::var("CONFORMANCE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let clock = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                clock ^ (Uuid::now_v7().as_u128() as u64)
            });
        eprintln!("{case}: CONFORMANCE_SEED={seed}");
        Self(seed)
    }

    /// A generator with a fixed seed.
    pub fn seeded(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One of `items` (not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
