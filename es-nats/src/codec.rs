//! How an event becomes a JetStream message (payload as body, envelope in headers), and back.

use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use chrono::{DateTime, SecondsFormat, Utc};
use es_core::{Error, Metadata, RecordedEvent, StreamId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// Global position of the event.
pub const POSITION: &str = "Es-Position";
/// Position of the event published before it (0 for the first): a reader that sees a
/// message whose previous position it has not seen knows it missed some.
pub const PREVIOUS: &str = "Es-Previous";
/// Version of the event in its stream.
pub const VERSION: &str = "Es-Version";
/// Event name.
pub const NAME: &str = "Es-Event-Name";
/// Schema version of the payload.
pub const SCHEMA_VERSION: &str = "Es-Schema-Version";
/// Correlation id (absent when the event has none).
pub const CORRELATION_ID: &str = "Es-Correlation-Id";
/// Causation id (absent when the event has none).
pub const CAUSATION_ID: &str = "Es-Causation-Id";
/// Aggregate type (informational: control characters shown as `?`).
pub const AGGREGATE_TYPE: &str = "Es-Aggregate-Type";
/// Aggregate id (informational: control characters shown as `?`).
pub const AGGREGATE_ID: &str = "Es-Aggregate-Id";
/// When the store recorded the event (RFC 3339, nanoseconds, UTC).
pub const RECORDED_AT: &str = "Es-Recorded-At";
/// The exact envelope as compact JSON: `{"aggregate_type","aggregate_id","event_name","metadata"}`.
/// Readers decode this one; the informational headers above may lose control characters.
pub const ENVELOPE: &str = "Es-Envelope";

#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    aggregate_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    aggregate_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    event_name: std::borrow::Cow<'a, str>,
    metadata: Metadata,
}

fn readable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The headers of `event`, published after the event at `previous`.
pub(crate) fn headers(event: &RecordedEvent, previous: u64) -> Result<HeaderMap, Error> {
    let envelope = serde_json::to_string(&Envelope {
        aggregate_type: event.stream.aggregate_type.as_str().into(),
        aggregate_id: event.stream.aggregate_id.as_str().into(),
        event_name: event.event_name.as_str().into(),
        metadata: event.metadata.clone(),
    })
    .map_err(Error::Encode)?;
    let mut headers = HeaderMap::new();
    headers.insert(NATS_MESSAGE_ID, event.event_id.to_string().as_str());
    headers.insert(POSITION, event.position.to_string().as_str());
    headers.insert(PREVIOUS, previous.to_string().as_str());
    headers.insert(VERSION, event.version.to_string().as_str());
    headers.insert(NAME, readable(&event.event_name).as_str());
    headers.insert(SCHEMA_VERSION, event.schema_version.to_string().as_str());
    if let Some(id) = event.metadata.correlation_id {
        headers.insert(CORRELATION_ID, id.to_string().as_str());
    }
    if let Some(id) = event.metadata.causation_id {
        headers.insert(CAUSATION_ID, id.to_string().as_str());
    }
    headers.insert(
        AGGREGATE_TYPE,
        readable(&event.stream.aggregate_type).as_str(),
    );
    headers.insert(AGGREGATE_ID, readable(&event.stream.aggregate_id).as_str());
    headers.insert(
        RECORDED_AT,
        event
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::AutoSi, true)
            .as_str(),
    );
    headers.insert(ENVELOPE, envelope.as_str());
    Ok(headers)
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, String> {
    headers
        .get(name)
        .map(|v| v.as_str())
        .ok_or_else(|| format!("no header `{name}`"))
}

/// The position a message carries, if any.
pub(crate) fn position_of(headers: Option<&HeaderMap>) -> Option<u64> {
    headers?.get(POSITION)?.as_str().parse().ok()
}

/// Decodes a message of the relay into the event it carries and the previous position. A
/// message that cannot be read is [`Error::BadRow`] with its position where it has one.
pub(crate) fn decode(
    headers: Option<&HeaderMap>,
    payload: &[u8],
    sequence: u64,
) -> Result<(RecordedEvent, u64), Error> {
    let position = position_of(headers);
    let bad = |stream: Option<StreamId>, reason: String| Error::BadRow {
        stream: stream.unwrap_or_else(|| StreamId::new("?", "?")),
        version: 0,
        position,
        reason: format!("JetStream message {sequence}: {reason}"),
    };
    let Some(headers) = headers else {
        return Err(bad(None, "no headers".into()));
    };
    let envelope: Envelope<'_> = header(headers, ENVELOPE)
        .and_then(|json| serde_json::from_str(json).map_err(|e| format!("`{ENVELOPE}`: {e}")))
        .map_err(|reason| bad(None, reason))?;
    let stream = StreamId::new(
        envelope.aggregate_type.as_ref(),
        envelope.aggregate_id.as_ref(),
    );
    let decoded = (|| -> Result<(RecordedEvent, u64), String> {
        let number = |name: &str| -> Result<u64, String> {
            header(headers, name)?
                .parse()
                .map_err(|e| format!("`{name}`: {e}"))
        };
        let event_id = Uuid::parse_str(header(headers, "Nats-Msg-Id")?)
            .map_err(|e| format!("`Nats-Msg-Id`: {e}"))?;
        let schema_version = u32::try_from(number(SCHEMA_VERSION)?)
            .map_err(|e| format!("`{SCHEMA_VERSION}`: {e}"))?;
        let recorded_at = DateTime::parse_from_rfc3339(header(headers, RECORDED_AT)?)
            .map_err(|e| format!("`{RECORDED_AT}`: {e}"))?
            .with_timezone(&Utc);
        let body = std::str::from_utf8(payload).map_err(|e| format!("payload: {e}"))?;
        let payload =
            RawValue::from_string(body.to_owned()).map_err(|e| format!("payload: {e}"))?;
        let position = number(POSITION)?;
        Ok((
            RecordedEvent {
                event_id,
                stream: stream.clone(),
                version: number(VERSION)?,
                position,
                event_name: envelope.event_name.clone().into_owned(),
                schema_version,
                payload,
                metadata: envelope.metadata.clone(),
                recorded_at,
            },
            number(PREVIOUS)?,
        ))
    })();
    decoded.map_err(|reason| bad(Some(stream.clone()), reason))
}
