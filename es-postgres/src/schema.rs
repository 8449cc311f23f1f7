//! The store's schema name and the SQL text that depends on it.

use std::sync::Arc;

use es_core::Error;

/// Checks that `name` is a plain lower-case SQL identifier: `[a-z_][a-z0-9_]*`, at most 63
/// bytes (PostgreSQL's limit), and not starting with `pg_` (reserved for system schemas).
pub(crate) fn validate_schema(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let valid_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid_start || !valid_rest || name.len() > 63 || name.starts_with("pg_") {
        return Err(Error::Invalid(format!(
            "schema name {name:?} is not a plain identifier ([a-z_][a-z0-9_]*, at most 63 bytes, not pg_*)"
        )));
    }
    Ok(())
}

/// Every statement the store runs, with the (validated, quoted) schema spliced in once.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    pub(crate) append: Arc<str>,
    pub(crate) append_fast: Arc<str>,
    pub(crate) notify: Arc<str>,
    pub(crate) read_stream: Arc<str>,
    pub(crate) stream_version: Arc<str>,
    pub(crate) read_all: Arc<str>,
    pub(crate) head_position: Arc<str>,
    pub(crate) load_snapshot: Arc<str>,
    pub(crate) save_snapshot: Arc<str>,
    pub(crate) load_checkpoint: Arc<str>,
    pub(crate) save_checkpoint: Arc<str>,
    pub(crate) lock_checkpoint: Arc<str>,
    pub(crate) load_stream: Arc<str>,
    pub(crate) channel: String,
}

/// The columns of a recorded event, in the order `decode_row` reads them.
pub(crate) const EVENT_COLUMNS: &str = "e.position, e.event_id, e.aggregate_type, e.aggregate_id, e.version, \
     e.event_name, e.schema_version, e.payload, e.metadata, e.recorded_at";

impl Sql {
    pub(crate) fn new(schema: &str) -> Self {
        // `schema` is validated by `validate_schema`, so quoting it is enough.
        let s = format!("\"{schema}\"");
        let cols = EVENT_COLUMNS;
        Self {
            append: format!("SELECT * FROM {s}.es_append($1, $2, $3, $4, $5, $6, $7, $8, $9)")
                .into(),
            append_fast: append_fast(&s).into(),
            // A notifying transaction gets an id and a commit record; nothing in it needs to be
            // durable, so it does not wait for the WAL flush.
            notify: "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')"
                .into(),
            read_stream: format!(
                "SELECT {cols} FROM {s}.events e \
                 WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 \
                   AND e.version >= $3 AND e.version <= $4 \
                   AND ($5::text[] IS NULL OR e.event_name = ANY ($5)) \
                   AND ($6::timestamptz IS NULL OR e.recorded_at <= $6) \
                 ORDER BY e.version"
            )
            .into(),
            stream_version: format!(
                "SELECT coalesce(max(e.version), 0) FROM {s}.events e \
                 WHERE e.aggregate_type = $1 AND e.aggregate_id = $2"
            )
            .into(),
            read_all: format!(
                "SELECT {cols} FROM {s}.es_read_all($1, $2) e"
            )
            .into(),
            head_position: format!(
                "SELECT {s}.es_head()"
            )
            .into(),
            load_snapshot: format!(
                "SELECT version, state_version, state, taken_at FROM {s}.snapshots \
                 WHERE aggregate_type = $1 AND aggregate_id = $2"
            )
            .into(),
            save_snapshot: format!(
                "INSERT INTO {s}.snapshots AS t \
                   (aggregate_type, aggregate_id, version, state_version, state, taken_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
                   SET version = excluded.version, state_version = excluded.state_version, \
                       state = excluded.state, taken_at = excluded.taken_at \
                   WHERE (excluded.state_version, excluded.version) >= (t.state_version, t.version)"
            )
            .into(),
            load_checkpoint: format!("SELECT position FROM {s}.checkpoints WHERE name = $1")
                .into(),
            save_checkpoint: format!(
                "INSERT INTO {s}.checkpoints (name, position) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE \
                   SET position = excluded.position, updated_at = clock_timestamp()"
            )
            .into(),
            lock_checkpoint: format!(
                "INSERT INTO {s}.checkpoints AS t (name, position) VALUES ($1, 0) \
                 ON CONFLICT (name) DO UPDATE SET name = t.name \
                 RETURNING t.position"
            )
            .into(),
            // Only what a replay needs; columns: kind, version, event_name, schema_version,
            // payload, taken_at (the last for the snapshot row only).
            load_stream: format!(
                "WITH snap AS ( \
                   SELECT version, state_version, state, taken_at FROM {s}.snapshots \
                   WHERE aggregate_type = $1 AND aggregate_id = $2 AND state_version = $3) \
                 (SELECT 's'::\"char\" AS kind, snap.version, NULL::text AS event_name, \
                         snap.state_version AS schema_version, snap.state AS payload, snap.taken_at \
                  FROM snap) \
                 UNION ALL \
                 (SELECT 'e'::\"char\", e.version, e.event_name, e.schema_version, e.payload, \
                         NULL::timestamptz \
                  FROM {s}.events e \
                  WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 \
                    AND e.version > coalesce((SELECT version FROM snap), 0) \
                  ORDER BY e.version)"
            )
            .into(),
            channel: format!("es_events_{schema}"),
        }
    }
}

/// The plain-SQL append: one statement, no plpgsql, returning one row `(positions, first
/// version, recorded_at)` with the positions in version order (versions are consecutive and
/// the time is the batch's). `$3` is the expected-version code of `es_append`.
///
/// It checks only what the unique keys cannot: that version `$3` exists when `$3 > 0` (else
/// the batch would leave a gap) and that the stream exists for `StreamExists` (`-3`). When a
/// check fails it inserts nothing and returns a row of NULLs; a stream version or event id that is
/// already taken fails the statement with a unique violation. Either way the caller asks
/// `es_append` what happened (a conflict, or an idempotent retry).
///
/// The subquery `g` is evaluated once, before any row is produced and so before the identity
/// default draws a position: it reads the sequence and announces that lower bound with the
/// shared advisory lock of the global-order design (see `es_frontier`), exactly as
/// `es_append` does. `OFFSET 0` keeps the planner from pulling it into the join.
fn append_fast(s: &str) -> String {
    format!(
        "WITH appended AS ( \
         INSERT INTO {s}.events AS e (event_id, aggregate_type, aggregate_id, version, \
           event_name, schema_version, payload, metadata, recorded_at) \
         SELECT u.id, $1, $2, g.base + u.ord, u.name, u.sv, u.payload, u.meta, g.now \
         FROM ( \
           SELECT b.base, clock_timestamp() AS now, \
                  pg_advisory_xact_lock_shared((69 << 24) | (q.last_value >> 32)::integer, \
                    (q.last_value & 4294967295)::bit(32)::integer) AS announced \
           FROM (SELECT CASE WHEN $3::bigint >= 0 THEN $3::bigint ELSE coalesce(( \
                   SELECT x.version FROM {s}.events x \
                   WHERE x.aggregate_type = $1 AND x.aggregate_id = $2 \
                   ORDER BY x.version DESC LIMIT 1), 0) END AS base) b \
           CROSS JOIN {s}.events_position_seq q \
           WHERE CASE WHEN $3::bigint > 0 THEN EXISTS ( \
                        SELECT 1 FROM {s}.events x \
                        WHERE x.aggregate_type = $1 AND x.aggregate_id = $2 AND x.version = $3) \
                      WHEN $3::bigint = -3 THEN b.base > 0 \
                      ELSE true END \
           OFFSET 0) g \
         CROSS JOIN unnest($4::uuid[], $5::text[], $6::int[], $7::jsonb[], $8::jsonb[]) \
              WITH ORDINALITY AS u (id, name, sv, payload, meta, ord) \
         ORDER BY u.ord \
         RETURNING e.position, e.version, e.recorded_at) \
         SELECT array_agg(position ORDER BY version), min(version), min(recorded_at) \
         FROM appended"
    )
}

#[cfg(test)]
mod tests {
    use super::validate_schema;

    #[test]
    fn schema_names_must_be_plain_identifiers() {
        for good in ["public", "es", "_private", "tenant_42"] {
            assert!(validate_schema(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Public",
            "1abc",
            "a-b",
            "a\"; DROP TABLE x; --",
            "pg_catalog",
            &"x".repeat(64),
        ] {
            assert!(validate_schema(bad).is_err(), "{bad:?}");
        }
    }
}
