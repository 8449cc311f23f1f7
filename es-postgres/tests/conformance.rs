//! es-core's store-conformance suite, run against PostgreSQL (one fresh database per case).

mod common;

async fn fresh_store() -> es_postgres::PostgresStore {
    common::fresh_store().await
}

es_core::conformance_tests!(fresh_store().await);
