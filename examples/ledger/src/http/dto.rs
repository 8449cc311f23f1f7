//! What requests and responses carry: JSON bodies, queries, and the command context from
//! the headers. Each has an OpenAPI schema ([`utoipa::ToSchema`]).

use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use es_core::{CommandKey, Metadata, Status};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use crate::app::{Cmd, Page, Receipt};
use crate::domain::{Currency, Money};
use crate::read_models::AccountRow;

/// `POST /accounts`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccount {
    /// Account id: 1-64 letters, digits, `-` or `_`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    /// Owner's name (not blank).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub owner: String,
    /// Currency code: three uppercase letters.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// Overdraft limit in minor units.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub overdraft_limit: i64,
}

/// `POST /accounts/{id}/deposits` and `/withdrawals`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Amount {
    /// Minor units.
    #[schema(minimum = 1)]
    pub amount: i64,
    /// Currency code.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// Reference.
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub reference: String,
}

/// `POST /accounts/{id}/freeze`, `/unfreeze`, `/close`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Why.
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub reason: String,
}

/// `POST /transfers`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// Source account.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub from: String,
    /// Destination account.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub to: String,
    /// Minor units.
    #[schema(minimum = 1)]
    pub amount: i64,
    /// Currency code.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// Reference.
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
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

/// `?after=CURSOR&limit=N` of a list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// At most this many items (1-1000, default 100).
    pub limit: Option<usize>,
}

impl PageQuery {
    /// The page asked for; a cursor of the wrong kind or a limit out of range is a 400.
    pub fn page<C: FromStr>(self) -> ApiResult<Page<C>> {
        let invalid = |m: &str| ApiError::bad_request("invalid_query", m);
        let after = self
            .after
            .map(|a| a.parse().map_err(|_| invalid("not a cursor of this list")));
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(invalid("limit must be 1 to 1000"));
        }
        Ok(Page {
            after: after.transpose()?,
            limit,
        })
    }
}

/// What an account command answers: what it wrote and the account after it.
#[derive(Serialize, ToSchema)]
pub struct AccountChange {
    /// What was written.
    pub receipt: Receipt,
    /// The account, once the read models include the command.
    pub account: AccountRow,
}

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: String,
    /// Each consumer's status.
    pub consumers: Vec<ConsumerStatus>,
}

/// One consumer's status.
#[derive(Serialize, ToSchema)]
pub struct ConsumerStatus {
    /// Its checkpoint name.
    pub name: String,
    /// What it is doing.
    pub state: String,
    /// Handled up to this position.
    pub checkpoint: u64,
    /// The log's head when last read.
    pub head: u64,
    /// Positions behind the head.
    pub lag: u64,
    /// Events parked since it started.
    pub parked: u64,
    /// Its last failure, if any.
    pub last_error: Option<String>,
}

impl From<Status> for ConsumerStatus {
    fn from(s: Status) -> Self {
        let (name, state, checkpoint, head, lag) = (
            s.name,
            format!("{:?}", s.state),
            s.checkpoint,
            s.head,
            s.lag,
        );
        Self {
            name,
            state,
            checkpoint,
            head,
            lag,
            parked: s.parked,
            last_error: s.last_error,
        }
    }
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
            return Err(ApiError::bad_request(
                "invalid_header",
                "X-User-Id must be at most 100 characters",
            ));
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
            Some(_) => Err(ApiError::bad_request(
                "invalid_header",
                "Idempotency-Key must be 1-200 characters",
            )),
        }
    }
}

/// A header as text, if present.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> ApiResult<Option<&'h str>> {
    let invalid = |_| ApiError::bad_request("invalid_header", format!("{name} is not text"));
    headers
        .get(name)
        .map(|v| v.to_str())
        .transpose()
        .map_err(invalid)
}

fn uuid_header(headers: &HeaderMap, name: &str) -> ApiResult<Option<Uuid>> {
    let invalid = |_| ApiError::bad_request("invalid_header", format!("{name} must be a UUID"));
    header(headers, name)?
        .map(str::parse)
        .transpose()
        .map_err(invalid)
}
