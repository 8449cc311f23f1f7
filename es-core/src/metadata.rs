//! Who caused an event, why, and as part of which larger flow.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::envelope::RecordedEvent;

/// Metadata carried by a command and recorded with every event it produces.
///
/// - `correlation_id` ties together everything that one request started, across aggregates.
/// - `causation_id` is the id of the message (command or event) that directly caused this one.
/// - `user_id` is who asked for it.
/// - `extra` holds anything else (IP address, tenant, reason), as free-form JSON.
///
/// ```
/// use es_core::Metadata;
/// let meta = Metadata::by_user("u-42").with_extra("reason", "monthly fee");
/// assert_eq!(meta.user_id.as_deref(), Some("u-42"));
/// assert!(meta.correlation_id.is_some());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Metadata {
    /// The flow this belongs to; every event of one command shares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The message that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The user on whose behalf this happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Anything else, as JSON.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Metadata {
    /// Empty metadata: no user, no correlation. Prefer [`Metadata::by_user`] for commands.
    pub fn new() -> Self {
        Self::default()
    }

    /// Metadata for a command issued by `user_id`, starting a new correlation.
    pub fn by_user(user_id: impl Into<String>) -> Self {
        Self {
            user_id: Some(user_id.into()),
            correlation_id: Some(Uuid::now_v7()),
            ..Self::default()
        }
    }

    /// Metadata for a message caused by `event`: same correlation and user, causation = the event.
    pub fn caused_by(event: &RecordedEvent) -> Self {
        Self {
            correlation_id: event.metadata.correlation_id.or(Some(event.event_id)),
            causation_id: Some(event.event_id),
            user_id: event.metadata.user_id.clone(),
            extra: Map::new(),
        }
    }

    /// Sets the user.
    pub fn with_user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id (typically the command's or the triggering event's id).
    pub fn with_causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Adds one free-form entry.
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// The metadata recorded on events produced by a command carrying `self`: the same
    /// correlation (a new one if the command had none), causation and user.
    pub fn for_events(&self) -> Self {
        let mut meta = self.clone();
        if meta.correlation_id.is_none() {
            meta.correlation_id = Some(Uuid::now_v7());
        }
        meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_the_commands_correlation_or_start_one() {
        let correlation = Uuid::now_v7();
        let command = Metadata::by_user("u").with_correlation_id(correlation);
        assert_eq!(command.for_events().correlation_id, Some(correlation));
        let bare = Metadata::new().for_events();
        assert!(bare.correlation_id.is_some());
        assert_ne!(
            Metadata::new().for_events().correlation_id,
            bare.correlation_id
        );
    }

    #[test]
    fn empty_fields_are_left_out_of_the_json() {
        let json = serde_json::to_value(Metadata::new().with_extra("ip", "::1")).unwrap();
        assert_eq!(json, serde_json::json!({ "extra": { "ip": "::1" } }));
        let back: Metadata = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(back, Metadata::new());
    }
}
