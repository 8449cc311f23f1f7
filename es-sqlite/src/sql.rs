//! Every statement the store runs, and the typed rows they return.
//!
//! Lists (event names, aggregate types, event ids) are bound as one JSON array and expanded
//! with `json_each`, so each statement has one fixed text, prepared once per connection.

use std::sync::LazyLock;

/// The event columns, in the order of [`EventRow`].
macro_rules! event_columns {
    () => {
        "position, event_id, aggregate_type, aggregate_id, version, event_name, schema_version, \
         payload, correlation_id, causation_id, user_id, extra, recorded_at"
    };
}

/// A stored event, as read.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub(crate) position: i64,
    pub(crate) event_id: Vec<u8>,
    pub(crate) aggregate_type: String,
    pub(crate) aggregate_id: String,
    pub(crate) version: i64,
    pub(crate) event_name: String,
    pub(crate) schema_version: i64,
    pub(crate) payload: String,
    pub(crate) correlation_id: Option<Vec<u8>>,
    pub(crate) causation_id: Option<Vec<u8>>,
    pub(crate) user_id: Option<String>,
    pub(crate) extra: Option<String>,
    pub(crate) recorded_at: i64,
}

/// One stream's events selected by version range, time and (optionally) names.
/// ?1 type, ?2 id, ?3 first version, ?4 last version, ?5 recorded until (µs),
/// ?6 names as a JSON array or NULL for all.
pub(crate) const READ_STREAM: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events
     WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND version >= ?3 AND version <= ?4
       AND recorded_at <= ?5
       AND (?6 IS NULL OR event_name IN (SELECT value FROM json_each(?6)))
     ORDER BY version"
);

/// The stream's last version (0: none).
pub(crate) const STREAM_VERSION: &str = "SELECT coalesce(max(version), 0) FROM events \
     WHERE aggregate_type = ?1 AND aggregate_id = ?2";

/// One event by id.
pub(crate) const READ_EVENT: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE event_id = ?1"
);

/// The stored events whose ids are in ?1 (a JSON array of hex ids), for idempotent retries.
pub(crate) const EVENTS_BY_IDS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE event_id IN (SELECT unhex(value) FROM json_each(?1)) ORDER BY position"
);

/// What an append needs to know before it writes, read under the write lock.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AppendHead {
    /// The stream's last version (0: no stream).
    pub(crate) version: i64,
    /// The log's last position (0: empty).
    pub(crate) head: i64,
}

/// ?1 type, ?2 id.
pub(crate) const APPEND_HEAD: &str = "SELECT \
     coalesce((SELECT max(version) FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2), 0) AS version, \
     coalesce((SELECT max(position) FROM events), 0) AS head";

/// Columns bound per inserted event.
pub(crate) const INSERT_COLUMNS: usize = 13;

/// Rows per multi-row `INSERT`: a batch is written in chunks of these sizes, largest first,
/// so that a connection prepares at most this many insert statements.
pub(crate) const INSERT_CHUNKS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// `INSERT INTO events ... VALUES (...), ...` with `rows` rows, for each of [`INSERT_CHUNKS`].
static INSERTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    INSERT_CHUNKS
        .iter()
        .map(|&rows| {
            let row = format!("({})", vec!["?"; INSERT_COLUMNS].join(", "));
            format!(
                "INSERT INTO events ({}) VALUES {}",
                event_columns!(),
                vec![row; rows].join(", ")
            )
        })
        .collect()
});

/// The insert statement for a chunk of `rows` rows (one of [`INSERT_CHUNKS`]).
pub(crate) fn insert_events(rows: usize) -> &'static str {
    let index = INSERT_CHUNKS
        .iter()
        .position(|&r| r == rows)
        .unwrap_or(INSERT_CHUNKS.len() - 1);
    INSERTS[index].as_str()
}

/// The log's last position (0: empty).
pub(crate) const HEAD_POSITION: &str = "SELECT coalesce(max(position), 0) FROM events";

/// One row of a log read: an event of the page (`kind` 1), or the row that carries the
/// head of the statement's snapshot in `position` (`kind` 0, its other columns NULL).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LogRow {
    pub(crate) kind: i64,
    pub(crate) position: i64,
    pub(crate) event_id: Option<Vec<u8>>,
    pub(crate) aggregate_type: Option<String>,
    pub(crate) aggregate_id: Option<String>,
    pub(crate) version: Option<i64>,
    pub(crate) event_name: Option<String>,
    pub(crate) schema_version: Option<i64>,
    pub(crate) payload: Option<String>,
    pub(crate) correlation_id: Option<Vec<u8>>,
    pub(crate) causation_id: Option<Vec<u8>>,
    pub(crate) user_id: Option<String>,
    pub(crate) extra: Option<String>,
    pub(crate) recorded_at: Option<i64>,
}

impl LogRow {
    /// The event of this row; `None` for the head row (or a row missing a column, which
    /// the caller reports).
    pub(crate) fn into_event(self) -> Option<EventRow> {
        Some(EventRow {
            position: self.position,
            event_id: self.event_id?,
            aggregate_type: self.aggregate_type?,
            aggregate_id: self.aggregate_id?,
            version: self.version?,
            event_name: self.event_name?,
            schema_version: self.schema_version?,
            payload: self.payload?,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            user_id: self.user_id,
            extra: self.extra,
            recorded_at: self.recorded_at?,
        })
    }
}

/// How a page of the global log is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogScan {
    /// In position order on the primary key, list filters checked row by row: the whole
    /// log, or lists too long for one branch per value.
    Positions,
    /// One branch per aggregate type (bound from ?7 on), each reading its index in
    /// position order and stopping at the limit; the branches are merged.
    Types(usize),
    /// The same per event name, when only names are filtered.
    Names(usize),
}

/// Most list values read through their index, one branch each; longer lists scan positions.
pub(crate) const MAX_LOG_BRANCHES: usize = 16;

/// A page of the global log and the head, in one statement (so one read snapshot: the head
/// is that of the snapshot the page was read from).
///
/// ?1 after, ?2 before (exclusive), ?3 recorded from (µs), ?4 limit, ?5 aggregate types and
/// ?6 event names as JSON arrays (NULL: all), ?7… the driving list's values. The unary `+`
/// keeps SQLite from reading a list filter through an index that would lose position order.
/// Events come in position order in practice; the caller checks rather than relies on it.
pub(crate) fn read_log(scan: LogScan) -> String {
    const NAMES: &str = "(?6 IS NULL OR +event_name IN (SELECT value FROM json_each(?6)))";
    const TYPES: &str = "(?5 IS NULL OR +aggregate_type IN (SELECT value FROM json_each(?5)))";
    let range = "position > ?1 AND position < ?2 AND recorded_at >= ?3";
    // One branch reads one value's index entries in position order, up to the limit.
    let branch = |column: &str, param: usize, filter: &str| {
        format!(
            "SELECT {} FROM events WHERE {column} = ?{param} AND {range} AND {filter} \
             ORDER BY position LIMIT ?4",
            event_columns!()
        )
    };
    // Several are merged in position order (each wrapped: a compound's members cannot have
    // their own ORDER BY and LIMIT); a single one is the page itself.
    let branches = |column: &str, count: usize, filter: &str| match count {
        1 => branch(column, 7, filter),
        _ => {
            let all: Vec<String> = (7..7 + count)
                .map(|p| format!("SELECT * FROM ({})", branch(column, p, filter)))
                .collect();
            format!("{} ORDER BY position LIMIT ?4", all.join(" UNION ALL "))
        }
    };
    let page = match scan {
        LogScan::Positions => format!(
            "SELECT {} FROM events WHERE {range} AND {TYPES} AND {NAMES} ORDER BY position LIMIT ?4",
            event_columns!()
        ),
        LogScan::Types(count) => branches("aggregate_type", count, NAMES),
        LogScan::Names(count) => branches("event_name", count, TYPES),
    };
    format!(
        "SELECT 1 AS kind, page.* FROM ({page}) AS page \
         UNION ALL \
         SELECT 0, coalesce(max(position), 0), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
                NULL, NULL, NULL, NULL FROM events"
    )
}

/// A stored snapshot.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SnapshotRow {
    pub(crate) version: i64,
    pub(crate) state_version: i64,
    pub(crate) state: String,
    pub(crate) taken_at: i64,
}

/// ?1 type, ?2 id.
pub(crate) const LOAD_SNAPSHOT: &str = "SELECT version, state_version, state, taken_at \
     FROM snapshots WHERE aggregate_type = ?1 AND aggregate_id = ?2";

/// Stores a snapshot unless the stored one is newer by (state version, version).
/// ?1 type, ?2 id, ?3 version, ?4 state version, ?5 state, ?6 taken at (µs).
pub(crate) const SAVE_SNAPSHOT: &str = "INSERT INTO snapshots \
     (aggregate_type, aggregate_id, version, state_version, state, taken_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET \
         version = excluded.version, state_version = excluded.state_version, \
         state = excluded.state, taken_at = excluded.taken_at \
     WHERE (excluded.state_version, excluded.version) >= (snapshots.state_version, snapshots.version)";

/// One row of [`LOAD_STREAM`]: the snapshot (kind 0) or an event after it (kind 1).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LoadRow {
    pub(crate) kind: i64,
    pub(crate) version: i64,
    pub(crate) event_name: Option<String>,
    pub(crate) schema_version: i64,
    pub(crate) payload: String,
    pub(crate) taken_at: Option<i64>,
}

/// A snapshot of state version ?3 (none when ?3 is NULL, or when the stream has no event at
/// its version) and the events after it, in one statement. ?1 type, ?2 id. Events come in
/// version order in practice (SQLite runs a compound without ORDER BY branch after branch);
/// the caller checks rather than relies on it, which spares sorting the whole stream in SQL.
pub(crate) const LOAD_STREAM: &str = "\
    WITH snap AS ( \
        SELECT version, state_version, state, taken_at FROM snapshots s \
        WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND state_version = ?3 \
          AND EXISTS (SELECT 1 FROM events e WHERE e.aggregate_type = ?1 \
                      AND e.aggregate_id = ?2 AND e.version = s.version)) \
    SELECT 0 AS kind, version, NULL AS event_name, state_version AS schema_version, \
           state AS payload, taken_at \
    FROM snap \
    UNION ALL \
    SELECT * FROM (SELECT 1, version, event_name, schema_version, payload, NULL FROM events \
        WHERE aggregate_type = ?1 AND aggregate_id = ?2 \
          AND version > coalesce((SELECT version FROM snap), 0) \
        ORDER BY version)";

/// ?1 name.
pub(crate) const LOAD_CHECKPOINT: &str = "SELECT position FROM checkpoints WHERE name = ?1";

/// ?1 name, ?2 position, ?3 now (µs).
pub(crate) const SAVE_CHECKPOINT: &str = "INSERT INTO checkpoints (name, position, updated_at) \
     VALUES (?1, ?2, ?3) \
     ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at";

/// A parked event, as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ParkedRow {
    pub(crate) position: i64,
    pub(crate) event_id: Option<Vec<u8>>,
    pub(crate) aggregate_type: String,
    pub(crate) aggregate_id: String,
    pub(crate) version: i64,
    pub(crate) event_name: String,
    pub(crate) error: String,
    pub(crate) attempts: i64,
    pub(crate) parked_at: i64,
}

/// Stores or replaces a parked event. ?1 consumer, then the columns of [`ParkedRow`].
pub(crate) const PARK: &str = "INSERT OR REPLACE INTO parked_events \
     (consumer, position, event_id, aggregate_type, aggregate_id, version, event_name, error, \
      attempts, parked_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// ?1 consumer.
pub(crate) const PARKED: &str = "SELECT position, event_id, aggregate_type, aggregate_id, \
     version, event_name, error, attempts, parked_at \
     FROM parked_events WHERE consumer = ?1 ORDER BY position";

/// ?1 consumer, ?2 position.
pub(crate) const UNPARK: &str = "DELETE FROM parked_events WHERE consumer = ?1 AND position = ?2";

/// Takes lease ?1 for holder ?2 until ?3 (ms) if it is free or expired at ?4 (ms).
pub(crate) const TAKE_LEASE: &str = "INSERT INTO leases (name, holder, expires_at) \
     VALUES (?1, ?2, ?3) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
     WHERE leases.expires_at <= ?4";

/// Extends lease ?1 held by ?2 until ?3 (ms).
pub(crate) const RENEW_LEASE: &str =
    "UPDATE leases SET expires_at = ?3 WHERE name = ?1 AND holder = ?2";

/// Gives lease ?1 held by ?2 back.
pub(crate) const RELEASE_LEASE: &str = "DELETE FROM leases WHERE name = ?1 AND holder = ?2";

/// Changes whenever another connection (of any process) commits to the file.
pub(crate) const DATA_VERSION: &str = "PRAGMA data_version";

#[cfg(test)]
mod tests {
    use super::*;

    async fn query_plan(store: &crate::SqliteStore, statement: &str) -> String {
        let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {statement}"
        )))
        .fetch_all(store.reader())
        .await
        .expect("plan");
        rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
    }

    /// A page never sorts every matching event: it reads an index (or the primary key) in
    /// position order and stops at the limit.
    #[tokio::test]
    async fn log_pages_read_in_position_order_through_their_index() {
        let store = crate::SqliteStore::temporary().await.expect("store");
        for (scan, index) in [
            (LogScan::Positions, "INTEGER PRIMARY KEY"),
            (LogScan::Types(1), "INDEX events_by_type"),
            (LogScan::Names(1), "INDEX events_by_name"),
        ] {
            let plan = query_plan(&store, &read_log(scan)).await;
            assert!(plan.contains(index), "{scan:?}:\n{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{scan:?} sorts:\n{plan}");
        }
        // Several values: one bounded branch each, merged.
        let plan = query_plan(&store, &read_log(LogScan::Types(3))).await;
        assert_eq!(plan.matches("INDEX events_by_type").count(), 3, "{plan}");
        assert!(plan.contains("MERGE"), "{plan}");
        let load = query_plan(&store, LOAD_STREAM).await;
        assert!(!load.contains("TEMP B-TREE"), "load_stream sorts:\n{load}");
    }
}
