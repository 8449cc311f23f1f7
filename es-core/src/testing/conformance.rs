//! The store-conformance suite.
