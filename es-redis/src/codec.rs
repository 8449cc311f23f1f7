//! How an event is written into a stream entry and into the PUBLISH message, and read back.

use chrono::{DateTime, SecondsFormat, Utc};
use es_core::{Error, Metadata, RecordedEvent, StreamId};
use redis::Value;
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

/// The fields of every stream entry, in this order. The entry id is `{position}-0`;
/// `previous` is the position of the event published before it (0 for the first), so a
/// reader can tell that entries it has not seen were trimmed or deleted.
pub const FIELDS: [&str; 11] = [
    "event_id",
    "aggregate_type",
    "aggregate_id",
    "version",
    "event_name",
    "schema_version",
    "payload",
    "metadata",
    "recorded_at",
    "position",
    "previous",
];

/// The values of [`FIELDS`] for `event`, published after the event at `previous`.
pub(crate) fn field_values(event: &RecordedEvent, previous: u64) -> Result<[String; 11], Error> {
    Ok([
        event.event_id.to_string(),
        event.stream.aggregate_type.clone(),
        event.stream.aggregate_id.clone(),
        event.version.to_string(),
        event.event_name.clone(),
        event.schema_version.to_string(),
        event.payload.get().to_owned(),
        serde_json::to_string(&event.metadata).map_err(Error::Encode)?,
        event
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        event.position.to_string(),
        previous.to_string(),
    ])
}

/// The message of `PUBLISH events:{AggregateType}`: the JSON the system this framework
/// replaces sent to its live consumers, plus the global position.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Published<'a> {
    id: Uuid,
    aggregate_id: &'a str,
    aggregate_type: &'a str,
    event_type: &'a str,
    version: u64,
    data: &'a RawValue,
    metadata: &'a Metadata,
    position: u64,
}

/// The PUBLISH message for `event`:
/// `{"id","aggregateId","aggregateType","eventType","version","data","metadata","position"}`.
pub fn publish_message(event: &RecordedEvent) -> Result<String, Error> {
    serde_json::to_string(&Published {
        id: event.event_id,
        aggregate_id: &event.stream.aggregate_id,
        aggregate_type: &event.stream.aggregate_type,
        event_type: &event.event_name,
        version: event.version,
        data: &event.payload,
        metadata: &event.metadata,
        position: event.position,
    })
    .map_err(Error::Encode)
}

/// The position in an entry id `{position}-{n}`.
pub(crate) fn position_of_id(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

/// Reads a decimal position returned by a script (a bulk or simple string, or an integer).
pub(crate) fn position_of_value(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(text) => text.parse().ok(),
        _ => None,
    }
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

/// The position in an entry's id, without decoding the rest.
pub(crate) fn entry_position(entry: &Value) -> Option<u64> {
    match entry {
        Value::Array(parts) => position_of_id(text(parts.first()?)?),
        _ => None,
    }
}

/// Decodes one entry as XRANGE returns it (`[id, [field, value, ...]]`) into the recorded
/// event it carries. An entry that cannot be read is [`Error::BadRow`] with its position, so
/// a consumer parks it and reads on.
pub(crate) fn decode_entry(entry: &Value) -> Result<(RecordedEvent, u64), Error> {
    let Value::Array(parts) = entry else {
        return Err(bad(None, None, "an entry is not an array".into()));
    };
    let (Some(id), Some(fields)) = (parts.first().and_then(text), parts.get(1)) else {
        return Err(bad(None, None, "an entry has no id or no fields".into()));
    };
    let position = position_of_id(id);
    let Value::Array(fields) = fields else {
        return Err(bad(
            None,
            position,
            format!("entry {id}'s fields are not an array"),
        ));
    };
    let mut values: [Option<&str>; 11] = [None; 11];
    for pair in fields.chunks(2) {
        if let [name, value] = pair
            && let (Some(name), Some(value)) = (text(name), text(value))
            && let Some(index) = FIELDS.iter().position(|f| *f == name)
        {
            values[index] = Some(value);
        }
    }
    let field = |index: usize| {
        values[index].ok_or_else(|| format!("entry {id} has no field `{}`", FIELDS[index]))
    };
    let stream = match (field(1), field(2)) {
        (Ok(t), Ok(i)) => Some(StreamId::new(t, i)),
        _ => None,
    };
    let decoded = (|| -> Result<(RecordedEvent, u64), String> {
        let parse_err = |name: &str, e: &dyn std::fmt::Display| format!("field `{name}`: {e}");
        let event_id = Uuid::parse_str(field(0)?).map_err(|e| parse_err("event_id", &e))?;
        let version = field(3)?.parse().map_err(|e| parse_err("version", &e))?;
        let schema_version = field(5)?
            .parse()
            .map_err(|e| parse_err("schema_version", &e))?;
        let payload =
            RawValue::from_string(field(6)?.to_owned()).map_err(|e| parse_err("payload", &e))?;
        let metadata: Metadata =
            serde_json::from_str(field(7)?).map_err(|e| parse_err("metadata", &e))?;
        let recorded_at = DateTime::parse_from_rfc3339(field(8)?)
            .map_err(|e| parse_err("recorded_at", &e))?
            .with_timezone(&Utc);
        let stated: u64 = field(9)?.parse().map_err(|e| parse_err("position", &e))?;
        if Some(stated) != position {
            return Err(format!("entry {id} states position {stated}"));
        }
        let previous: u64 = field(10)?.parse().map_err(|e| parse_err("previous", &e))?;
        Ok((
            RecordedEvent {
                event_id,
                stream: StreamId::new(field(1)?, field(2)?),
                version,
                position: stated,
                event_name: field(4)?.to_owned(),
                schema_version,
                payload,
                metadata,
                recorded_at,
            },
            previous,
        ))
    })();
    decoded.map_err(|reason| bad(stream, position, reason))
}

fn bad(stream: Option<StreamId>, position: Option<u64>, reason: String) -> Error {
    Error::BadRow {
        stream: stream.unwrap_or_else(|| StreamId::new("?", "?")),
        version: 0,
        position,
        reason: format!("Redis stream entry: {reason}"),
    }
}
