//! es-core's store-conformance suite against PostgreSQL with an inline projection: appends
//! then run in a transaction with the projection, and must keep exactly the plain append's
//! contract (races, idempotent retries, cancellation).

mod common;

es_core::conformance_tests!(
    common::fresh_inline_store().await,
    other_handle(store) = common::reopen_inline(&store)
);
