//! PostgreSQL event store (arrives with the es-postgres issue).
