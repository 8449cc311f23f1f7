-- es-postgres schema, version 2: a frontier per schema, and the filtered read of the log.
--
-- Run, like every migration of this crate, with `search_path` set to the store's schema; the
-- functions are created with every name qualified by that schema (see version 1).
--
-- 1. Announcements carry a tag derived from the schema, so that appends in one schema no
--    longer hold back followers of another schema of the same database. The two-int advisory
--    key of an announcement is now
--        classid = 69 << 24 | tag << 16 | (bound >> 32)      objid = bound & 0xffffffff
--    with `tag` in 1..=255 (`es_schema_tag()`, from the md5 of the schema name) and `bound`
--    below 2^48 (the position sequence's new MAXVALUE: appends beyond it fail loudly instead
--    of announcing a truncated bound). Two schemas whose tags collide see each other's
--    announcements: that only delays their followers, never makes them skip. Tag 0 is the
--    format of version 1 (bounds below 2^48 encode identically), which every schema's
--    followers still respect, so appends of an older build running during the upgrade are
--    never skipped either.
-- 2. Readers now report how far they scanned (`LogPage::scanned_to`), so the frontier must
--    be exact: announcements carry the sequence's next value (not its last one), a fresh
--    sequence (`is_called` false, whose next value is `last_value` itself) counts right, and
--    a stale announcement no longer pulls the frontier below positions already visible.
-- 3. `es_append` loses its `p_notify` parameter (the store notifies after commit) and
--    announces with the tag. `es_read_all` is replaced by `es_read_log`, which filters in the
--    database and returns the frontier it read below (in a last, marking row).

ALTER TABLE events ALTER COLUMN position SET MAXVALUE 281474976710655;

DROP FUNCTION es_read_all(bigint, bigint);
DROP FUNCTION es_append(text, text, bigint, uuid[], text[], integer[], jsonb[], jsonb[], boolean);

DO $do$
DECLARE
    v_tag integer := 1 + (('x' || left(md5(current_schema()), 4))::bit(16)::integer % 255);
BEGIN
EXECUTE format($fn$
-- The schema's announcement tag, 1..=255. IMMUTABLE SQL, so statements that call it have it
-- folded into a constant when they are planned.
CREATE FUNCTION %1$I.es_schema_tag() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $body$ SELECT %2$s $body$;

-- The global log's safe frontier: every position below it that is not visible yet never will
-- be (see version 1 and the crate docs). Reads the sequence first, then the announcements of
-- this schema (and untagged ones); callers take their data snapshot after this returns.
CREATE OR REPLACE FUNCTION %1$I.es_frontier() RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $body$
DECLARE
    v_next bigint;
    v_lock bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'es-postgres reads the global log only in READ COMMITTED transactions (this one is %%)',
            current_setting('transaction_isolation');
    END IF;
    -- The lowest position the sequence can still hand out.
    SELECT CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END INTO v_next
    FROM %1$I.events_position_seq s;
    SELECT min(((l.classid::bigint & 65535) << 32) | l.objid::bigint) INTO v_lock
    FROM pg_catalog.pg_locks l
    WHERE l.locktype = 'advisory'
      AND l.objsubid = 2
      AND (l.classid::bigint >> 16) IN ((69 << 8) | %2$s, 69 << 8)
      AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                        WHERE d.datname = pg_catalog.current_database());
    IF v_lock IS NULL OR v_lock >= v_next THEN
        RETURN v_next;
    END IF;
    -- An announced bound can be stale: between an appender's read of the sequence and the
    -- grant of its lock, others may draw positions and commit them. The appender's own
    -- positions are drawn later, so none of them is a position visible now: move over
    -- visible positions (each probe a new statement, so a new snapshot, taken after the
    -- lock read). Without this, such a bound would pull the frontier below rows already
    -- returned (the head would go back); with it, the frontier stops at the first position
    -- not visible (an in-flight append's, or one rolled back).
    WHILE v_lock < v_next AND EXISTS (SELECT 1 FROM %1$I.events e WHERE e.position = v_lock) LOOP
        v_lock := v_lock + 1;
    END LOOP;
    RETURN v_lock;
END;
$body$;

-- Up to p_limit events after p_after, below the frontier and below p_before (if given),
-- selected by aggregate types, event names and a lower bound of the recorded time (each
-- ignored when NULL), in position order; then one more row that marks the frontier: its
-- `position` holds the frontier and every other column is NULL. (A frontier column on every
-- row would make PostgreSQL project each row, which doubled the cost of a scan.)
--
-- A filter on names (or types) reads each name's events through the (event_name, position)
-- (or (aggregate_type, position)) index, at most p_limit of each, and merges them: a sparse
-- consumer reads what it takes, not what it skips. Custom plans on every call, so that the
-- planner sees which filters are NULL.
CREATE FUNCTION %1$I.es_read_log(
    p_after  bigint,
    p_limit  bigint,
    p_types  text[],
    p_names  text[],
    p_from   timestamptz,
    p_before bigint
) RETURNS SETOF %1$I.events
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_custom_plan
AS $body$
DECLARE
    v_frontier bigint := %1$I.es_frontier();
    v_end      bigint := least(v_frontier, coalesce(p_before, v_frontier));
    v_mark     %1$I.events;
BEGIN
    IF p_names IS NOT NULL THEN
        RETURN QUERY
            SELECT m.*
            FROM (SELECT DISTINCT n.name FROM unnest(p_names) AS n (name)) k
            CROSS JOIN LATERAL (
                SELECT ev.* FROM %1$I.events ev
                WHERE ev.event_name = k.name AND ev.position > p_after AND ev.position < v_end
                  AND (p_types IS NULL OR ev.aggregate_type = ANY (p_types))
                  AND (p_from IS NULL OR ev.recorded_at >= p_from)
                ORDER BY ev.position
                LIMIT p_limit) m
            ORDER BY m.position
            LIMIT p_limit;
    ELSIF p_types IS NOT NULL THEN
        RETURN QUERY
            SELECT m.*
            FROM (SELECT DISTINCT t.name FROM unnest(p_types) AS t (name)) k
            CROSS JOIN LATERAL (
                SELECT ev.* FROM %1$I.events ev
                WHERE ev.aggregate_type = k.name AND ev.position > p_after AND ev.position < v_end
                  AND (p_from IS NULL OR ev.recorded_at >= p_from)
                ORDER BY ev.position
                LIMIT p_limit) m
            ORDER BY m.position
            LIMIT p_limit;
    ELSE
        RETURN QUERY
            SELECT * FROM %1$I.events ev
            WHERE ev.position > p_after AND ev.position < v_end
              AND (p_from IS NULL OR ev.recorded_at >= p_from)
            ORDER BY ev.position
            LIMIT p_limit;
    END IF;
    v_mark.position := v_frontier;
    RETURN NEXT v_mark;
END;
$body$;

-- Appends a batch to one stream in one call (the store's slow path; see version 1).
--
-- p_expected: -1 any, -3 the stream exists, n >= 0 exactly version n (0: no stream yet); the
-- store's `codes::EXPECT_*`. Returns one row per result, `kind` telling which (the store's
-- `codes::KIND_*`):
--   'a'  appended: position, version, recorded_at of each new event, in version order;
--   'c'  conflict: `ver` is the stream's actual version; nothing was written;
--   'd'  some ids are already stored: the stored rows, for the caller to compare (an
--        idempotent retry when all match); nothing was written.
CREATE FUNCTION %1$I.es_append(
    p_type            text,
    p_id              text,
    p_expected        bigint,
    p_ids             uuid[],
    p_names           text[],
    p_schema_versions integer[],
    p_payloads        jsonb[],
    p_metadata        jsonb[]
) RETURNS TABLE (
    kind            "char",
    pos             bigint,
    ver             bigint,
    at              timestamptz,
    stored_id       uuid,
    stored_type     text,
    stored_agg_id   text,
    stored_name     text,
    stored_schema   integer,
    stored_payload  jsonb,
    stored_metadata jsonb
)
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $body$
DECLARE
    v_actual bigint;
    v_now    timestamptz;
BEGIN
    SELECT e.version INTO v_actual
    FROM %1$I.events e
    WHERE e.aggregate_type = p_type AND e.aggregate_id = p_id
    ORDER BY e.version DESC
    LIMIT 1;
    v_actual := coalesce(v_actual, 0);

    IF EXISTS (SELECT 1 FROM unnest(p_ids) AS i (id) JOIN %1$I.events e ON e.event_id = i.id) THEN
        RETURN QUERY
            SELECT 'd'::"char", e.position, e.version, e.recorded_at, e.event_id, e.aggregate_type,
                   e.aggregate_id, e.event_name, e.schema_version, e.payload, e.metadata
            FROM %1$I.events e WHERE e.event_id = ANY (p_ids) ORDER BY e.position;
        RETURN;
    END IF;

    IF NOT (p_expected = -1 OR (p_expected = -3 AND v_actual > 0) OR v_actual = p_expected) THEN
        RETURN QUERY SELECT 'c'::"char", NULL::bigint, v_actual, NULL::timestamptz, NULL::uuid,
            NULL::text, NULL::text, NULL::text, NULL::integer, NULL::jsonb, NULL::jsonb;
        RETURN;
    END IF;
    IF cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;

    -- Announce a lower bound of the positions this transaction is about to take: the next
    -- value of the sequence, read and announced in one expression.
    PERFORM pg_advisory_xact_lock_shared((69 << 24) | (%2$s << 16) | (n.v >> 32)::integer,
                                         (n.v & 4294967295)::bit(32)::integer)
    FROM (SELECT least(CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END,
                       281474976710655) AS v
          FROM %1$I.events_position_seq s) n;

    v_now := clock_timestamp();
    RETURN QUERY
        INSERT INTO %1$I.events AS e (event_id, aggregate_type, aggregate_id, version, event_name,
                                 schema_version, payload, metadata, recorded_at)
        SELECT u.id, p_type, p_id, v_actual + u.ord, u.name, u.sv, u.payload, u.meta, v_now
        FROM unnest(p_ids, p_names, p_schema_versions, p_payloads, p_metadata)
             WITH ORDINALITY AS u (id, name, sv, payload, meta, ord)
        ORDER BY u.ord
        RETURNING 'a'::"char", e.position, e.version, e.recorded_at, NULL::uuid, NULL::text,
                  NULL::text, NULL::text, NULL::integer, NULL::jsonb, NULL::jsonb;
END;
$body$;
$fn$, current_schema(), v_tag);
END;
$do$;
