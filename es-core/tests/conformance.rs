//! The memory store against the store-conformance suite.

es_core::conformance_tests!(es_core::MemoryStore::new());
