//! The PostgreSQL store of the PostgreSQL-backed variants.

/// The PostgreSQL the tests use (`DATABASE_URL`, default the local one).
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A schema name starting with `prefix` that no other test (or test run) uses.
pub fn unique_schema(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// A PostgreSQL store on schema `schema` (created and migrated if needed), panicking loudly
/// when PostgreSQL is unreachable.
pub async fn postgres_store(schema: &str) -> es_postgres::PostgresStore {
    let url = database_url();
    match es_postgres::PostgresStore::connect_with(
        &url,
        es_postgres::StoreOptions::new().schema(schema),
    )
    .await
    {
        Ok(store) => store,
        Err(e) => panic!("PostgreSQL is not reachable at {url} ({e}): these tests need it"),
    }
}

/// Drops a test schema.
pub async fn drop_schema(store: &es_postgres::PostgresStore, schema: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(store.pool())
    .await
    .expect("drop the test schema");
}
