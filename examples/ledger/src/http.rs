//! The HTTP JSON API (axum): the ledger's commands and queries.
//!
//! | method | path | body / query |
//! |---|---|---|
//! | `POST` | `/accounts` | `{"id", "owner", "currency", "overdraft_limit"?}` |
//! | `POST` | `/accounts/{id}/deposits`, `/withdrawals` | `{"amount", "currency", "reference"?}` |
//! | `POST` | `/accounts/{id}/freeze`, `/unfreeze`, `/close` | `{"reason"?}` |
//! | `POST` | `/transfers` | `{"from", "to", "amount", "currency", "reference"?}` |
//! | `GET` | `/accounts`, `/accounts/{id}`, `/accounts/{id}/statement`, `/accounts/{id}/history` | |
//! | `GET` | `/accounts/{id}/balance` | `?version=N` or `?at=RFC3339` |
//! | `GET` | `/transfers`, `/transfers/{id}`, `/totals`, `/trace/{correlation_id}`, `/health` | |
//!
//! Amounts are integers in minor units (`1250` with `"EUR"` is 12.50 EUR); a float is refused.
//!
//! Every command needs an `X-User-Id` header; `X-Correlation-Id` and `X-Causation-Id`
//! (UUIDs) are optional: a correlation is started and the request gets its own id as the
//! causation when they are missing.
//!
//! A POST with an `Idempotency-Key` header runs once: a retry with the same key and the same
//! request gets the first response again (with `Idempotent-Replayed: true`), and a concurrent
//! retry waits for the first to finish. The same key with another request is a 422.
//! Responses are kept per key in the server's memory (the last 10,000 keys); 5xx and 409
//! responses are not kept, so those can be retried.
//!
//! Errors are JSON: `{"error": {"code": "insufficient_funds", "message": "..."}}`, with 400
//! for malformed input, 404 for unknown accounts and transfers, 409 for an existing id or a
//! concurrency conflict that survived the retries, 413 for a body over 16 KiB, and 422 for a
//! command the domain refuses.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use es_core::{AsOf, EventStore, Metadata};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::app::{AppError, Ledger};
use crate::domain::{Currency, LedgerError, Money};

/// The largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

/// How many idempotency keys are remembered.
const IDEMPOTENCY_CAPACITY: usize = 10_000;

/// An error response: a status and a JSON body with a stable code and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        let message = error.to_string();
        match error {
            AppError::Domain(e) => {
                let (status, code) = domain_status(&e);
                Self::new(status, code, message)
            }
            AppError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            AppError::Conflict(_) => {
                Self::new(StatusCode::CONFLICT, "concurrency_conflict", message)
            }
            AppError::Store(_) | AppError::Inconsistent(_) => {
                tracing::error!(%message, "request failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

fn domain_status(error: &LedgerError) -> (StatusCode, &'static str) {
    use LedgerError as E;
    let bad = StatusCode::BAD_REQUEST;
    let refused = StatusCode::UNPROCESSABLE_ENTITY;
    match error {
        E::InvalidCurrency(_) => (bad, "invalid_currency"),
        E::InvalidAmount(_) => (bad, "invalid_amount"),
        E::NonPositiveAmount(_) => (bad, "non_positive_amount"),
        E::InvalidAccountId(_) => (bad, "invalid_account_id"),
        E::InvalidOwner => (bad, "invalid_owner"),
        E::TextTooLong { .. } => (bad, "text_too_long"),
        E::NegativeOverdraftLimit(_) => (bad, "negative_overdraft_limit"),
        E::SameAccount => (bad, "same_account"),
        E::AccountAlreadyExists => (StatusCode::CONFLICT, "account_exists"),
        E::TransferAlreadyExists => (StatusCode::CONFLICT, "transfer_exists"),
        E::AccountNotFound | E::TransferNotFound => (StatusCode::NOT_FOUND, "not_found"),
        E::CurrencyMismatch { .. } => (refused, "currency_mismatch"),
        E::InsufficientFunds { .. } => (refused, "insufficient_funds"),
        E::AccountFrozen => (refused, "account_frozen"),
        E::AccountNotFrozen => (refused, "account_not_frozen"),
        E::AccountClosed => (refused, "account_closed"),
        E::NonZeroBalance(_) => (refused, "non_zero_balance"),
        E::TransfersInFlight(_) => (refused, "transfers_in_flight"),
        E::Overflow => (refused, "overflow"),
        E::UnknownOutgoingTransfer(_) => (refused, "unknown_transfer"),
        E::InvalidTransferStep { .. } => (refused, "invalid_transfer_step"),
    }
}

fn json_error(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "body_too_large"
    } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        "unsupported_media_type"
    } else {
        "invalid_body"
    };
    // Malformed and mistyped JSON are both the client's input errors: 400.
    let status = if status.is_client_error()
        && status != StatusCode::PAYLOAD_TOO_LARGE
        && status != StatusCode::UNSUPPORTED_MEDIA_TYPE
    {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    ApiError::new(status, code, rejection.body_text())
}

type ApiResult<T> = Result<T, ApiError>;

/// The command metadata of a request, from its headers.
pub struct CommandMeta(pub Metadata);

impl<S: Send + Sync> FromRequestParts<S> for CommandMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        command_meta(&parts.headers).map(CommandMeta)
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> ApiResult<Option<&'h str>> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request("invalid_header", format!("{name} is not text")))
        })
        .transpose()
}

fn uuid_header(headers: &HeaderMap, name: &str) -> ApiResult<Option<Uuid>> {
    header(headers, name)?
        .map(|v| {
            v.parse().map_err(|_| {
                ApiError::bad_request("invalid_header", format!("{name} must be a UUID"))
            })
        })
        .transpose()
}

fn command_meta(headers: &HeaderMap) -> ApiResult<Metadata> {
    let user = header(headers, "x-user-id")?
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("missing_user", "commands need an X-User-Id header")
        })?;
    if user.chars().count() > 100 {
        return Err(ApiError::bad_request(
            "invalid_header",
            "X-User-Id must be at most 100 characters",
        ));
    }
    let mut meta = Metadata::by_user(user)
        .with_causation_id(uuid_header(headers, "x-causation-id")?.unwrap_or_else(Uuid::now_v7));
    if let Some(correlation) = uuid_header(headers, "x-correlation-id")? {
        meta = meta.with_correlation_id(correlation);
    }
    Ok(meta)
}

/// Remembered responses per idempotency key.
#[derive(Default)]
struct Idempotency {
    slots: std::sync::Mutex<(HashMap<String, Slot>, VecDeque<String>)>,
}

type Slot = Arc<tokio::sync::Mutex<Option<StoredResponse>>>;

struct StoredResponse {
    fingerprint: (Method, String, Option<String>, Bytes),
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

impl Idempotency {
    fn slot(&self, key: &str) -> Slot {
        let mut guard = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let (slots, order) = &mut *guard;
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        if slots.len() >= IDEMPOTENCY_CAPACITY
            && let Some(oldest) = order.pop_front()
        {
            slots.remove(&oldest);
        }
        let slot = Slot::default();
        slots.insert(key.to_owned(), slot.clone());
        order.push_back(key.to_owned());
        slot
    }
}

struct AppState<S> {
    ledger: Ledger<S>,
    idempotency: Idempotency,
}

type Shared<S> = Arc<AppState<S>>;

/// The API's router over `ledger`.
pub fn router<S: EventStore>(ledger: Ledger<S>) -> Router {
    let state = Arc::new(AppState {
        ledger,
        idempotency: Idempotency::default(),
    });
    Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/accounts", post(open_account::<S>).get(balances::<S>))
        .route("/accounts/{id}", get(account::<S>))
        .route("/accounts/{id}/deposits", post(deposit::<S>))
        .route("/accounts/{id}/withdrawals", post(withdraw::<S>))
        .route("/accounts/{id}/freeze", post(freeze::<S>))
        .route("/accounts/{id}/unfreeze", post(unfreeze::<S>))
        .route("/accounts/{id}/close", post(close::<S>))
        .route("/accounts/{id}/statement", get(statement::<S>))
        .route("/accounts/{id}/history", get(history::<S>))
        .route("/accounts/{id}/balance", get(balance_as_of::<S>))
        .route("/transfers", post(transfer::<S>).get(transfers::<S>))
        .route("/transfers/{id}", get(transfer_status::<S>))
        .route("/totals", get(totals::<S>))
        .route("/trace/{correlation_id}", get(trace::<S>))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotent::<S>,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Binds `addr` and serves the API until `shutdown` completes; returns the bound address
/// through `on_bound` before serving (useful with port 0).
pub async fn serve<S: EventStore>(
    ledger: Ledger<S>,
    addr: SocketAddr,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    on_bound(listener.local_addr()?);
    axum::serve(listener, router(ledger))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` (port 0 for any) and serves the API in a background task; returns the
/// bound address. For tests and embedding.
pub async fn spawn<S: EventStore>(
    ledger: Ledger<S>,
    addr: SocketAddr,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router(ledger)).await {
            tracing::error!(%error, "server stopped");
        }
    });
    Ok(bound)
}

async fn idempotent<S: EventStore>(
    State(state): State<Shared<S>>,
    request: Request,
    next: Next,
) -> Response {
    match run_idempotent(&state.idempotency, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn run_idempotent(
    idempotency: &Idempotency,
    request: Request,
    next: Next,
) -> Result<Response, Response> {
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    let Some(key) = header(request.headers(), "idempotency-key")
        .map_err(IntoResponse::into_response)?
        .map(str::to_owned)
    else {
        return Ok(next.run(request).await);
    };
    if key.is_empty() || key.len() > 200 {
        return Err(ApiError::bad_request(
            "invalid_header",
            "Idempotency-Key must be 1-200 characters",
        )
        .into_response());
    }
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, BODY_LIMIT).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are limited to {BODY_LIMIT} bytes"),
        )
        .into_response()
    })?;
    let user = header(&parts.headers, "x-user-id")
        .ok()
        .flatten()
        .map(str::to_owned);
    let fingerprint = (
        parts.method.clone(),
        parts.uri.path().to_owned(),
        user,
        body.clone(),
    );
    let slot = idempotency.slot(&key);
    // Held until the response is stored: a concurrent retry waits here, then replays.
    let mut stored = slot.lock().await;
    if let Some(previous) = stored.as_ref() {
        if previous.fingerprint != fingerprint {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            )
            .into_response());
        }
        let mut response = (previous.status, previous.body.clone()).into_response();
        if let Some(content_type) = &previous.content_type {
            response
                .headers_mut()
                .insert(axum::http::header::CONTENT_TYPE, content_type.clone());
        }
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(response);
    }
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let status = response.status();
    if status.is_server_error() || status == StatusCode::CONFLICT {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, usize::MAX).await.map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "could not buffer the response",
        )
        .into_response()
    })?;
    *stored = Some(StoredResponse {
        fingerprint,
        status,
        content_type: parts.headers.get(axum::http::header::CONTENT_TYPE).cloned(),
        body: body.clone(),
    });
    Ok(Response::from_parts(parts, Body::from(body)))
}

fn default_reason() -> String {
    String::new()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenAccountBody {
    id: String,
    owner: String,
    currency: String,
    #[serde(default)]
    overdraft_limit: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountBody {
    amount: i64,
    currency: String,
    #[serde(default = "default_reason")]
    reference: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default = "default_reason")]
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    from: String,
    to: String,
    amount: i64,
    currency: String,
    #[serde(default = "default_reason")]
    reference: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BalanceQuery {
    version: Option<u64>,
    at: Option<DateTime<Utc>>,
}

fn money(amount: i64, currency: &str) -> ApiResult<Money> {
    let currency: Currency = currency
        .parse()
        .map_err(|e| ApiError::from(AppError::Domain(e)))?;
    Ok(Money::new(amount, currency))
}

async fn open_account<S: EventStore>(
    State(state): State<Shared<S>>,
    CommandMeta(meta): CommandMeta,
    body: Result<Json<OpenAccountBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(body) = body.map_err(json_error)?;
    let currency: Currency = body
        .currency
        .parse()
        .map_err(|e| ApiError::from(AppError::Domain(e)))?;
    let receipt = state
        .ledger
        .open_account(meta, &body.id, &body.owner, currency, body.overdraft_limit)
        .await?;
    let row = state
        .ledger
        .account_after(&receipt.id, receipt.position)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "receipt": receipt, "account": row })),
    ))
}

async fn deposit<S: EventStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
    CommandMeta(meta): CommandMeta,
    body: Result<Json<AmountBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(body) = body.map_err(json_error)?;
    let amount = money(body.amount, &body.currency)?;
    let receipt = state
        .ledger
        .deposit(meta, &id, &amount, &body.reference)
        .await?;
    let row = state.ledger.account_after(&id, receipt.position).await?;
    Ok(Json(json!({ "receipt": receipt, "account": row })))
}

async fn withdraw<S: EventStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
    CommandMeta(meta): CommandMeta,
    body: Result<Json<AmountBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(body) = body.map_err(json_error)?;
    let amount = money(body.amount, &body.currency)?;
    let receipt = state
        .ledger
        .withdraw(meta, &id, &amount, &body.reference)
        .await?;
    let row = state.ledger.account_after(&id, receipt.position).await?;
    Ok(Json(json!({ "receipt": receipt, "account": row })))
}

async fn freeze<S: EventStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
    CommandMeta(meta): CommandMeta,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(body) = body.map_err(json_error)?;
    let receipt = state.ledger.freeze(meta, &id, &body.reason).await?;
    let row = state.ledger.account_after(&id, receipt.position).await?;
    Ok(Json(json!({ "receipt": receipt, "account": row })))
}

async fn unfreeze<S: EventStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
    CommandMeta(meta): CommandMeta,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(body) = body.map_err(json_error)?;
    let receipt = state.ledger.unfreeze(meta, &id, &body.reason).await?;
    let row = state.ledger.account_after(&id, receipt.position).await?;
    Ok(Json(json!({ "receipt": receipt, "account": row })))
}

async fn close<S: EventStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
    CommandMeta(meta): CommandMeta,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(body) = body.map_err(json_error)?;
    let receipt = state.ledger.close(meta, &id, &body.reason).await?;
    let row = state.ledger.account_after(&id, receipt.position).await?;
    Ok(Json(json!({ "receipt": receipt, "account": row })))
}

async fn transfer<S: EventStore>(
    State(state): State<Shared<S>>,
    CommandMeta(meta): CommandMeta,
    body: Result<Json<TransferBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(body) = body.map_err(json_error)?;
    let amount = money(body.amount, &body.currency)?;
    let outcome = state
        .ledger
        .transfer(meta, &body.from, &body.to, &amount, &body.reference)
        .await?;
    Ok((StatusCode::CREATED, Json(outcome)))
}

async fn balances<S: EventStore>(State(state): State<Shared<S>>) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.ledger.balances().await?))
}

async fn account<S: EventStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.ledger.account(&id).await?))
}

async fn statement<S: EventStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.ledger.statement(&id).await?))
}

async fn history<S: EventStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.ledger.audit(&id).await?))
}

async fn balance_as_of<S: EventStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
    query: Result<Query<BalanceQuery>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let as_of = match (query.version, query.at) {
        (Some(version), None) => AsOf::Version(version),
        (None, Some(at)) => AsOf::Time(at),
        (None, None) => AsOf::Version(u64::MAX),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give either version or at, not both",
            ));
        }
    };
    let balance = state.ledger.balance_as_of(&id, as_of).await?;
    if balance.version == 0 {
        // Before the account's first event, or no such account at all (then a 404).
        state.ledger.load_account(&id).await?;
    }
    Ok(Json(balance))
}

async fn transfers<S: EventStore>(State(state): State<Shared<S>>) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.ledger.transfers().await?))
}

async fn transfer_status<S: EventStore>(
    State(state): State<Shared<S>>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_transfer_id", "transfer ids are UUIDs"))?;
    Ok(Json(state.ledger.transfer_outcome(id).await?))
}

async fn totals<S: EventStore>(State(state): State<Shared<S>>) -> ApiResult<impl IntoResponse> {
    Ok(Json(state.ledger.totals().await?))
}

async fn trace<S: EventStore>(
    State(state): State<Shared<S>>,
    Path(correlation_id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id: Uuid = correlation_id.parse().map_err(|_| {
        ApiError::bad_request("invalid_correlation_id", "correlation ids are UUIDs")
    })?;
    Ok(Json(state.ledger.trace(id).await?))
}
