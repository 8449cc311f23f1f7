//! The OpenAPI 3.1 description of the API, served at `GET /openapi.json`: the schemas are
//! derived by utoipa from the Rust types the handlers read and write, the operations listed
//! in one table ([`OPERATIONS`]).

use std::sync::OnceLock;

use serde_json::{Value, json};
use utoipa::openapi::ComponentsBuilder;

use super::dto::{
    AccountChange, Amount, ConsumerStatus, Health, OpenAccount, Reason, TransferBody,
};
use crate::app::{AuditEntry, BalanceAt, Receipt, TransferOutcome};
use crate::domain::{AccountStatus, Currency, TransferStatus};
use crate::read_models::{AccountRow, CurrencyTotals, StatementLine, TransferRow};

/// An operation: method, path, operation id, parameters (`id`, `correlation_id`,
/// `transfer_id`, `page`, `as_of`, `command`), request body schema, success status, and
/// response schema (`X`, `[X]` an array, `X*` a page, `{X}` a map by currency).
type Operation = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    Option<&'static str>,
    &'static str,
    &'static str,
);

/// Every operation of the API.
pub const OPERATIONS: &[Operation] = &[
    (
        "post",
        "/accounts",
        "openAccount",
        &["command"],
        Some("OpenAccount"),
        "201",
        "AccountChange",
    ),
    (
        "get",
        "/accounts",
        "balances",
        &[],
        None,
        "200",
        "[AccountRow]",
    ),
    (
        "get",
        "/accounts/{id}",
        "account",
        &["id"],
        None,
        "200",
        "AccountRow",
    ),
    (
        "post",
        "/accounts/{id}/deposits",
        "deposit",
        &["id", "command"],
        Some("Amount"),
        "200",
        "AccountChange",
    ),
    (
        "post",
        "/accounts/{id}/withdrawals",
        "withdraw",
        &["id", "command"],
        Some("Amount"),
        "200",
        "AccountChange",
    ),
    (
        "post",
        "/accounts/{id}/freeze",
        "freeze",
        &["id", "command"],
        Some("Reason"),
        "200",
        "AccountChange",
    ),
    (
        "post",
        "/accounts/{id}/unfreeze",
        "unfreeze",
        &["id", "command"],
        Some("Reason"),
        "200",
        "AccountChange",
    ),
    (
        "post",
        "/accounts/{id}/close",
        "close",
        &["id", "command"],
        Some("Reason"),
        "200",
        "AccountChange",
    ),
    (
        "get",
        "/accounts/{id}/statement",
        "statement",
        &["id", "page"],
        None,
        "200",
        "StatementLine*",
    ),
    (
        "get",
        "/accounts/{id}/history",
        "history",
        &["id", "page"],
        None,
        "200",
        "AuditEntry*",
    ),
    (
        "get",
        "/accounts/{id}/balance",
        "balanceAsOf",
        &["id", "as_of"],
        None,
        "200",
        "BalanceAt",
    ),
    (
        "post",
        "/transfers",
        "transfer",
        &["command"],
        Some("TransferBody"),
        "201",
        "TransferOutcome",
    ),
    (
        "get",
        "/transfers",
        "transfers",
        &["page"],
        None,
        "200",
        "TransferRow*",
    ),
    (
        "get",
        "/transfers/{transfer_id}",
        "transferStatus",
        &["transfer_id"],
        None,
        "200",
        "TransferOutcome",
    ),
    (
        "get",
        "/totals",
        "totals",
        &[],
        None,
        "200",
        "{CurrencyTotals}",
    ),
    (
        "get",
        "/trace/{correlation_id}",
        "trace",
        &["correlation_id"],
        None,
        "200",
        "AuditEntry*",
    ),
    ("get", "/health", "health", &[], None, "200", "Health"),
];

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn response_schema(spec: &str) -> Value {
    if let Some(item) = spec.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        json!({ "type": "array", "items": schema_ref(item) })
    } else if let Some(item) = spec.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
        json!({ "type": "object", "additionalProperties": schema_ref(item) })
    } else if let Some(item) = spec.strip_suffix('*') {
        json!({ "type": "object", "required": ["items", "next"], "properties": {
            "items": { "type": "array", "items": schema_ref(item) },
            "next": { "type": ["string", "null"], "description": "`after` of the next page; null on the last" } } })
    } else {
        schema_ref(spec)
    }
}

fn parameter(name: &str, place: &str, required: bool, schema: Value) -> Value {
    json!({ "name": name, "in": place, "required": required, "schema": schema })
}

fn parameters(names: &[&str]) -> Vec<Value> {
    let text = json!({ "type": "string" });
    let uuid = json!({ "type": "string", "format": "uuid" });
    let id = json!({ "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" });
    let header = |max: usize| json!({ "type": "string", "maxLength": max, "pattern": "^[!-~]([ -~]*[!-~])?$" });
    names
        .iter()
        .flat_map(|name| match *name {
            "page" => vec![
                parameter("after", "query", false, text.clone()),
                parameter(
                    "limit",
                    "query",
                    false,
                    json!({ "type": "integer", "minimum": 1, "maximum": 1000 }),
                ),
            ],
            "as_of" => vec![
                parameter(
                    "version",
                    "query",
                    false,
                    json!({ "type": "integer", "minimum": 0 }),
                ),
                parameter(
                    "at",
                    "query",
                    false,
                    json!({ "type": "string", "format": "date-time" }),
                ),
            ],
            "command" => vec![
                parameter("x-user-id", "header", true, header(100)),
                parameter("idempotency-key", "header", false, header(200)),
                parameter("x-correlation-id", "header", false, uuid.clone()),
                parameter("x-causation-id", "header", false, uuid.clone()),
            ],
            "id" => vec![parameter("id", "path", true, id.clone())],
            other => vec![parameter(other, "path", true, uuid.clone())],
        })
        .collect()
}

/// The OpenAPI document (built once).
pub fn document() -> Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build).clone()
}

fn build() -> Value {
    let components = ComponentsBuilder::new()
        .schema_from::<OpenAccount>()
        .schema_from::<Amount>()
        .schema_from::<Reason>()
        .schema_from::<TransferBody>()
        .schema_from::<AccountChange>()
        .schema_from::<Receipt>()
        .schema_from::<AccountRow>()
        .schema_from::<StatementLine>()
        .schema_from::<AuditEntry>()
        .schema_from::<BalanceAt>()
        .schema_from::<TransferOutcome>()
        .schema_from::<TransferRow>()
        .schema_from::<CurrencyTotals>()
        .schema_from::<Health>()
        .schema_from::<ConsumerStatus>()
        .schema_from::<Currency>()
        .schema_from::<AccountStatus>()
        .schema_from::<TransferStatus>()
        .build();
    let mut components = serde_json::to_value(components).unwrap_or_default();
    components["schemas"]["Error"] = json!({ "type": "object", "required": ["error"], "properties": {
        "error": { "type": "object", "required": ["code", "message"], "properties": {
            "code": { "type": "string" }, "message": { "type": "string" },
            "error_id": { "type": ["string", "null"], "format": "uuid" } } } } });
    let mut paths = json!({});
    for (method, path, id, params, body, status, response) in OPERATIONS {
        let mut operation = json!({ "operationId": id, "parameters": parameters(params), "responses": {
            *status: { "description": "success", "content": { "application/json": { "schema": response_schema(response) } } },
            "default": { "description": "an error", "content": { "application/json": { "schema": schema_ref("Error") } } } } });
        if let Some(body) = body {
            operation["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": schema_ref(body) } } });
        }
        paths[*path][*method] = operation;
    }
    json!({ "openapi": "3.1.0", "info": { "title": "ledger", "version": env!("CARGO_PKG_VERSION"),
        "description": "An event-sourced ledger: accounts, transfers, audit trail." },
        "paths": paths, "components": components })
}
