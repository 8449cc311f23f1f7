//! End-to-end tests of the HTTP API on the in-memory store, against a real server bound on
//! 127.0.0.1.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{code, full_scenario, start};
use es_core::{
    CheckpointStore, Error, ExpectedVersion, GlobalLog, LogFilter, LogPage, MemoryStore, NewEvent,
    ParkedEvent, RecordedEvent, Snapshot, SnapshotStore, StreamId, StreamQuery, StreamStore,
    Wakeup,
};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_api_end_to_end() {
    let (api, ledger) = start(MemoryStore::new()).await;
    full_scenario(&api, "").await;
    ledger.check().await.expect("read models consistent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_gets_clear_json_errors() {
    let (api, _) = start(MemoryStore::new()).await;
    api.open("ada", "EUR", 0).await;

    // Who: commands need a user.
    let (status, body) = api
        .post_raw(
            "/accounts/ada/deposits",
            r#"{"amount": 1, "currency": "EUR"}"#,
            &[],
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "missing_user")
    );
    let user = [("x-user-id", "u")];
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            "/accounts/ada/deposits",
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "/accounts/ada/deposits",
            r#"{"amount": 1.5, "currency": "EUR"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "/accounts/ada/deposits",
            r#"{"amount": 1, "currency": "EUR", "colour": "red"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "/accounts/ada/deposits",
            r#"{"amount": 1, "currency": "euro"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_currency",
        ),
        (
            "/accounts/ada/deposits",
            r#"{"amount": 0, "currency": "EUR"}"#.into(),
            StatusCode::BAD_REQUEST,
            "non_positive_amount",
        ),
        (
            "/accounts/ada/deposits",
            r#"{"amount": 1, "currency": "USD"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "currency_mismatch",
        ),
        (
            "/accounts/ada/withdrawals",
            r#"{"amount": 1, "currency": "EUR"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "insufficient_funds",
        ),
        (
            "/accounts/nobody/deposits",
            r#"{"amount": 1, "currency": "EUR"}"#.into(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/accounts/bad%20id/deposits",
            r#"{"amount": 1, "currency": "EUR"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_account_id",
        ),
        (
            "/accounts",
            r#"{"id": "ada", "owner": "Ada", "currency": "EUR"}"#.into(),
            StatusCode::CONFLICT,
            "account_exists",
        ),
        (
            "/accounts",
            r#"{"id": "neg", "owner": "Neg", "currency": "EUR", "overdraft_limit": -1}"#.into(),
            StatusCode::BAD_REQUEST,
            "negative_overdraft_limit",
        ),
        (
            "/transfers",
            r#"{"from": "ada", "to": "ada", "amount": 1, "currency": "EUR"}"#.into(),
            StatusCode::BAD_REQUEST,
            "same_account",
        ),
        (
            "/accounts/ada/unfreeze",
            "{}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "account_not_frozen",
        ),
        (
            "/accounts/ada/deposits",
            format!(
                r#"{{"amount": 1, "currency": "EUR", "reference": "{}"}}"#,
                "x".repeat(17_000)
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (path, body, expected_status, expected_code) in cases {
        let (status, response) = api.post_raw(path, body.clone(), &user).await;
        assert_eq!(
            (status, code(&response)),
            (expected_status, expected_code),
            "POST {path} {}: {response}",
            &body[..body.len().min(80)]
        );
        assert!(
            response["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, body) = api
        .post_raw(
            "/accounts/ada/deposits",
            r#"{"amount": 1, "currency": "EUR"}"#,
            &[("x-user-id", "u"), ("x-correlation-id", "not-a-uuid")],
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_header")
    );
    for (path, expected_status, expected_code) in [
        ("/accounts/nobody", StatusCode::NOT_FOUND, "not_found"),
        (
            "/accounts/nobody/statement",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/accounts/nobody/history",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/accounts/nobody/balance",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/accounts/ada/balance?version=x",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/accounts/ada/balance?version=1&at=2020-01-01T00:00:00Z",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/transfers/123",
            StatusCode::BAD_REQUEST,
            "invalid_transfer_id",
        ),
        ("/nowhere", StatusCode::NOT_FOUND, "not_found"),
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(
            (status, code(&body)),
            (expected_status, expected_code),
            "GET {path}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_post_with_an_idempotency_key_never_posts_twice() {
    let (api, ledger) = start(MemoryStore::new()).await;
    api.open("ada", "EUR", 0).await;
    api.open("bob", "EUR", 0).await;
    let key = [("idempotency-key", "deposit-0001")];
    let body = json!({ "amount": 500, "currency": "EUR" });
    let first = api
        .post_with("/accounts/ada/deposits", body.clone(), &key)
        .await;
    let again = api
        .post_with("/accounts/ada/deposits", body.clone(), &key)
        .await;
    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(first, again, "the retry gets the first response");
    assert_eq!(api.balance("ada").await, 500);

    // Concurrent retries of one transfer: one posting, everyone sees the same outcome.
    let transfer = json!({ "from": "ada", "to": "bob", "amount": 200, "currency": "EUR" });
    let key = [("idempotency-key", "transfer-42")];
    let responses = futures::future::join_all(
        (0..8).map(|_| api.post_with("/transfers", transfer.clone(), &key)),
    )
    .await;
    for response in &responses {
        assert_eq!(response, &responses[0]);
    }
    assert_eq!(responses[0].0, StatusCode::CREATED);
    assert_eq!(
        (api.balance("ada").await, api.balance("bob").await),
        (300, 200)
    );
    assert_eq!(
        ledger
            .transfers(ledger::app::Page::all())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // The same key for another request is refused.
    let (status, body) = api
        .post_with(
            "/accounts/ada/deposits",
            json!({ "amount": 501, "currency": "EUR" }),
            &[("idempotency-key", "deposit-0001")],
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );

    // A refusal writes nothing and is not kept: the retry runs anew, and succeeds once the
    // funds are there (the same request under the same key), exactly once.
    let key = [("idempotency-key", "withdraw-big")];
    let big = json!({ "amount": 1_000, "currency": "EUR" });
    let (status, _) = api
        .post_with("/accounts/ada/withdrawals", big.clone(), &key)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    api.deposit("ada", 5_000, "EUR").await;
    let first = api
        .post_with("/accounts/ada/withdrawals", big.clone(), &key)
        .await;
    assert_eq!(first.0, StatusCode::OK, "{first:?}");
    let again = api.post_with("/accounts/ada/withdrawals", big, &key).await;
    assert_eq!(first, again);
    assert_eq!(api.balance("ada").await, 4_300);
    // The same key from another user is another request.
    let (status, body) = api
        .as_user("mallory")
        .post_with(
            "/accounts/ada/deposits",
            json!({ "amount": 500, "currency": "EUR" }),
            &[("idempotency-key", "deposit-0001")],
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    // A key that is too long is refused.
    let long = "k".repeat(201);
    let (status, body) = api
        .post_with(
            "/accounts/ada/deposits",
            json!({ "amount": 1, "currency": "EUR" }),
            &[("idempotency-key", &long)],
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_header")
    );
}

/// Decides whether an append fails (and how) before it reaches the store.
type Fault = dyn Fn(&StreamId, ExpectedVersion, &[NewEvent]) -> Option<Error> + Send + Sync;

/// A memory store whose appends fail when `fault` says so.
#[derive(Clone)]
struct FaultyStore {
    inner: MemoryStore,
    fault: Arc<Fault>,
}

impl FaultyStore {
    fn new(
        fault: impl Fn(&StreamId, ExpectedVersion, &[NewEvent]) -> Option<Error> + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner: MemoryStore::new(),
            fault: Arc::new(fault),
        }
    }
}

impl StreamStore for FaultyStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        if let Some(error) = (self.fault)(stream, expected, &events) {
            return Err(error);
        }
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        s: &StreamId,
        q: &StreamQuery,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.inner.read_stream(s, q).await
    }
    async fn stream_version(&self, s: &StreamId) -> Result<u64, Error> {
        self.inner.stream_version(s).await
    }
    async fn read_event(&self, id: uuid::Uuid) -> Result<Option<RecordedEvent>, Error> {
        self.inner.read_event(id).await
    }
}

impl SnapshotStore for FaultyStore {
    async fn load_snapshot(&self, s: &StreamId) -> Result<Option<Snapshot>, Error> {
        self.inner.load_snapshot(s).await
    }
    async fn save_snapshot(&self, s: Snapshot) -> Result<(), Error> {
        self.inner.save_snapshot(s).await
    }
}

impl GlobalLog for FaultyStore {
    async fn read_log(&self, after: u64, limit: usize, f: &LogFilter) -> Result<LogPage, Error> {
        self.inner.read_log(after, limit, f).await
    }
    async fn head_position(&self) -> Result<u64, Error> {
        self.inner.head_position().await
    }
    fn wakeup(&self) -> Wakeup {
        self.inner.wakeup()
    }
}

impl CheckpointStore for FaultyStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, Error> {
        self.inner.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), Error> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_that_survives_the_retries_is_a_409() {
    let contested = Arc::new(AtomicBool::new(false));
    let store = FaultyStore::new({
        let contested = contested.clone();
        // Reading the stream finds nothing new, but the append still loses every time, as if
        // another writer always won.
        move |stream, expected, _| {
            contested.load(Ordering::SeqCst).then(|| Error::Conflict {
                stream: stream.clone(),
                expected,
                actual: 1,
            })
        }
    });
    let (api, _) = start(store).await;
    api.open("ada", "EUR", 0).await;
    contested.store(true, Ordering::SeqCst);
    let key = [("idempotency-key", "contested-1")];
    let body = json!({ "amount": 5, "currency": "EUR" });
    let (status, response) = api
        .post_with("/accounts/ada/deposits", body.clone(), &key)
        .await;
    assert_eq!(
        (status, code(&response)),
        (StatusCode::CONFLICT, "concurrency_conflict"),
        "{response}"
    );
    // A 409 is not remembered: the retry runs again, and succeeds once the contention ends.
    contested.store(false, Ordering::SeqCst);
    let (status, response) = api.post_with("/accounts/ada/deposits", body, &key).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(api.balance("ada").await, 5);
}

/// The process manager carries a transfer on from `Debited` in the same pass. When a step after
/// that fails (here the credit, once, as a database would), the `Debited` event's delivery
/// must take the step again rather than be skipped as carried on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_fails_after_the_debit_is_taken_again_and_the_transfer_completes() {
    let failed = Arc::new(AtomicBool::new(false));
    let store = FaultyStore::new({
        let failed = failed.clone();
        move |_, _, events| {
            let credit = events.iter().any(|e| e.event_name == "TransferReceived");
            (credit && !failed.swap(true, Ordering::SeqCst))
                .then(|| Error::backend("the database went away"))
        }
    });
    let (api, ledger) = start(store).await;
    api.open("ada", "EUR", 0).await;
    api.open("bob", "EUR", 0).await;
    let (status, body) = api.deposit("ada", 100, "EUR").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api
        .post(
            "/transfers",
            json!({ "from": "ada", "to": "bob", "amount": 40, "currency": "EUR", "reference": "r" }),
        )
        .await;
    assert!(failed.load(Ordering::SeqCst), "the credit failed once");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(
        (api.balance("ada").await, api.balance("bob").await),
        (60, 40)
    );
    ledger.check().await.expect("read models consistent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_overflowing_deposits_leave_the_service_answering_on_memory() {
    let (api, ledger) = start(MemoryStore::new()).await;
    common::overflowing_deposits(&api).await;
    ledger.check().await.expect("read models consistent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_paths_and_times_get_400_on_memory() {
    let (api, _) = start(MemoryStore::new()).await;
    common::hostile_input(&api).await;
}
