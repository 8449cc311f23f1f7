//! es-redis (work in progress).
