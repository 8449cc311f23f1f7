//! From stored rows to es-core's types, and the value conversions at the SQL boundary.

use chrono::{DateTime, Utc};
use es_core::{Error, Metadata, ParkedEvent, RecordedEvent, ReplayEvent, Snapshot, StreamId};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::sql::{EventRow, LoadRow, ParkedRow, SnapshotRow};

/// Microseconds since the Unix epoch (the store's time column unit).
pub(crate) fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// The first whole microsecond at or after `time`: `recorded_at >= ceil_micros(t)` selects
/// exactly the events recorded at or after `t`.
pub(crate) fn ceil_micros(time: DateTime<Utc>) -> i64 {
    let floor = time.timestamp_micros();
    if time.timestamp_subsec_nanos().is_multiple_of(1000) {
        floor
    } else {
        floor.saturating_add(1)
    }
}

/// Now, truncated to the microsecond the store keeps, so that what an append returns equals
/// what a read returns.
pub(crate) fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// A stored microsecond count as a time.
fn time(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
}

/// A value the store wrote as a non-negative integer.
fn to_u64(value: i64) -> Option<u64> {
    u64::try_from(value).ok()
}

/// Clamps a `u64` bound to the integers SQLite stores.
pub(crate) fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn uuid(bytes: &[u8], what: &str) -> Result<Uuid, String> {
    Uuid::from_slice(bytes).map_err(|_| format!("{what} is {} bytes, not 16", bytes.len()))
}

impl EventRow {
    /// The event this row holds; [`Error::BadRow`] naming the row if a column is unreadable.
    pub(crate) fn decode(self) -> Result<RecordedEvent, Error> {
        let stream = StreamId::new(self.aggregate_type, self.aggregate_id);
        let version = to_u64(self.version).unwrap_or(0);
        let position = to_u64(self.position);
        let fields = (|| {
            if version == 0 {
                return Err(format!("version {} is not positive", self.version));
            }
            let position =
                position.ok_or_else(|| format!("position {} is negative", self.position))?;
            let event_id = uuid(&self.event_id, "the event id")?;
            let schema_version = u32::try_from(self.schema_version)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("schema version {} is out of range", self.schema_version))?;
            let payload = RawValue::from_string(self.payload)
                .map_err(|e| format!("the payload is not JSON: {e}"))?;
            let mut metadata = Metadata::new();
            metadata.correlation_id = self
                .correlation_id
                .map(|b| uuid(&b, "the correlation id"))
                .transpose()?;
            metadata.causation_id = self
                .causation_id
                .map(|b| uuid(&b, "the causation id"))
                .transpose()?;
            metadata.user_id = self.user_id;
            if let Some(extra) = self.extra {
                metadata.extra = serde_json::from_str(&extra)
                    .map_err(|e| format!("the metadata is not a JSON object: {e}"))?;
            }
            let recorded_at = time(self.recorded_at)
                .ok_or_else(|| format!("recorded_at {} is out of range", self.recorded_at))?;
            Ok((
                position,
                event_id,
                schema_version,
                payload,
                metadata,
                recorded_at,
            ))
        })();
        match fields {
            Ok((position, event_id, schema_version, payload, metadata, recorded_at)) => {
                Ok(RecordedEvent {
                    event_id,
                    stream,
                    version,
                    position,
                    event_name: self.event_name,
                    schema_version,
                    payload,
                    metadata,
                    recorded_at,
                })
            }
            Err(reason) => Err(Error::BadRow {
                stream,
                version,
                position,
                reason,
            }),
        }
    }
}

/// What [`crate::SqliteStore::load_stream`] returns, decoded from its rows.
pub(crate) fn decode_load(
    stream: &StreamId,
    rows: Vec<LoadRow>,
) -> Result<(Option<Snapshot>, Vec<ReplayEvent>), Error> {
    let mut snapshot = None;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let version = to_u64(row.version).unwrap_or(0);
        let bad = |reason: String| Error::BadRow {
            stream: stream.clone(),
            version,
            position: None,
            reason,
        };
        let schema_version = u32::try_from(row.schema_version).map_err(|_| {
            bad(format!(
                "schema version {} is out of range",
                row.schema_version
            ))
        })?;
        let payload = RawValue::from_string(row.payload)
            .map_err(|e| bad(format!("the stored JSON does not parse: {e}")))?;
        match row.event_name {
            Some(event_name) if row.kind == 1 => events.push(ReplayEvent {
                version,
                event_name,
                schema_version,
                payload,
            }),
            _ => {
                let taken_at = row
                    .taken_at
                    .and_then(time)
                    .ok_or_else(|| bad("the snapshot's time is out of range".into()))?;
                snapshot = Some(Snapshot {
                    stream: stream.clone(),
                    version,
                    state_version: schema_version,
                    state: payload,
                    taken_at,
                });
            }
        }
    }
    if !events.is_sorted_by_key(|e| e.version) {
        events.sort_by_key(|e| e.version);
    }
    Ok((snapshot, events))
}

impl SnapshotRow {
    /// The snapshot of `stream` this row holds.
    pub(crate) fn decode(self, stream: &StreamId) -> Result<Snapshot, Error> {
        let version = to_u64(self.version).unwrap_or(0);
        let bad = |reason: String| Error::BadRow {
            stream: stream.clone(),
            version,
            position: None,
            reason,
        };
        Ok(Snapshot {
            stream: stream.clone(),
            version,
            state_version: u32::try_from(self.state_version).map_err(|_| {
                bad(format!(
                    "state version {} is out of range",
                    self.state_version
                ))
            })?,
            state: RawValue::from_string(self.state)
                .map_err(|e| bad(format!("the snapshot state does not parse: {e}")))?,
            taken_at: time(self.taken_at)
                .ok_or_else(|| bad("the snapshot's time is out of range".into()))?,
        })
    }
}

impl ParkedRow {
    /// The parked event this row holds.
    pub(crate) fn decode(self) -> Result<ParkedEvent, Error> {
        let stream = StreamId::new(self.aggregate_type, self.aggregate_id);
        let version = to_u64(self.version).unwrap_or(0);
        let position = to_u64(self.position);
        let bad = |reason: String| Error::BadRow {
            stream: stream.clone(),
            version,
            position,
            reason,
        };
        Ok(ParkedEvent {
            position: position.ok_or_else(|| bad("a parked position is negative".into()))?,
            event_id: self
                .event_id
                .map(|b| uuid(&b, "the parked event id"))
                .transpose()
                .map_err(&bad)?,
            event_name: self.event_name,
            error: self.error,
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            parked_at: time(self.parked_at)
                .ok_or_else(|| bad("the parked time is out of range".into()))?,
            version,
            stream,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_round_to_the_stored_microsecond() {
        let exact = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        assert_eq!(micros(exact), 1_700_000_000_123_456);
        assert_eq!(ceil_micros(exact), 1_700_000_000_123_456);
        let between = exact + chrono::Duration::nanoseconds(1);
        assert_eq!(micros(between), 1_700_000_000_123_456, "until: floor");
        assert_eq!(ceil_micros(between), 1_700_000_000_123_457, "from: ceiling");
        let before_epoch = DateTime::from_timestamp(-1, 999_999_999).unwrap();
        assert_eq!(micros(before_epoch), -1);
        assert_eq!(ceil_micros(before_epoch), 0);
    }
}
