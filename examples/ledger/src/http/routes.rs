//! The handlers: each parses its input, calls the [`Ledger`], and answers JSON.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use es_core::AsOf;
use serde_json::json;
use uuid::Uuid;

use super::Shared;
use super::dto::{self, Amount, BalanceQuery, CommandHeaders, OpenAccount, Reason, TransferBody};
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::app::{AccountCommand, Cmd, Store};

type S<T> = State<Shared<T>>;

/// Runs an account command and answers its receipt with the account's row after it.
async fn account_command<T: Store>(
    state: &Shared<T>,
    cmd: Cmd,
    id: &str,
    command: AccountCommand,
) -> ApiResult<Json<serde_json::Value>> {
    let receipt = state.ledger.on_account(cmd, id, command).await?;
    let row = state.ledger.account_after(id, receipt.position).await?;
    Ok(Json(json!({ "receipt": receipt, "account": row })))
}

pub(super) async fn open_account<T: Store>(
    State(state): S<T>,
    CommandHeaders(cmd): CommandHeaders,
    ApiJson(body): ApiJson<OpenAccount>,
) -> ApiResult<Response> {
    let (owner, currency, overdraft_limit) =
        (body.owner, body.currency.parse()?, body.overdraft_limit);
    let open = AccountCommand::Open {
        owner,
        currency,
        overdraft_limit,
    };
    let created = account_command(&state, cmd, &body.id, open).await?;
    Ok((StatusCode::CREATED, created).into_response())
}

pub(super) async fn deposit<T: Store>(
    State(state): S<T>,
    Path(id): Path<String>,
    CommandHeaders(cmd): CommandHeaders,
    ApiJson(b): ApiJson<Amount>,
) -> ApiResult<Json<serde_json::Value>> {
    let command = AccountCommand::Deposit(dto::money(b.amount, &b.currency)?, b.reference);
    account_command(&state, cmd, &id, command).await
}

pub(super) async fn withdraw<T: Store>(
    State(state): S<T>,
    Path(id): Path<String>,
    CommandHeaders(cmd): CommandHeaders,
    ApiJson(b): ApiJson<Amount>,
) -> ApiResult<Json<serde_json::Value>> {
    let command = AccountCommand::Withdraw(dto::money(b.amount, &b.currency)?, b.reference);
    account_command(&state, cmd, &id, command).await
}

pub(super) async fn freeze<T: Store>(
    State(state): S<T>,
    Path(id): Path<String>,
    CommandHeaders(cmd): CommandHeaders,
    ApiJson(b): ApiJson<Reason>,
) -> ApiResult<Json<serde_json::Value>> {
    account_command(&state, cmd, &id, AccountCommand::Freeze(b.reason)).await
}

pub(super) async fn unfreeze<T: Store>(
    State(state): S<T>,
    Path(id): Path<String>,
    CommandHeaders(cmd): CommandHeaders,
    ApiJson(b): ApiJson<Reason>,
) -> ApiResult<Json<serde_json::Value>> {
    account_command(&state, cmd, &id, AccountCommand::Unfreeze(b.reason)).await
}

pub(super) async fn close<T: Store>(
    State(state): S<T>,
    Path(id): Path<String>,
    CommandHeaders(cmd): CommandHeaders,
    ApiJson(b): ApiJson<Reason>,
) -> ApiResult<Json<serde_json::Value>> {
    account_command(&state, cmd, &id, AccountCommand::Close(b.reason)).await
}

pub(super) async fn transfer<T: Store>(
    State(state): S<T>,
    CommandHeaders(cmd): CommandHeaders,
    ApiJson(b): ApiJson<TransferBody>,
) -> ApiResult<Response> {
    let amount = dto::money(b.amount, &b.currency)?;
    let outcome = state
        .ledger
        .transfer(cmd, &b.from, &b.to, &amount, &b.reference)
        .await?;
    Ok((StatusCode::CREATED, Json(outcome)).into_response())
}

pub(super) async fn balances<T: Store>(State(state): S<T>) -> ApiResult<Response> {
    Ok(Json(state.ledger.balances().await?).into_response())
}

pub(super) async fn account<T: Store>(
    State(state): S<T>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(state.ledger.account(&id).await?).into_response())
}

pub(super) async fn statement<T: Store>(
    State(state): S<T>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(state.ledger.statement(&id).await?).into_response())
}

pub(super) async fn history<T: Store>(
    State(state): S<T>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(state.ledger.audit(&id).await?).into_response())
}

pub(super) async fn balance_as_of<T: Store>(
    State(state): S<T>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<BalanceQuery>,
) -> ApiResult<Response> {
    let as_of = match (query.version, query.at) {
        (Some(_), Some(_)) => {
            let message = "give either version or at, not both";
            return Err(ApiError::bad_request("invalid_query", message));
        }
        (_, Some(at)) => AsOf::Time(at),
        (version, None) => AsOf::Version(version.unwrap_or(u64::MAX)),
    };
    Ok(Json(state.ledger.balance_as_of(&id, as_of).await?).into_response())
}

pub(super) async fn transfers<T: Store>(State(state): S<T>) -> ApiResult<Response> {
    Ok(Json(state.ledger.transfers().await?).into_response())
}

fn uuid(text: &str, code: &'static str, what: &str) -> ApiResult<Uuid> {
    text.parse()
        .map_err(|_| ApiError::bad_request(code, format!("{what} are UUIDs")))
}

pub(super) async fn transfer_status<T: Store>(
    State(state): S<T>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = uuid(&id, "invalid_transfer_id", "transfer ids")?;
    Ok(Json(state.ledger.transfer_outcome(id).await?).into_response())
}

pub(super) async fn totals<T: Store>(State(state): S<T>) -> ApiResult<Response> {
    Ok(Json(state.ledger.totals().await?).into_response())
}

pub(super) async fn trace<T: Store>(
    State(state): S<T>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = uuid(&id, "invalid_correlation_id", "correlation ids")?;
    Ok(Json(state.ledger.trace(id).await?).into_response())
}

/// Health and the consumers' status: a read model or process manager that parked events or
/// is retrying shows here, while commands keep working.
pub(super) async fn health<T: Store>(State(state): S<T>) -> Json<serde_json::Value> {
    let consumers: Vec<_> = state
        .ledger
        .status()
        .into_iter()
        .map(|s| {
            json!({ "name": s.name, "state": format!("{:?}", s.state), "checkpoint": s.checkpoint,
                    "head": s.head, "lag": s.lag, "parked": s.parked, "last_error": s.last_error })
        })
        .collect();
    Json(json!({ "status": "ok", "consumers": consumers }))
}
