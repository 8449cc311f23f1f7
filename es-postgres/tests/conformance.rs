//! es-core's store-conformance suite against PostgreSQL, each case on a fresh schema; the
//! cases that model a second process get a store with a pool of its own on the same schema.

mod common;

use es_postgres::StoreOptions;

es_core::conformance_tests!(
    common::fresh_store().await,
    other_handle(store) = common::reopen(&store, StoreOptions::new(), 8)
);
