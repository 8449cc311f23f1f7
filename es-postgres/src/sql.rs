//! Every statement the store sends, in one place, with the (validated, quoted) schema spliced
//! in once per store. The functions they call live in the migrations; the rows they return
//! are decoded by the typed structs of [`crate::rows`].

use std::sync::Arc;

use es_core::{Error, ExpectedVersion};

/// Codes shared by the SQL and the Rust side of the append.
///
/// The plain-SQL append below splices them in; `es_append` (migration version 2) uses the same
/// literals, and the test `append_codes_match_the_database` checks each against it.
pub(crate) mod codes {
    /// `ExpectedVersion::Any`.
    pub(crate) const EXPECT_ANY: i64 = -1;
    /// `ExpectedVersion::StreamExists`. (`NoStream` is `0`, `Exact(n)` is `n`.)
    pub(crate) const EXPECT_EXISTS: i64 = -3;
    /// `es_append` row kind: an event it appended (position, version, time).
    pub(crate) const KIND_APPENDED: u8 = b'a';
    /// `es_append` row kind: the expectation failed; `ver` is the actual version.
    pub(crate) const KIND_CONFLICT: u8 = b'c';
    /// `es_append` row kind: an event with one of the batch's ids is already stored.
    pub(crate) const KIND_STORED: u8 = b'd';
    /// `load_stream` row kind: the snapshot.
    pub(crate) const KIND_SNAPSHOT: u8 = b's';
    /// `load_stream` row kind: an event.
    pub(crate) const KIND_EVENT: u8 = b'e';
    /// Top byte of every announcement's advisory-lock key (see the crate docs).
    pub(crate) const ANNOUNCE_TAG: i32 = 69;
    /// The largest position (the sequence's `MAXVALUE`): announcements encode 48 bits.
    pub(crate) const MAX_POSITION: i64 = (1 << 48) - 1;
}

/// The expected-version code of `expected` (see [`codes`]).
pub(crate) fn expected_code(expected: ExpectedVersion) -> Result<i64, Error> {
    Ok(match expected {
        ExpectedVersion::Any => codes::EXPECT_ANY,
        ExpectedVersion::NoStream => 0,
        ExpectedVersion::StreamExists => codes::EXPECT_EXISTS,
        ExpectedVersion::Exact(v) => i64::try_from(v)
            .map_err(|_| Error::Invalid(format!("expected version {v} exceeds {}", i64::MAX)))?,
    })
}

/// The columns of a stored event, decoded by [`crate::rows::EventRow`] (by name).
pub(crate) const EVENT_COLUMNS: &str = "position, event_id, aggregate_type, aggregate_id, version, \
     event_name, schema_version, payload, metadata, recorded_at";

/// The columns of a parked event, decoded by [`crate::rows::ParkedRow`] (by name).
pub(crate) const PARKED_COLUMNS: &str = "position, event_id, aggregate_type, aggregate_id, version, \
     event_name, error, attempts, parked_at";

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

/// The store's statements, with its schema spliced in.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    pub(crate) append: Arc<str>,
    pub(crate) append_fast: ByCheck,
    pub(crate) append_one: ByCheck,
    pub(crate) append_group: Arc<str>,
    pub(crate) read_range_all: Arc<str>,
    pub(crate) read_range_types: Arc<str>,
    pub(crate) read_range_names: Arc<str>,
    pub(crate) notify: Arc<str>,
    pub(crate) read_stream: Arc<str>,
    pub(crate) read_event: Arc<str>,
    pub(crate) stream_version: Arc<str>,
    pub(crate) read_log: Arc<str>,
    pub(crate) head_position: Arc<str>,
    pub(crate) load_snapshot: Arc<str>,
    pub(crate) save_snapshot: Arc<str>,
    pub(crate) load_stream: Arc<str>,
    pub(crate) load_checkpoint: Arc<str>,
    pub(crate) save_checkpoint: Arc<str>,
    pub(crate) lock_checkpoint: Arc<str>,
    pub(crate) park: Arc<str>,
    pub(crate) parked: Arc<str>,
    pub(crate) unpark: Arc<str>,
    pub(crate) channel: String,
}

/// Takes a session-level advisory lock if free (a lease).
pub(crate) const TRY_LEASE: &str = "SELECT pg_try_advisory_lock($1)";

/// The backend holding the session-level advisory lock `$1` in this database.
pub(crate) const LEASE_HOLDER: &str = "SELECT l.pid FROM pg_catalog.pg_locks l \
     WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted \
       AND ((l.classid::bigint << 32) | l.objid::bigint) = $1 \
       AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d \
                         WHERE d.datname = pg_catalog.current_database())";

/// A transaction's start and end, sent as simple queries. The commit first runs a statement
/// that fails in an aborted transaction: PostgreSQL answers `COMMIT` in such a transaction
/// with a silent `ROLLBACK`, which must not pass for a commit.
pub(crate) const BEGIN: &str = "BEGIN";
pub(crate) const COMMIT: &str = "SELECT 1; COMMIT";
pub(crate) const ROLLBACK: &str = "ROLLBACK";

impl Sql {
    pub(crate) fn new(schema: &str) -> Self {
        // `schema` is validated by `validate_schema`, so quoting it is enough.
        let s = format!("\"{schema}\"");
        let cols = EVENT_COLUMNS;
        let parked_cols = PARKED_COLUMNS;
        Self {
            append: format!("SELECT * FROM {s}.es_append($1, $2, $3, $4, $5, $6, $7, $8)").into(),
            append_fast: ByCheck::new(|check| append_fast(&s, check)),
            append_one: ByCheck::new(|check| append_one(&s, check)),
            append_group: append_group(&s).into(),
            // A range of the log below a frontier computed earlier (see `crate::read_ahead`):
            // plain indexed reads without a frontier of their own, shaped like the three
            // branches of `es_read_log`. `$1` after, `$2` the frontier (exclusive), `$3` types,
            // `$4` names, `$5` recorded from, `$6` limit.
            read_range_all: format!(
                "SELECT {cols} FROM {s}.events \
                 WHERE position > $1 AND position < $2 \
                   AND ($5::timestamptz IS NULL OR recorded_at >= $5) \
                 ORDER BY position LIMIT $6"
            )
            .into(),
            read_range_types: format!(
                "SELECT {cols} FROM ( \
                   SELECT ev.* FROM (SELECT DISTINCT t.name FROM unnest($3::text[]) AS t (name)) k \
                   CROSS JOIN LATERAL ( \
                     SELECT * FROM {s}.events x \
                     WHERE x.aggregate_type = k.name AND x.position > $1 AND x.position < $2 \
                       AND ($5::timestamptz IS NULL OR x.recorded_at >= $5) \
                     ORDER BY x.position LIMIT $6) ev) m \
                 ORDER BY m.position LIMIT $6"
            )
            .into(),
            read_range_names: format!(
                "SELECT {cols} FROM ( \
                   SELECT ev.* FROM (SELECT DISTINCT n.name FROM unnest($4::text[]) AS n (name)) k \
                   CROSS JOIN LATERAL ( \
                     SELECT * FROM {s}.events x \
                     WHERE x.event_name = k.name AND x.position > $1 AND x.position < $2 \
                       AND ($3::text[] IS NULL OR x.aggregate_type = ANY ($3)) \
                       AND ($5::timestamptz IS NULL OR x.recorded_at >= $5) \
                     ORDER BY x.position LIMIT $6) ev) m \
                 ORDER BY m.position LIMIT $6"
            )
            .into(),
            notify: "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')"
                .into(),
            read_stream: format!(
                "SELECT {cols} FROM {s}.events \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 \
                   AND version >= $3 AND version <= $4 \
                   AND ($5::text[] IS NULL OR event_name = ANY ($5)) \
                   AND ($6::timestamptz IS NULL OR recorded_at <= $6) \
                 ORDER BY version"
            )
            .into(),
            read_event: format!("SELECT {cols} FROM {s}.events WHERE event_id = $1").into(),
            stream_version: format!(
                "SELECT coalesce(max(version), 0) FROM {s}.events \
                 WHERE aggregate_type = $1 AND aggregate_id = $2"
            )
            .into(),
            // The events, then a row marking the frontier (see `rows::LogRow`).
            read_log: format!("SELECT {cols} FROM {s}.es_read_log($1, $2, $3, $4, $5, $6)")
                .into(),
            head_position: format!("SELECT {s}.es_head()").into(),
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
            // Only what a replay needs, decoded by `rows::LoadRow`: the snapshot row (kind 's',
            // if one of state version $3 exists) first, then the events after it.
            // The snapshot counts only if its stream has an event at its version. `OFFSET 0`
            // keeps that EXISTS a probe of the unique key: pulled up into a semi-join, the
            // planner scanned the whole stream.
            load_stream: format!(
                "WITH snap AS ( \
                   SELECT version, state_version, state, taken_at FROM {s}.snapshots sn \
                   WHERE aggregate_type = $1 AND aggregate_id = $2 AND state_version = $3 \
                     AND EXISTS (SELECT 1 FROM {s}.events e WHERE e.aggregate_type = $1 \
                                 AND e.aggregate_id = $2 AND e.version = sn.version \
                                 OFFSET 0)) \
                 (SELECT '{snap}'::\"char\" AS kind, snap.version, NULL::text AS event_name, \
                         snap.state_version AS schema_version, snap.state AS payload, snap.taken_at \
                  FROM snap) \
                 UNION ALL \
                 (SELECT '{event}'::\"char\", e.version, e.event_name, e.schema_version, e.payload, \
                         NULL::timestamptz \
                  FROM {s}.events e \
                  WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 \
                    AND e.version > coalesce((SELECT version FROM snap), 0) \
                  ORDER BY e.version)",
                snap = char::from(codes::KIND_SNAPSHOT),
                event = char::from(codes::KIND_EVENT),
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
            // Creates the row if needed and locks it until the transaction ends.
            lock_checkpoint: format!(
                "INSERT INTO {s}.checkpoints AS t (name, position) VALUES ($1, 0) \
                 ON CONFLICT (name) DO UPDATE SET name = t.name \
                 RETURNING t.position"
            )
            .into(),
            park: format!(
                "INSERT INTO {s}.parked_events (consumer, {parked_cols}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (consumer, position) DO UPDATE \
                   SET event_id = excluded.event_id, aggregate_type = excluded.aggregate_type, \
                       aggregate_id = excluded.aggregate_id, version = excluded.version, \
                       event_name = excluded.event_name, error = excluded.error, \
                       attempts = excluded.attempts, parked_at = excluded.parked_at"
            )
            .into(),
            parked: format!(
                "SELECT {parked_cols} FROM {s}.parked_events WHERE consumer = $1 ORDER BY position"
            )
            .into(),
            unpark: format!("DELETE FROM {s}.parked_events WHERE consumer = $1 AND position = $2")
                .into(),
            channel: format!("es_events_{schema}"),
        }
    }
}

/// What a plain-SQL append statement checks of the expected version. Each check is a
/// statement of its own, with no branch on its parameters: PostgreSQL plans a prepared
/// statement for its parameter values (a custom plan) until a plan for any values (the
/// generic plan) is estimated no dearer. A statement that chose its check with a `CASE` on
/// `$3` folded to a cheap custom plan while its generic plan kept every branch, so it was
/// planned again on every execution, at more server time than the insert itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Nothing: `$3` is the stream's version, 0 for `NoStream` or one the store knows exists
    /// (see `crate::known`).
    None,
    /// That version `$3` exists: an `Exact` version the store has not seen. Without it an
    /// append onto a shorter stream would leave a gap.
    Version,
    /// Nothing of `$3`, which is a negative code: the append goes after the stream's last
    /// version, which must exist for `StreamExists`.
    Tail,
}

impl Check {
    /// The check an append at `expected` needs; `known`: the store has seen that version.
    pub(crate) fn of(expected: ExpectedVersion, known: bool) -> Self {
        match expected {
            ExpectedVersion::Any | ExpectedVersion::StreamExists => Check::Tail,
            ExpectedVersion::NoStream => Check::None,
            ExpectedVersion::Exact(_) if known => Check::None,
            ExpectedVersion::Exact(0) => Check::None,
            ExpectedVersion::Exact(_) => Check::Version,
        }
    }

    /// The stream's version the events follow (`b.base`) and the condition the append needs.
    fn base_and_condition(self, s: &str) -> (String, String) {
        match self {
            Check::None => ("$3::bigint".to_owned(), "true".to_owned()),
            Check::Version => (
                "$3::bigint".to_owned(),
                format!(
                    "EXISTS (SELECT 1 FROM {s}.events x \
                     WHERE x.aggregate_type = $1 AND x.aggregate_id = $2 AND x.version = $3)"
                ),
            ),
            Check::Tail => (
                format!(
                    "coalesce((SELECT x.version FROM {s}.events x \
                     WHERE x.aggregate_type = $1 AND x.aggregate_id = $2 \
                     ORDER BY x.version DESC LIMIT 1), 0)"
                ),
                format!("($3::bigint <> {} OR b.base > 0)", codes::EXPECT_EXISTS),
            ),
        }
    }
}

/// One statement per [`Check`].
#[derive(Debug, Clone)]
pub(crate) struct ByCheck {
    none: Arc<str>,
    version: Arc<str>,
    tail: Arc<str>,
}

impl ByCheck {
    fn new(statement: impl Fn(Check) -> String) -> Self {
        Self {
            none: statement(Check::None).into(),
            version: statement(Check::Version).into(),
            tail: statement(Check::Tail).into(),
        }
    }

    pub(crate) fn get(&self, check: Check) -> Arc<str> {
        match check {
            Check::None => self.none.clone(),
            Check::Version => self.version.clone(),
            Check::Tail => self.tail.clone(),
        }
    }
}

/// The plain-SQL append: one statement, no plpgsql, returning one row (`rows::FastAppendRow`)
/// with the positions in version order (versions are consecutive and the time is the batch's).
/// `$3` is the expected-version code ([`codes`]).
///
/// It checks only what the unique keys cannot (see [`Check`]). When the check fails it inserts
/// nothing and returns a row of NULLs; a stream version or event id that is already taken
/// fails the statement with a unique violation. Either way the caller asks `es_append` what
/// happened (a conflict, or an idempotent retry).
///
/// The subquery `g` is evaluated once, before any row is produced and so before the identity
/// default draws a position: it makes the announcement ([`announce`]). `OFFSET 0` keeps the
/// planner from pulling it into the join.
fn append_fast(s: &str, check: Check) -> String {
    let announce = announce(s);
    let (base, condition) = check.base_and_condition(s);
    format!(
        "WITH appended AS ( \
         INSERT INTO {s}.events AS e (event_id, aggregate_type, aggregate_id, version, \
           event_name, schema_version, payload, metadata, recorded_at) \
         SELECT u.id, $1, $2, g.base + u.ord, u.name, u.sv, u.payload, u.meta, g.now \
         FROM ( \
           SELECT b.base, clock_timestamp() AS now, {announce} AS announced \
           FROM (SELECT {base} AS base) b \
           WHERE {condition} \
           OFFSET 0) g \
         CROSS JOIN unnest($4::uuid[], $5::text[], $6::int[], $7::jsonb[], $8::jsonb[]) \
              WITH ORDINALITY AS u (id, name, sv, payload, meta, ord) \
         ORDER BY u.ord \
         RETURNING e.position, e.version, e.recorded_at) \
         SELECT array_agg(position ORDER BY version) AS positions, min(version) AS first_version, \
                min(recorded_at) AS recorded_at \
         FROM appended"
    )
}

/// The announcement shared by every append statement: reads the sequence's next value (a
/// lower bound of every position the statement is about to draw) and takes the shared,
/// transaction-scoped advisory lock that publishes it to followers, tagged with the schema
/// (see `es_frontier` and the crate docs). Evaluated as a column of a subquery fenced with
/// `OFFSET 0`, before any row is produced and so before the identity default draws.
fn announce(s: &str) -> String {
    let tag = codes::ANNOUNCE_TAG;
    let max_position = codes::MAX_POSITION;
    format!(
        "(SELECT pg_advisory_xact_lock_shared(({tag} << 24) | ({s}.es_schema_tag() << 16) \
                     | (q.next >> 32)::integer, (q.next & 4294967295)::bit(32)::integer) \
          FROM (SELECT least(CASE WHEN x.is_called THEN x.last_value + 1 ELSE x.last_value END, \
                             {max_position}) AS next \
                FROM {s}.events_position_seq x) q)"
    )
}

/// The plain-SQL append of one event: the statement of [`append_fast`] with scalar
/// parameters instead of arrays (no `unnest`, no aggregate), returning the new row or no row
/// when the check failed. `$1`, `$2` the stream, `$3` the expected-version code, `$4` to `$8`
/// the event (id, name, schema version, payload, metadata). A version or id already taken
/// fails the statement with a unique violation, as in [`append_fast`].
fn append_one(s: &str, check: Check) -> String {
    let announce = announce(s);
    let (base, condition) = check.base_and_condition(s);
    format!(
        "INSERT INTO {s}.events AS e (event_id, aggregate_type, aggregate_id, version, \
           event_name, schema_version, payload, metadata, recorded_at) \
         SELECT $4, $1, $2, g.base + 1, $5, $6, $7, $8, g.now \
         FROM ( \
           SELECT b.base, clock_timestamp() AS now, {announce} AS announced \
           FROM (SELECT {base} AS base) b \
           WHERE {condition} \
           OFFSET 0) g \
         RETURNING e.position, e.version, e.recorded_at"
    )
}

/// Group commit: the appends of several writers to distinct streams in one statement, so in
/// one transaction, with one announcement (see `crate::group`). Per append (arrays `$1` to
/// `$3`, in group order): the stream and the expected-version code. Per event (arrays `$4` to
/// `$10`): the index of its append in the group (1-based), id, name, schema version, payload,
/// metadata, and its offset in its append (1-based).
///
/// An append is written only if everything the unique keys would otherwise refuse is free:
/// its expectation holds, the version after its base is not taken, and none of its ids is
/// stored; otherwise none of its events is written and the caller decides it alone (a
/// conflict, an idempotent retry). Returns the written events (id, position, version, time).
/// A unique violation can then only come from an append that is still uncommitted elsewhere
/// (a race): it fails the whole statement, which writes nothing.
///
/// Every array is read through a scalar subquery, so the planner never sees its length: a
/// plan for the group's actual lengths (a custom plan) looked cheaper than the plan for any
/// lengths, so PostgreSQL planned the statement again for every group.
fn append_group(s: &str) -> String {
    let exists = codes::EXPECT_EXISTS;
    let announce = announce(s);
    format!(
        "WITH req AS MATERIALIZED ( \
           SELECT r.k, r.t, r.a, r.x, \
                  CASE WHEN r.x >= 0 THEN r.x ELSE coalesce(( \
                    SELECT v.version FROM {s}.events v \
                    WHERE v.aggregate_type = r.t AND v.aggregate_id = r.a \
                    ORDER BY v.version DESC LIMIT 1), 0) END AS base \
           FROM unnest((SELECT $1::text[]), (SELECT $2::text[]), (SELECT $3::bigint[])) \
                WITH ORDINALITY AS r (t, a, x, k)), \
         ev AS MATERIALIZED ( \
           SELECT * FROM unnest((SELECT $4::int[]), (SELECT $5::uuid[]), (SELECT $6::text[]), \
                                (SELECT $7::int[]), (SELECT $8::jsonb[]), (SELECT $9::jsonb[]), \
                                (SELECT $10::int[])) \
                    WITH ORDINALITY AS u (k, id, name, sv, payload, meta, off, n)), \
         ok AS MATERIALIZED ( \
           SELECT req.k, req.t, req.a, req.base FROM req \
           WHERE CASE WHEN req.x > 0 THEN EXISTS ( \
                        SELECT 1 FROM {s}.events x \
                        WHERE x.aggregate_type = req.t AND x.aggregate_id = req.a \
                          AND x.version = req.x) \
                      WHEN req.x = {exists} THEN req.base > 0 \
                      ELSE true END \
             AND NOT EXISTS (SELECT 1 FROM {s}.events x \
                             WHERE x.aggregate_type = req.t AND x.aggregate_id = req.a \
                               AND x.version = req.base + 1) \
             AND NOT EXISTS (SELECT 1 FROM ev JOIN {s}.events x ON x.event_id = ev.id \
                             WHERE ev.k = req.k)), \
         g AS MATERIALIZED (SELECT clock_timestamp() AS now, {announce} AS announced) \
         INSERT INTO {s}.events AS e (event_id, aggregate_type, aggregate_id, version, \
           event_name, schema_version, payload, metadata, recorded_at) \
         SELECT ev.id, ok.t, ok.a, ok.base + ev.off, ev.name, ev.sv, ev.payload, ev.meta, g.now \
         FROM g CROSS JOIN ok JOIN ev ON ev.k = ok.k \
         ORDER BY ev.n \
         RETURNING e.event_id, e.position, e.version, e.recorded_at"
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
