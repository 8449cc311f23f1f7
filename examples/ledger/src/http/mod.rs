//! The HTTP JSON API (axum): the ledger's commands and queries.
//!
//! | method | path | body / query |
//! |---|---|---|
//! | `POST` | `/accounts` | `{"id", "owner", "currency", "overdraft_limit"?}` |
//! | `POST` | `/accounts/{id}/deposits`, `/withdrawals` | `{"amount", "currency", "reference"?}` |
//! | `POST` | `/accounts/{id}/freeze`, `/unfreeze`, `/close` | `{"reason"?}` |
//! | `POST` | `/transfers` | `{"from", "to", "amount", "currency", "reference"?}` |
//! | `GET` | `/accounts`, `/accounts/{id}`, `/accounts/{id}/statement`, `/accounts/{id}/history` | |
//! | `GET` | `/accounts/{id}/balance` | `?version=N` or `?at=RFC3339` (years 1-9999) |
//! | `GET` | `/transfers`, `/transfers/{id}`, `/totals`, `/trace/{correlation_id}` | |
//! | `GET` | `/health` | the consumers' status: checkpoint, lag, parked events |
//!
//! Amounts are integers in minor units (`1250` with `"EUR"` is 12.50 EUR); a float is refused.
//! Totals are sums over accounts and may exceed 64 bits.
//!
//! Every command needs an `X-User-Id` header; `X-Correlation-Id` and `X-Causation-Id`
//! (UUIDs) are optional: a correlation is started and the request gets its own id as the
//! causation when they are missing.
//!
//! `Idempotency-Key` (1-200 characters) makes a POST safe to retry: the command runs under a
//! [`CommandKey`](es_core::CommandKey) derived from it, so a retry (after a 5xx, a lost
//! reply, a restart, on any server sharing the store) returns the command's first outcome
//! instead of acting again, and a concurrent retry converges on it. The same key with
//! another request is a 422; a refused command (4xx) writes nothing, so its retry runs anew.
//!
//! Errors are JSON: `{"error": {"code": "insufficient_funds", "message": "..."}}`, with 400
//! for malformed input (control characters in any text, times outside years 1-9999), 404 for
//! unknown accounts and transfers, 409 for an existing id or a concurrency conflict that
//! survived the retries, 413 for a body over 16 KiB, and 422 for a command the domain refuses.

pub mod dto;
pub mod error;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};

use tokio::net::TcpListener;

pub use error::{ApiError, ApiResult};

use crate::app::{Ledger, Store};

/// The largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

struct AppState<S> {
    ledger: Ledger<S>,
}

type Shared<S> = Arc<AppState<S>>;

/// The API's router over `ledger`.
pub fn router<S: Store>(ledger: Ledger<S>) -> Router {
    let state = Arc::new(AppState { ledger });
    use routes::*;
    Router::new()
        .route("/health", get(health::<S>))
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
        .fallback(async || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route"))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Binds `addr` and serves the API until `shutdown` completes; reports the bound address
/// through `on_bound` before serving (useful with port 0).
pub async fn serve<S: Store>(
    ledger: Ledger<S>,
    addr: SocketAddr,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    on_bound(listener.local_addr()?);
    axum::serve(listener, router(ledger))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` (port 0 for any) and serves the API in a background task; returns the
/// bound address. For tests and embedding.
pub async fn spawn<S: Store>(ledger: Ledger<S>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router(ledger)).await {
            tracing::error!(%error, "server stopped");
        }
    });
    Ok(bound)
}
