//! What requests carry: JSON bodies, the balance query, and the command context from the
//! headers.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use es_core::{CommandKey, Metadata};
use serde::Deserialize;
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use crate::app::Cmd;
use crate::domain::{Currency, Money};

/// `POST /accounts`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAccount {
    /// Account id.
    pub id: String,
    /// Owner's name.
    pub owner: String,
    /// Currency code.
    pub currency: String,
    /// Overdraft limit in minor units.
    #[serde(default)]
    pub overdraft_limit: i64,
}

/// `POST /accounts/{id}/deposits` and `/withdrawals`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Amount {
    /// Minor units.
    pub amount: i64,
    /// Currency code.
    pub currency: String,
    /// Reference.
    #[serde(default)]
    pub reference: String,
}

/// `POST /accounts/{id}/freeze`, `/unfreeze`, `/close`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// `POST /transfers`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// Source account.
    pub from: String,
    /// Destination account.
    pub to: String,
    /// Minor units.
    pub amount: i64,
    /// Currency code.
    pub currency: String,
    /// Reference.
    #[serde(default)]
    pub reference: String,
}

/// `GET /accounts/{id}/balance?version=N` or `?at=RFC3339`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceQuery {
    /// As of this stream version.
    pub version: Option<u64>,
    /// As of this moment.
    pub at: Option<DateTime<Utc>>,
}

/// `minor` units of the currency `code`.
pub fn money(minor: i64, code: &str) -> ApiResult<Money> {
    Ok(Money::new(minor, code.parse::<Currency>()?))
}

/// The command context of a request, from its headers: `X-User-Id` (required),
/// `X-Correlation-Id`, `X-Causation-Id` and `Idempotency-Key` (optional).
pub struct CommandHeaders(pub Cmd);

impl<S: Send + Sync> FromRequestParts<S> for CommandHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let headers = &parts.headers;
        let user = header(headers, "x-user-id")?
            .map(str::trim)
            .filter(|u| !u.is_empty());
        let user = user.ok_or_else(|| {
            ApiError::bad_request("missing_user", "commands need an X-User-Id header")
        })?;
        if user.chars().count() > 100 {
            let message = "X-User-Id must be at most 100 characters";
            return Err(ApiError::bad_request("invalid_header", message));
        }
        let causation = uuid_header(headers, "x-causation-id")?.unwrap_or_else(Uuid::now_v7);
        let mut meta = Metadata::by_user(user).with_causation_id(causation);
        if let Some(correlation) = uuid_header(headers, "x-correlation-id")? {
            meta = meta.with_correlation_id(correlation);
        }
        let cmd = Cmd::new(meta);
        match header(headers, "idempotency-key")? {
            None => Ok(Self(cmd)),
            Some(key) if (1..=200).contains(&key.len()) => {
                Ok(Self(cmd.with_key(CommandKey::from_text(key))))
            }
            Some(_) => {
                let message = "Idempotency-Key must be 1-200 characters";
                Err(ApiError::bad_request("invalid_header", message))
            }
        }
    }
}

/// A header as text, if present.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> ApiResult<Option<&'h str>> {
    let text = |v: &'h axum::http::HeaderValue| v.to_str();
    let invalid = |_| ApiError::bad_request("invalid_header", format!("{name} is not text"));
    headers.get(name).map(text).transpose().map_err(invalid)
}

fn uuid_header(headers: &HeaderMap, name: &str) -> ApiResult<Option<Uuid>> {
    let invalid = |_| ApiError::bad_request("invalid_header", format!("{name} must be a UUID"));
    header(headers, name)?
        .map(str::parse)
        .transpose()
        .map_err(invalid)
}
