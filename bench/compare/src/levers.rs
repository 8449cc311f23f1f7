//! Our append statements sent by hand, each with one part changed, to measure what that
//! part costs in the same run (issue 16's levers). They write to `hand.events` (the table of
//! our shape) through the hand-written pool, so they differ from the hand-written INSERT only
//! in the statement, and from our store only in the client path.
//!
//! The statements are copies of es-postgres's `sql::append_one` and `sql::append_fast` (the
//! array statement every append used before the one-event statement), with the table
//! changed; the announcement reads `hand.events`' own sequence and uses the tag of schema
//! `ours`, as an append of ours would.

/// The announcement of es-postgres (`sql::announce`): a shared advisory lock whose key is the
/// sequence's next value, taken before the statement draws a position.
fn announce() -> &'static str {
    "(SELECT pg_advisory_xact_lock_shared((69 << 24) | (ours.es_schema_tag() << 16) \
            | (q.next >> 32)::integer, (q.next & 4294967295)::bit(32)::integer) \
      FROM (SELECT least(CASE WHEN x.is_called THEN x.last_value + 1 ELSE x.last_value END, \
                         281474976710655) AS next \
            FROM hand.events_position_seq x) q)"
}

/// Our one-event statement (`$1`, `$2` the stream, `$3` the expected version, `$4` to `$8`
/// the event) as the store sends it for a version it has seen (`probed` false) or not (true:
/// it looks for version `$3` first), with or without the announcement. Without it a follower
/// could skip the event: for measurement only.
pub fn one_event(announced: bool, probed: bool) -> String {
    let announce = if announced { announce() } else { "NULL::void" };
    let condition = if probed {
        "EXISTS (SELECT 1 FROM hand.events x \
         WHERE x.aggregate_type = $1 AND x.aggregate_id = $2 AND x.version = $3)"
    } else {
        "true"
    };
    format!(
        "INSERT INTO hand.events AS e (event_id, aggregate_type, aggregate_id, version, \
           event_name, schema_version, payload, metadata, recorded_at) \
         SELECT $4, $1, $2, g.base + 1, $5, $6, $7, $8, g.now \
         FROM ( \
           SELECT b.base, clock_timestamp() AS now, {announce} AS announced \
           FROM (SELECT $3::bigint AS base) b \
           WHERE {condition} \
           OFFSET 0) g \
         RETURNING e.position, e.version, e.recorded_at"
    )
}

/// The array statement (`$4` to `$8` arrays), which sent every append before the one-event
/// statement existed: `unnest`, a CTE and an aggregate of the positions.
pub fn arrays() -> String {
    let announce = announce();
    format!(
        "WITH appended AS ( \
         INSERT INTO hand.events AS e (event_id, aggregate_type, aggregate_id, version, \
           event_name, schema_version, payload, metadata, recorded_at) \
         SELECT u.id, $1, $2, g.base + u.ord, u.name, u.sv, u.payload, u.meta, g.now \
         FROM ( \
           SELECT b.base, clock_timestamp() AS now, {announce} AS announced \
           FROM (SELECT CASE WHEN $3::bigint >= 0 THEN $3::bigint ELSE 0 END AS base) b \
           WHERE CASE WHEN $3::bigint > 0 THEN EXISTS ( \
                        SELECT 1 FROM hand.events x \
                        WHERE x.aggregate_type = $1 AND x.aggregate_id = $2 AND x.version = $3) \
                      ELSE true END \
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

/// The write path of the commit-order design: a plain INSERT into a table of our shape with
/// an `xid8` column defaulting to `pg_current_xact_id()` and an index on `(xid, position)`,
/// no announcement.
pub const XID8_INSERT: &str = "INSERT INTO hx.events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version, payload, metadata, recorded_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())";
