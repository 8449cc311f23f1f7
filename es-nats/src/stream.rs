//! The JetStream stream the relay writes: its settings, and creating or checking it.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{Config, RetentionPolicy, StorageType, Stream};
use es_core::Error;

use crate::conn::Conn;

/// The stream the relay writes to and sources read from.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    /// Stream name (default `EVENTS`).
    pub name: String,
    /// Subject prefix (default `events`): events go to `{prefix}.{AggregateType}.{id}`
    /// (escaped by [`escape`](crate::escape)), and the stream captures `{prefix}.>`.
    pub subject_prefix: String,
    /// Retention (default [`RetentionPolicy::Limits`]: messages stay until a limit below
    /// removes them). The relay's resume point is the stream's last message, so a policy or
    /// a limit that can remove it while the relay is stopped (interest or work-queue
    /// retention, a `max_age` shorter than the relay's downtime) leaves the relay unable to
    /// tell where it was: it then refuses to start, saying so.
    pub retention: RetentionPolicy,
    /// Replicas (default 1; 3 or 5 in a cluster).
    pub replicas: usize,
    /// The server's dedupe window for `Nats-Msg-Id` (default 2 minutes).
    pub duplicate_window: Duration,
    /// Oldest message kept (zero: no limit, the default).
    pub max_age: Duration,
    /// Most bytes kept (-1: no limit, the default).
    pub max_bytes: i64,
    /// Most messages kept (-1: no limit, the default).
    pub max_messages: i64,
    /// File (the default) or memory storage.
    pub storage: StorageType,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self::new("EVENTS", "events")
    }
}

impl StreamSettings {
    /// A stream named `name` capturing `{subject_prefix}.>`, with the defaults above.
    pub fn new(name: impl Into<String>, subject_prefix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            subject_prefix: subject_prefix.into(),
            retention: RetentionPolicy::Limits,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::ZERO,
            max_bytes: -1,
            max_messages: -1,
            storage: StorageType::File,
        }
    }

    /// The subjects the stream captures: `{subject_prefix}.>`.
    pub fn subjects(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }

    /// The core-NATS subject on which the relay announces each batch it published (payload:
    /// the last position), so sources wake up at once instead of polling:
    /// `es-head.{name}`. Outside the stream's subjects, so not stored.
    pub fn head_subject(&self) -> String {
        format!("es-head.{}", self.name)
    }

    /// The stream holding broker-side consumers' parked events: `{name}_PARKED`, one
    /// message (JSON) per consumer and position on [`StreamSettings::parked_subject`].
    pub fn parked_stream(&self) -> String {
        format!("{}_PARKED", self.name)
    }

    /// The subject of `consumer`'s parked event at `position`:
    /// `es-parked.{name}.{escape(consumer)}.{position}`.
    pub fn parked_subject(&self, consumer: &str, position: u64) -> String {
        format!("{}.{position}", self.parked_prefix(consumer))
    }

    pub(crate) fn parked_prefix(&self, consumer: &str) -> String {
        format!(
            "es-parked.{}.{}",
            self.name,
            crate::subject::escape(consumer)
        )
    }

    /// The parked-events stream, created if missing.
    pub(crate) async fn parked(&self, conn: &Conn, js: &Context) -> Result<Stream, Error> {
        let name = self.parked_stream();
        js.get_or_create_stream(Config {
            name: name.clone(),
            subjects: vec![format!("es-parked.{}.>", self.name)],
            max_messages_per_subject: 1,
            num_replicas: self.replicas,
            storage: self.storage,
            description: Some("es-nats: parked events of broker-side consumers".into()),
            ..Config::default()
        })
        .await
        .map_err(|e| conn.fail(&format!("cannot open stream `{name}` on"), &e))
    }

    fn config(&self) -> Config {
        Config {
            name: self.name.clone(),
            subjects: vec![self.subjects()],
            retention: self.retention,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            max_messages: self.max_messages,
            storage: self.storage,
            description: Some("es-nats: the global log of an es-core store".into()),
            ..Config::default()
        }
    }

    /// Creates the stream, or checks that the existing one has these settings.
    pub(crate) async fn ensure(&self, conn: &Conn, js: &Context) -> Result<Stream, Error> {
        match js.get_stream(&self.name).await {
            Ok(stream) => {
                let found = &stream.cached_info().config;
                let mut differences = Vec::new();
                if !found.subjects.contains(&self.subjects()) {
                    differences.push(format!(
                        "subjects {:?} (expected {})",
                        found.subjects,
                        self.subjects()
                    ));
                }
                if found.retention != self.retention {
                    differences.push(format!(
                        "retention {:?} (expected {:?})",
                        found.retention, self.retention
                    ));
                }
                if found.num_replicas != self.replicas {
                    differences.push(format!(
                        "replicas {} (expected {})",
                        found.num_replicas, self.replicas
                    ));
                }
                if found.duplicate_window != self.duplicate_window {
                    differences.push(format!(
                        "duplicate window {:?} (expected {:?})",
                        found.duplicate_window, self.duplicate_window
                    ));
                }
                if found.storage != self.storage {
                    differences.push(format!(
                        "storage {:?} (expected {:?})",
                        found.storage, self.storage
                    ));
                }
                if found.max_age != self.max_age
                    || found.max_bytes != self.max_bytes
                    || found.max_messages != self.max_messages
                {
                    differences.push(format!(
                        "limits max_age {:?} max_bytes {} max_messages {} (expected {:?}, {}, {})",
                        found.max_age,
                        found.max_bytes,
                        found.max_messages,
                        self.max_age,
                        self.max_bytes,
                        self.max_messages
                    ));
                }
                if differences.is_empty() {
                    Ok(stream)
                } else {
                    Err(Error::Invalid(format!(
                        "the JetStream stream `{}` at {} exists with other settings: {}; change \
                         them on the server or in the relay's settings",
                        self.name,
                        conn.url(),
                        differences.join("; ")
                    )))
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    GetStreamErrorKind::JetStream(e)
                        if e.error_code() == ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                js.create_stream(self.config())
                    .await
                    .map_err(|e| conn.fail(&format!("cannot create stream `{}` on", self.name), &e))
            }
            Err(error) => {
                Err(conn.fail(&format!("cannot read stream `{}` from", self.name), &error))
            }
        }
    }

    /// The stream, which must exist (sources do not create it).
    pub(crate) async fn get(&self, conn: &Conn, js: &Context) -> Result<Stream, Error> {
        js.get_stream(&self.name)
            .await
            .map_err(|e| conn.fail(&format!("cannot read stream `{}` from", self.name), &e))
    }
}
