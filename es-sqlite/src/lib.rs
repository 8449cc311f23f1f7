//! es-sqlite (work in progress).
