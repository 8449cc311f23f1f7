//! es-nats (work in progress).
