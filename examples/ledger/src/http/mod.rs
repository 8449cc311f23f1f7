//! The HTTP JSON API (axum): the ledger's commands and queries, described by OpenAPI at
//! `GET /openapi.json` ([`openapi::document`]).
//!
//! | method | path | body / query |
//! |---|---|---|
//! | `POST` | `/accounts` | `{"id", "owner", "currency", "overdraft_limit"?}` |
//! | `POST` | `/accounts/{id}/deposits`, `/withdrawals` | `{"amount", "currency", "reference"?}` |
//! | `POST` | `/accounts/{id}/freeze`, `/unfreeze`, `/close` | `{"reason"?}` |
//! | `POST` | `/transfers` | `{"from", "to", "amount", "currency", "reference"?}` |
//! | `GET` | `/accounts`, `/accounts/{id}`, `/totals`, `/transfers/{id}` | |
//! | `GET` | `/accounts/{id}/statement`, `/accounts/{id}/history`, `/transfers`, `/trace/{correlation_id}` | `?after=CURSOR&limit=N`: pages `{"items", "next"}` |
//! | `GET` | `/accounts/{id}/balance` | `?version=N` or `?at=RFC3339` (years 1-9999) |
//! | `GET` | `/health` | the consumers' status: checkpoint, lag, parked events |
//!
//! Amounts are integers in minor units (`1250` with `"EUR"` is 12.50 EUR); a float is refused.
//! Totals are sums over accounts and may exceed 64 bits. Lists come in pages of `limit`
//! items (1-1000, default 100); `next` is the `after` of the next page, `null` on the last.
//!
//! Every command needs an `X-User-Id` header; `X-Correlation-Id` and `X-Causation-Id`
//! (UUIDs) are optional. `Idempotency-Key` (1-200 characters) makes a POST safe to retry:
//! the command runs under a [`CommandKey`](es_core::CommandKey) derived from it, so a retry
//! (after a 5xx, a lost reply, a restart, on any server sharing the store) returns the
//! command's first outcome instead of acting again. The same key with another request for
//! the same account (or transfer key) is a 422; a refused command (4xx) writes nothing, so
//! its retry runs anew.
//!
//! Errors are JSON: `{"error": {"code", "message", "error_id"?}}`: 400 for malformed input,
//! 404 for unknown accounts and transfers, 408 when a request outlives its timeouts, 409 for
//! an existing id or a conflict that survived the retries, 413 for a body over the limit, 422
//! for a command the domain refuses, 500 with an `error_id` (the detail is logged under it).
//! Every response carries `X-Request-Id` (the client's, or a new UUID), also on the log lines.

pub mod dto;
pub mod error;
pub mod openapi;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::ServiceBuilderExt;
use tower_http::request_id::MakeRequestUuid;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tower_http::trace::TraceLayer;

pub use error::{ApiError, ApiResult};

use crate::app::{Ledger, Store};

/// The service's limits and timeouts (`ledger serve --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpOptions {
    /// Address to listen on.
    #[arg(long, env = "LEDGER_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,
    /// Seconds a client has to send a request's headers, from the connection's start or
    /// the end of the previous response: also how long an idle keep-alive connection stays.
    #[arg(long, env = "LEDGER_HEADER_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub header_timeout: Duration,
    /// Seconds a client has to send a request's body.
    #[arg(long, env = "LEDGER_BODY_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub body_timeout: Duration,
    /// Seconds a request may take in all, body and handling (a transfer waits for its outcome).
    #[arg(long, env = "LEDGER_REQUEST_TIMEOUT", default_value = "30", value_parser = seconds)]
    pub request_timeout: Duration,
    /// The largest request body, in bytes.
    #[arg(long, env = "LEDGER_BODY_LIMIT", default_value = "16384")]
    pub body_limit: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            body_limit: 16 * 1024,
        }
    }
}

fn seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

/// The API's router over `ledger`, with request ids, tracing, the body limit and timeouts.
pub fn router<S: Store>(ledger: Ledger<S>, options: &HttpOptions) -> Router {
    use routes::*;
    let traced = TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
        let id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok());
        let (method, uri) = (request.method(), request.uri());
        tracing::info_span!("request", id = id.unwrap_or_default(), %method, %uri)
    });
    let layers = ServiceBuilder::new()
        .set_x_request_id(MakeRequestUuid)
        .propagate_x_request_id()
        .layer(traced)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            options.request_timeout,
        ))
        .layer(RequestBodyTimeoutLayer::new(options.body_timeout))
        .layer(DefaultBodyLimit::max(options.body_limit));
    Router::new()
        .route(
            "/openapi.json",
            get(async || axum::Json(openapi::document())),
        )
        .route("/health", get(health::<S>))
        .route("/accounts", post(open_account::<S>).get(balances::<S>))
        .route("/accounts/{id}", get(account::<S>))
        .route("/accounts/{id}/{command}", post(account_command::<S>))
        .route("/accounts/{id}/statement", get(statement::<S>))
        .route("/accounts/{id}/history", get(history::<S>))
        .route("/accounts/{id}/balance", get(balance_as_of::<S>))
        .route("/transfers", post(transfer::<S>).get(transfers::<S>))
        .route("/transfers/{id}", get(transfer_status::<S>))
        .route("/totals", get(totals::<S>))
        .route("/trace/{correlation_id}", get(trace::<S>))
        .fallback(async || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route"))
        .with_state(ledger)
        .layer(layers)
}

/// Serves the API on `listener` until `shutdown` completes, then lets requests in flight
/// finish (for at most the request timeout). Each connection reads a request's headers
/// within the header timeout (idle keep-alive connections close after it too).
pub async fn serve<S: Store>(
    ledger: Ledger<S>,
    listener: TcpListener,
    options: HttpOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = router(ledger, &options);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::task::yield_now().await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection closed");
            }
        });
    }
    let _ = tokio::time::timeout(options.request_timeout, graceful.shutdown()).await;
    Ok(())
}

/// Binds `options.addr` (port 0 for any) and serves the API in a background task; returns
/// the bound address. For tests and embedding.
pub async fn spawn<S: Store>(
    ledger: Ledger<S>,
    options: HttpOptions,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(options.addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(ledger, listener, options, std::future::pending()));
    Ok(bound)
}
