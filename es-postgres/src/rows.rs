//! Typed rows: what each statement of [`crate::sql`] returns, decoded by name with
//! `sqlx::FromRow`, and converted into es-core's types by `TryFrom`. A value out of range or
//! unreadable metadata is [`Error::BadRow`] naming the stream, the version and (where the
//! row has one) the position; nothing is dropped or replaced by a default.

use chrono::{DateTime, Utc};
use es_core::{Error, Metadata, ParkedEvent, RecordedEvent, ReplayEvent, Snapshot, StreamId};
use serde_json::value::RawValue;
use sqlx::postgres::{PgRow, PgTypeInfo, PgValueRef};
use sqlx::types::Json;
use sqlx::{FromRow, Postgres, Row};
use uuid::Uuid;

use crate::sql::codes;

/// A stored event: the columns of [`crate::sql::EVENT_COLUMNS`], decoded by their place in
/// that list (every statement decoded into it selects exactly those columns, in that order:
/// a lookup by name per column and row costs a scan of the log about a tenth of its time).
#[derive(Debug)]
pub(crate) struct EventRow {
    pub(crate) position: i64,
    pub(crate) event_id: Uuid,
    pub(crate) aggregate_type: String,
    pub(crate) aggregate_id: String,
    pub(crate) version: i64,
    pub(crate) event_name: String,
    pub(crate) schema_version: i32,
    pub(crate) payload: Box<RawValue>,
    pub(crate) metadata: MetadataColumn,
    pub(crate) recorded_at: DateTime<Utc>,
}

impl<'r> FromRow<'r, PgRow> for EventRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            position: row.try_get(0)?,
            event_id: row.try_get(1)?,
            aggregate_type: row.try_get(2)?,
            aggregate_id: row.try_get(3)?,
            version: row.try_get(4)?,
            event_name: row.try_get(5)?,
            schema_version: row.try_get(6)?,
            payload: row.try_get(7)?,
            metadata: row.try_get(8)?,
            recorded_at: row.try_get(9)?,
        })
    }
}

/// The `metadata` column, parsed once; metadata of the wrong shape is kept as its error, so
/// that it becomes an [`Error::BadRow`] naming the row rather than a decoding error of the
/// whole result.
#[derive(Debug)]
pub(crate) struct MetadataColumn(pub(crate) Result<Metadata, String>);

impl sqlx::Type<Postgres> for MetadataColumn {
    fn type_info() -> PgTypeInfo {
        <Json<Metadata> as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Json<Metadata> as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for MetadataColumn {
    fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(Self(
            <Json<Metadata> as sqlx::Decode<'r, Postgres>>::decode(value)
                .map(|Json(metadata)| metadata)
                .map_err(|e| format!("metadata: {e}")),
        ))
    }
}

impl MetadataColumn {
    /// Metadata stored as JSON text (for rows returned by `es_append`).
    fn parse(raw: &RawValue) -> Self {
        Self(serde_json::from_str(raw.get()).map_err(|e| format!("metadata: {e}")))
    }
}

/// What is wrong with a row, before the stream and position are attached.
struct Bad(String);

fn unsigned(value: i64, what: &str) -> Result<u64, Bad> {
    u64::try_from(value).map_err(|_| Bad(format!("{what} {value} is negative")))
}

fn positive(value: i64, what: &str) -> Result<u64, Bad> {
    match u64::try_from(value) {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(Bad(format!("{what} {value} is not positive"))),
    }
}

fn schema_version(value: i32, what: &str) -> Result<u32, Bad> {
    match u32::try_from(value) {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(Bad(format!("{what} {value} is not positive"))),
    }
}

fn bad_row(stream: StreamId, version: i64, position: Option<i64>, bad: Bad) -> Error {
    Error::BadRow {
        stream,
        // A negative version is reported as 0; the reason says what it was.
        version: u64::try_from(version).unwrap_or(0),
        position: position.and_then(|p| u64::try_from(p).ok()),
        reason: bad.0,
    }
}

impl TryFrom<EventRow> for RecordedEvent {
    type Error = Error;

    fn try_from(row: EventRow) -> Result<Self, Error> {
        let stream = StreamId::new(row.aggregate_type, row.aggregate_id);
        let checked = (|| {
            Ok::<_, Bad>((
                positive(row.position, "position")?,
                positive(row.version, "version")?,
                schema_version(row.schema_version, "schema version")?,
                row.metadata.0.map_err(Bad)?,
            ))
        })();
        match checked {
            Ok((position, version, schema_version, metadata)) => Ok(RecordedEvent {
                event_id: row.event_id,
                stream,
                version,
                position,
                event_name: row.event_name,
                schema_version,
                payload: row.payload,
                metadata,
                recorded_at: row.recorded_at,
            }),
            Err(bad) => Err(bad_row(stream, row.version, Some(row.position), bad)),
        }
    }
}

/// A row of the global log read (`es_read_log`): an event, or the last row, which marks the
/// frontier the read stayed below (its `position` holds the frontier, every other column is
/// NULL).
#[derive(Debug)]
// Nearly every row is an event; boxing it would cost an allocation per event of a scan.
#[allow(clippy::large_enum_variant)]
pub(crate) enum LogRow {
    Event(EventRow),
    Frontier(i64),
}

impl<'r> FromRow<'r, PgRow> for LogRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        // Columns in the order of `sql::EVENT_COLUMNS`: 1 is the event id, 0 the position.
        match row.try_get::<Option<Uuid>, _>(1)? {
            Some(_) => EventRow::from_row(row).map(LogRow::Event),
            None => row.try_get(0).map(LogRow::Frontier),
        }
    }
}

/// The one row of the plain-SQL append: all NULL when it wrote nothing.
#[derive(Debug, FromRow)]
pub(crate) struct FastAppendRow {
    pub(crate) positions: Option<Vec<i64>>,
    pub(crate) first_version: Option<i64>,
    pub(crate) recorded_at: Option<DateTime<Utc>>,
}

/// Where each event of a batch landed.
#[derive(Debug)]
pub(crate) struct Landed {
    pub(crate) position: u64,
    pub(crate) version: u64,
    pub(crate) recorded_at: DateTime<Utc>,
}

impl FastAppendRow {
    /// Where the batch landed, or `None` when the statement wrote nothing.
    pub(crate) fn landed(
        self,
        stream: &StreamId,
        events: usize,
    ) -> Result<Option<Vec<Landed>>, Error> {
        let (Some(positions), Some(first), Some(recorded_at)) =
            (self.positions, self.first_version, self.recorded_at)
        else {
            return Ok(None);
        };
        if positions.len() != events {
            return Err(Error::backend(format!(
                "the append to {stream} returned {} positions for {events} events",
                positions.len()
            )));
        }
        let mut landed = Vec::with_capacity(events);
        let mut version = first;
        for position in positions {
            let checked = (|| {
                Ok::<_, Bad>((
                    positive(position, "position")?,
                    positive(version, "version")?,
                ))
            })();
            let (position_u, version_u) =
                checked.map_err(|bad| bad_row(stream.clone(), version, Some(position), bad))?;
            landed.push(Landed {
                position: position_u,
                version: version_u,
                recorded_at,
            });
            version = version.checked_add(1).ok_or_else(|| {
                bad_row(
                    stream.clone(),
                    version,
                    Some(position),
                    Bad("version overflows".into()),
                )
            })?;
        }
        Ok(Some(landed))
    }
}

/// The row of the one-event append (`sql::append_one`), when it wrote.
#[derive(Debug, FromRow)]
pub(crate) struct OneAppendRow {
    pub(crate) position: i64,
    pub(crate) version: i64,
    pub(crate) recorded_at: DateTime<Utc>,
}

impl OneAppendRow {
    /// Where the event landed.
    pub(crate) fn landed(self, stream: &StreamId) -> Result<Landed, Error> {
        let checked = (|| {
            Ok::<_, Bad>((
                positive(self.position, "position")?,
                positive(self.version, "version")?,
            ))
        })();
        let (position, version) = checked
            .map_err(|bad| bad_row(stream.clone(), self.version, Some(self.position), bad))?;
        Ok(Landed {
            position,
            version,
            recorded_at: self.recorded_at,
        })
    }
}

/// A row of the group append (`sql::append_group`): one written event.
#[derive(Debug, FromRow)]
pub(crate) struct GroupRow {
    pub(crate) event_id: Uuid,
    pub(crate) position: i64,
    pub(crate) version: i64,
    pub(crate) recorded_at: DateTime<Utc>,
}

impl GroupRow {
    /// Where the event landed (`stream` names it in an error).
    pub(crate) fn landed(self, stream: &StreamId) -> Result<Landed, Error> {
        OneAppendRow {
            position: self.position,
            version: self.version,
            recorded_at: self.recorded_at,
        }
        .landed(stream)
    }
}

/// A row of `es_append` (see the migration): its `kind` ([`codes`]) says which columns hold.
#[derive(Debug, FromRow)]
pub(crate) struct AppendRow {
    pub(crate) kind: i8,
    pub(crate) pos: Option<i64>,
    pub(crate) ver: Option<i64>,
    pub(crate) at: Option<DateTime<Utc>>,
    pub(crate) stored_id: Option<Uuid>,
    pub(crate) stored_type: Option<String>,
    pub(crate) stored_agg_id: Option<String>,
    pub(crate) stored_name: Option<String>,
    pub(crate) stored_schema: Option<i32>,
    pub(crate) stored_payload: Option<Box<RawValue>>,
    pub(crate) stored_metadata: Option<Box<RawValue>>,
}

/// What one call of `es_append` concluded.
#[derive(Debug)]
pub(crate) enum AppendOutcome {
    /// It appended: where each event landed, in batch order.
    Appended(Vec<Landed>),
    /// The expectation failed; the stream's actual version.
    Conflict(u64),
    /// Some of the ids are stored: these events (compare them with the batch).
    Stored(Vec<RecordedEvent>),
}

impl AppendRow {
    fn byte(&self) -> u8 {
        self.kind.to_ne_bytes()[0]
    }

    /// Reads the rows of one call for an append to `stream`.
    pub(crate) fn outcome(rows: Vec<AppendRow>, stream: &StreamId) -> Result<AppendOutcome, Error> {
        let Some(first) = rows.first() else {
            return Ok(AppendOutcome::Appended(Vec::new()));
        };
        let missing = |what: &str| {
            Error::backend(format!(
                "es_append for {stream} returned a row without {what}"
            ))
        };
        match first.byte() {
            codes::KIND_CONFLICT => {
                let version = first.ver.ok_or_else(|| missing("a version"))?;
                u64::try_from(version)
                    .map(AppendOutcome::Conflict)
                    .map_err(|_| {
                        bad_row(
                            stream.clone(),
                            version,
                            None,
                            Bad(format!("actual version {version} is negative")),
                        )
                    })
            }
            codes::KIND_STORED => rows
                .into_iter()
                .map(|row| row.stored(&missing))
                .collect::<Result<_, _>>()
                .map(AppendOutcome::Stored),
            codes::KIND_APPENDED => rows
                .into_iter()
                .map(|row| {
                    let (Some(pos), Some(ver), Some(at)) = (row.pos, row.ver, row.at) else {
                        return Err(missing("a position"));
                    };
                    let checked =
                        (|| Ok::<_, Bad>((positive(pos, "position")?, positive(ver, "version")?)))(
                        );
                    let (position, version) =
                        checked.map_err(|bad| bad_row(stream.clone(), ver, Some(pos), bad))?;
                    Ok(Landed {
                        position,
                        version,
                        recorded_at: at,
                    })
                })
                .collect::<Result<_, _>>()
                .map(AppendOutcome::Appended),
            other => Err(Error::backend(format!(
                "es_append for {stream} returned a row of unknown kind {other}"
            ))),
        }
    }

    fn stored(self, missing: &dyn Fn(&str) -> Error) -> Result<RecordedEvent, Error> {
        let (
            Some(position),
            Some(version),
            Some(recorded_at),
            Some(event_id),
            Some(aggregate_type),
            Some(aggregate_id),
            Some(event_name),
            Some(schema_version),
            Some(payload),
            Some(metadata),
        ) = (
            self.pos,
            self.ver,
            self.at,
            self.stored_id,
            self.stored_type,
            self.stored_agg_id,
            self.stored_name,
            self.stored_schema,
            self.stored_payload,
            self.stored_metadata,
        )
        else {
            return Err(missing("a stored event"));
        };
        RecordedEvent::try_from(EventRow {
            position,
            event_id,
            aggregate_type,
            aggregate_id,
            version,
            event_name,
            schema_version,
            payload,
            metadata: MetadataColumn::parse(&metadata),
            recorded_at,
        })
    }
}

/// A row of `load_stream`: the snapshot (kind [`codes::KIND_SNAPSHOT`]) or an event.
#[derive(Debug, FromRow)]
pub(crate) struct LoadRow {
    pub(crate) kind: i8,
    pub(crate) version: i64,
    pub(crate) event_name: Option<String>,
    /// The event's schema version, or the snapshot's state version.
    pub(crate) schema_version: i32,
    /// The event's payload, or the snapshot's state.
    pub(crate) payload: Box<RawValue>,
    pub(crate) taken_at: Option<DateTime<Utc>>,
}

/// One row of `load_stream`, converted.
pub(crate) enum Loaded {
    Snapshot(Snapshot),
    Event(ReplayEvent),
}

impl LoadRow {
    pub(crate) fn convert(self, stream: &StreamId) -> Result<Loaded, Error> {
        let bad = |bad| bad_row(stream.clone(), self.version, None, bad);
        if self.kind.to_ne_bytes()[0] == codes::KIND_SNAPSHOT {
            let version = unsigned(self.version, "snapshot version").map_err(bad)?;
            let state_version =
                schema_version(self.schema_version, "snapshot state version").map_err(bad)?;
            let taken_at = self
                .taken_at
                .ok_or_else(|| bad(Bad("snapshot without a time".into())))?;
            return Ok(Loaded::Snapshot(Snapshot {
                stream: stream.clone(),
                version,
                state_version,
                state: self.payload,
                taken_at,
            }));
        }
        let version = positive(self.version, "version").map_err(bad)?;
        let schema_version = schema_version(self.schema_version, "schema version").map_err(bad)?;
        let event_name = self
            .event_name
            .ok_or_else(|| bad(Bad("event without a name".into())))?;
        Ok(Loaded::Event(ReplayEvent {
            version,
            event_name,
            schema_version,
            payload: self.payload,
        }))
    }
}

/// A stored snapshot (its stream is the one asked for).
#[derive(Debug, FromRow)]
pub(crate) struct SnapshotRow {
    pub(crate) version: i64,
    pub(crate) state_version: i32,
    pub(crate) state: Box<RawValue>,
    pub(crate) taken_at: DateTime<Utc>,
}

impl SnapshotRow {
    pub(crate) fn convert(self, stream: &StreamId) -> Result<Snapshot, Error> {
        let bad = |bad| bad_row(stream.clone(), self.version, None, bad);
        Ok(Snapshot {
            stream: stream.clone(),
            version: unsigned(self.version, "snapshot version").map_err(bad)?,
            state_version: schema_version(self.state_version, "snapshot state version")
                .map_err(bad)?,
            state: self.state,
            taken_at: self.taken_at,
        })
    }
}

/// A parked event: the columns of [`crate::sql::PARKED_COLUMNS`].
#[derive(Debug, FromRow)]
pub(crate) struct ParkedRow {
    pub(crate) position: i64,
    pub(crate) event_id: Option<Uuid>,
    pub(crate) aggregate_type: String,
    pub(crate) aggregate_id: String,
    pub(crate) version: i64,
    pub(crate) event_name: String,
    pub(crate) error: String,
    pub(crate) attempts: i32,
    pub(crate) parked_at: DateTime<Utc>,
}

impl TryFrom<ParkedRow> for ParkedEvent {
    type Error = Error;

    fn try_from(row: ParkedRow) -> Result<Self, Error> {
        let stream = StreamId::new(row.aggregate_type, row.aggregate_id);
        let checked = (|| {
            Ok::<_, Bad>((
                unsigned(row.position, "parked position")?,
                unsigned(row.version, "parked version")?,
                u32::try_from(row.attempts)
                    .map_err(|_| Bad(format!("attempts {} is negative", row.attempts)))?,
            ))
        })();
        match checked {
            Ok((position, version, attempts)) => Ok(ParkedEvent {
                position,
                event_id: row.event_id,
                stream,
                version,
                event_name: row.event_name,
                error: row.error,
                attempts,
                parked_at: row.parked_at,
            }),
            Err(bad) => Err(bad_row(stream, row.version, Some(row.position), bad)),
        }
    }
}

/// A position read from the database (checkpoint, frontier, head): never negative.
pub(crate) fn position(value: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| {
        Error::backend(format!(
            "the database returned {what} {value}, which is negative"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(position: i64, version: i64, schema: i32, metadata: &str) -> EventRow {
        EventRow {
            position,
            event_id: Uuid::nil(),
            aggregate_type: "T".into(),
            aggregate_id: "a".into(),
            version,
            event_name: "E".into(),
            schema_version: schema,
            payload: RawValue::from_string("{}".into()).expect("json"),
            metadata: MetadataColumn::parse(&RawValue::from_string(metadata.into()).expect("json")),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn out_of_range_columns_are_bad_rows_naming_the_row() {
        let cases = [
            (row(-1, 1, 1, "{}"), "position", None),
            (row(7, 0, 1, "{}"), "version", Some(7)),
            (row(7, 2, 0, "{}"), "schema version", Some(7)),
            (row(7, 2, 1, r#"{"user_id": 5}"#), "metadata", Some(7)),
        ];
        for (row, reason, position) in cases {
            match RecordedEvent::try_from(row) {
                Err(Error::BadRow {
                    stream,
                    position: p,
                    reason: r,
                    ..
                }) => {
                    assert_eq!(stream, StreamId::new("T", "a"));
                    assert_eq!(p, position, "{r}");
                    assert!(r.contains(reason), "{r}");
                }
                other => panic!("expected a bad row, got {other:?}"),
            }
        }
        assert!(RecordedEvent::try_from(row(7, 2, 1, "{}")).is_ok());
    }
}
