//! es-core's store-conformance suite, unchanged, against SQLite: a fresh temporary file per
//! case; the cases that model a second process get a second store opened on the same file
//! (its own connections, its own change watcher).

use es_sqlite::SqliteStore;

async fn fresh_store() -> SqliteStore {
    SqliteStore::temporary()
        .await
        .expect("a temporary SQLite store")
}

async fn reopen(store: &SqliteStore) -> SqliteStore {
    SqliteStore::open(store.path())
        .await
        .expect("a second store on the same file")
}

es_core::conformance_tests!(
    fresh_store().await,
    other_handle(store) = reopen(&store).await
);
