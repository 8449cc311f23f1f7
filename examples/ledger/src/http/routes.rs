//! The handlers: each parses its input, calls the [`Ledger`], and answers JSON.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use es_core::AsOf;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::dto::{
    AccountChange, Amount, BalanceQuery, CommandHeaders, ConsumerStatus, Health, OpenAccount,
    PageQuery, Reason, TransferBody,
};
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::app::{AccountCommand, Ledger, Store};

type S<T> = State<Ledger<T>>;

fn ok(value: impl serde::Serialize) -> ApiResult<Response> {
    Ok(Json(value).into_response())
}

fn body<T: DeserializeOwned>(value: serde_json::Value) -> ApiResult<T> {
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("invalid body: {e}")))
}

/// `POST /accounts/{id}/deposits`, `/withdrawals`, `/freeze`, `/unfreeze`, `/close`.
pub(super) async fn account_command<T: Store>(
    State(ledger): S<T>,
    Path((id, command)): Path<(String, String)>,
    CommandHeaders(cmd): CommandHeaders,
    ApiJson(value): ApiJson<serde_json::Value>,
) -> ApiResult<Response> {
    let command = match command.as_str() {
        "deposits" | "withdrawals" => {
            let b: Amount = body(value)?;
            let amount = super::dto::money(b.amount, &b.currency)?;
            match command.as_str() {
                "deposits" => AccountCommand::Deposit(amount, b.reference),
                _ => AccountCommand::Withdraw(amount, b.reference),
            }
        }
        "freeze" => AccountCommand::Freeze(body::<Reason>(value)?.reason),
        "unfreeze" => AccountCommand::Unfreeze(body::<Reason>(value)?.reason),
        "close" => AccountCommand::Close(body::<Reason>(value)?.reason),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route",
            ));
        }
    };
    let receipt = ledger.on_account(cmd, &id, command).await?;
    let account = ledger.account_after(&id, receipt.position).await?;
    ok(AccountChange { receipt, account })
}

pub(super) async fn open_account<T: Store>(
    State(ledger): S<T>,
    CommandHeaders(cmd): CommandHeaders,
    ApiJson(b): ApiJson<OpenAccount>,
) -> ApiResult<Response> {
    let (owner, currency, overdraft_limit) = (b.owner, b.currency.parse()?, b.overdraft_limit);
    let open = AccountCommand::Open {
        owner,
        currency,
        overdraft_limit,
    };
    let receipt = ledger.on_account(cmd, &b.id, open).await?;
    let account = ledger.account_after(&b.id, receipt.position).await?;
    Ok((
        StatusCode::CREATED,
        Json(AccountChange { receipt, account }),
    )
        .into_response())
}

pub(super) async fn transfer<T: Store>(
    State(ledger): S<T>,
    CommandHeaders(cmd): CommandHeaders,
    ApiJson(b): ApiJson<TransferBody>,
) -> ApiResult<Response> {
    let amount = super::dto::money(b.amount, &b.currency)?;
    let outcome = ledger
        .transfer(cmd, &b.from, &b.to, &amount, &b.reference)
        .await?;
    Ok((StatusCode::CREATED, Json(outcome)).into_response())
}

pub(super) async fn balances<T: Store>(State(ledger): S<T>) -> ApiResult<Response> {
    ok(ledger.balances().await?)
}

pub(super) async fn account<T: Store>(
    State(ledger): S<T>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    ok(ledger.account(&id).await?)
}

pub(super) async fn statement<T: Store>(
    State(ledger): S<T>,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    ok(ledger.statement(&id, page.page()?).await?)
}

pub(super) async fn history<T: Store>(
    State(ledger): S<T>,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    ok(ledger.audit(&id, page.page()?).await?)
}

pub(super) async fn balance_as_of<T: Store>(
    State(ledger): S<T>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<BalanceQuery>,
) -> ApiResult<Response> {
    let as_of = match (query.version, query.at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give either version or at, not both",
            ));
        }
        (_, Some(at)) => AsOf::Time(at),
        (version, None) => AsOf::Version(version.unwrap_or(u64::MAX)),
    };
    ok(ledger.balance_as_of(&id, as_of).await?)
}

pub(super) async fn transfers<T: Store>(
    State(ledger): S<T>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    ok(ledger.transfers(page.page()?).await?)
}

fn uuid(text: &str, code: &'static str, what: &str) -> ApiResult<Uuid> {
    text.parse()
        .map_err(|_| ApiError::bad_request(code, format!("{what} are UUIDs")))
}

pub(super) async fn transfer_status<T: Store>(
    State(ledger): S<T>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = uuid(&id, "invalid_transfer_id", "transfer ids")?;
    ok(ledger.transfer_outcome(id).await?)
}

pub(super) async fn totals<T: Store>(State(ledger): S<T>) -> ApiResult<Response> {
    ok(ledger.totals().await?)
}

pub(super) async fn trace<T: Store>(
    State(ledger): S<T>,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let id = uuid(&id, "invalid_correlation_id", "correlation ids")?;
    ok(ledger.trace(id, page.page()?).await?)
}

/// Health and the consumers' status: a read model or process manager that parked events or
/// is retrying shows here, while commands keep working.
pub(super) async fn health<T: Store>(State(ledger): S<T>) -> Json<Health> {
    let consumers = ledger
        .status()
        .into_iter()
        .map(ConsumerStatus::from)
        .collect();
    Json(Health {
        status: "ok".into(),
        consumers,
    })
}
