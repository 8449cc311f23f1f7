//! [`ApiError`]: every error response, as JSON with a stable code; the mapping of domain
//! errors to statuses; and the extractors whose rejections become `ApiError`s.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;
use uuid::Uuid;

use es_core::Error;

use crate::app::AppError;
use crate::domain::LedgerError;

/// An error response: a status and a JSON body `{"error": {"code", "message", "error_id"?}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    error_id: Option<Uuid>,
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            status,
            code,
            message,
            error_id: None,
        }
    }

    /// A 500 with a generic message and a fresh error id; `detail` is logged under that id
    /// (with the request's span: its id, method and path), never sent.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        let error_id = Uuid::now_v7();
        tracing::error!(%error_id, error = %detail, "request failed");
        let message = format!("internal error {error_id}: the server log has the detail");
        let status = StatusCode::INTERNAL_SERVER_ERROR;
        Self {
            status,
            code: "internal",
            message,
            error_id: Some(error_id),
        }
    }

    /// A 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, message, error_id) = (self.code, self.message, self.error_id);
        let body = json!({ "error": { "code": code, "message": message, "error_id": error_id } });
        (self.status, Json(body)).into_response()
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        let (status, code) = domain_status(&error);
        Self::new(status, code, error.to_string())
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        let message = error.to_string();
        match error {
            AppError::Domain(e) => e.into(),
            AppError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            AppError::Store(Error::Conflict { .. }) => {
                Self::new(StatusCode::CONFLICT, "concurrency_conflict", message)
            }
            AppError::Store(Error::Invalid(_)) => Self::bad_request("invalid_request", message),
            AppError::KeyReused => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                message,
            ),
            AppError::Store(_) | AppError::Inconsistent(_) => Self::internal(&message),
        }
    }
}

fn domain_status(error: &LedgerError) -> (StatusCode, &'static str) {
    use LedgerError as E;
    let (bad, refused) = (StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY);
    match error {
        E::InvalidCurrency(_) => (bad, "invalid_currency"),
        E::InvalidAmount(_) => (bad, "invalid_amount"),
        E::NonPositiveAmount(_) => (bad, "non_positive_amount"),
        E::InvalidAccountId(_) => (bad, "invalid_account_id"),
        E::InvalidOwner => (bad, "invalid_owner"),
        E::TextTooLong { .. } => (bad, "text_too_long"),
        E::ControlCharacter(_) => (bad, "invalid_text"),
        E::TimeOutOfRange(_) => (bad, "invalid_time"),
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
        E::UnknownOutgoingTransfer(_) | E::UnknownIncomingTransfer(_) => {
            (refused, "unknown_transfer")
        }
        E::InvalidTransferStep { .. } => (refused, "invalid_transfer_step"),
    }
}

/// A JSON body whose rejections (malformed, mistyped, too large, not JSON) are [`ApiError`]s.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

fn json_error(rejection: JsonRejection) -> ApiError {
    let (status, code) = match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        }
        // Malformed and mistyped JSON are both the client's input errors: 400.
        _ => (StatusCode::BAD_REQUEST, "invalid_body"),
    };
    ApiError::new(status, code, rejection.body_text())
}

/// A query string whose rejections are [`ApiError`]s.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let query = Query::<T>::from_request_parts(parts, state).await;
        let rejected = |e: QueryRejection| ApiError::bad_request("invalid_query", e.body_text());
        query.map(|Query(value)| Self(value)).map_err(rejected)
    }
}
