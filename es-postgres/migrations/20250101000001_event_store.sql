-- es-postgres schema, version 1.
--
-- Tables are created unqualified: `PostgresStore::migrate` runs this with `search_path` set to
-- the store's (validated) schema. The functions are created with every name qualified by that
-- schema (spliced in with format's %I), so they work whatever the caller's search path is.
-- (A `SET search_path` clause on the functions would do the same, but PostgreSQL then replans
-- their statements on every call: it made a one-event append 3.5x slower.)

-- The global log. `position` comes from an identity sequence with CACHE 1 so that values are
-- handed out in real-time order across sessions (the global-order design relies on it).
CREATE TABLE events (
    position        bigint      GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
    event_id        uuid        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    version         bigint      NOT NULL CHECK (version > 0),
    event_name      text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version > 0),
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL,
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (aggregate_type, aggregate_id, version)
);

-- One snapshot per stream: the newest by (state_version, version).
CREATE TABLE snapshots (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    version         bigint      NOT NULL,
    state_version   integer     NOT NULL,
    state           jsonb       NOT NULL,
    taken_at        timestamptz NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- The last global position each projection has processed.
CREATE TABLE checkpoints (
    name        text        PRIMARY KEY,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

DO $do$
BEGIN
EXECUTE format($fn$
-- The global log's safe frontier: every position below it that is not visible yet never will
-- be. Every append holds a shared, transaction-scoped advisory lock whose two-int key encodes
-- a lower bound of the positions it takes (tag 69 in the top byte of the first key, the
-- bound's high 24 bits below it, the low 32 bits in the second); `pg_locks` shows it to every
-- session from before the append draws a position until it commits or aborts.
--
-- Reads the sequence first, then the locks: an append that drew before the sequence read still
-- holds its lock at the lock read (or has committed), and one that draws later gets a position
-- above the sequence value. Callers must take their data snapshot after this returns (a new
-- statement in READ COMMITTED), which is why the readers below are VOLATILE plpgsql.
CREATE FUNCTION %1$I.es_frontier() RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $body$
DECLARE
    v_seq  bigint;
    v_lock bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'es-postgres reads the global log only in READ COMMITTED transactions (this one is %%)',
            current_setting('transaction_isolation');
    END IF;
    SELECT s.last_value INTO v_seq FROM %1$I.events_position_seq s;
    SELECT min(((l.classid::bigint & 16777215) << 32) | l.objid::bigint) INTO v_lock
    FROM pg_catalog.pg_locks l
    WHERE l.locktype = 'advisory'
      AND l.objsubid = 2
      AND (l.classid::bigint >> 24) = 69
      AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                        WHERE d.datname = pg_catalog.current_database());
    RETURN least(v_seq + 1, coalesce(v_lock, v_seq + 1));
END;
$body$;

-- Up to p_limit events after p_after that no running append can still precede.
CREATE FUNCTION %1$I.es_read_all(p_after bigint, p_limit bigint) RETURNS SETOF %1$I.events
LANGUAGE plpgsql VOLATILE
AS $body$
DECLARE
    v_frontier bigint := %1$I.es_frontier();
BEGIN
    RETURN QUERY
        SELECT * FROM %1$I.events e
        WHERE e.position > p_after AND e.position < v_frontier
        ORDER BY e.position
        LIMIT p_limit;
END;
$body$;

-- The highest position es_read_all can currently return (0 when none).
CREATE FUNCTION %1$I.es_head() RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $body$
DECLARE
    v_frontier bigint := %1$I.es_frontier();
BEGIN
    RETURN coalesce((SELECT max(e.position) FROM %1$I.events e WHERE e.position < v_frontier), 0);
END;
$body$;

-- Appends a batch to one stream in one call.
--
-- p_expected: -1 any, -3 the stream exists, n >= 0 exactly version n (0: no stream yet).
-- Returns one row per result, `kind` telling which:
--   'a'  appended: position, version, recorded_at of each new event, in version order;
--   'c'  conflict: `version` is the stream's actual version; nothing was written;
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
    p_metadata        jsonb[],
    p_notify          boolean
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
-- Custom plans on every call: after five calls plpgsql may switch a statement to a generic
-- plan, and generic plans for these lookups degraded with table size (appends of 100 events
-- went from 54k to 11k events/s in the benchmark). Planning these small statements each time
-- costs far less.
SET plan_cache_mode = force_custom_plan
AS $body$
DECLARE
    v_actual bigint;
    v_floor  bigint;
    v_now    timestamptz;
BEGIN
    -- The version is read before the ids: each statement sees a newer snapshot, so an
    -- identical append that commits in between shows up as stored ids, not as a conflict.
    SELECT e.version INTO v_actual
    FROM %1$I.events e
    WHERE e.aggregate_type = p_type AND e.aggregate_id = p_id
    ORDER BY e.version DESC
    LIMIT 1;
    v_actual := coalesce(v_actual, 0);

    -- A join on unnest, not `= ANY (p_ids)`: plpgsql switches to a generic plan after five
    -- calls, and the generic plan for `= ANY ($n)` degraded with table size (5x slower batches).
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

    -- Announce a lower bound of the positions this transaction is about to take (see
    -- es_frontier) before taking them: the sequence only moves forward.
    SELECT s.last_value INTO v_floor FROM %1$I.events_position_seq s;
    PERFORM pg_advisory_xact_lock_shared((69 << 24) | (v_floor >> 32)::integer,
                                         (v_floor & 4294967295)::bit(32)::integer);

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

    IF p_notify THEN
        PERFORM pg_notify(%2$L, '');
    END IF;
END;
$body$;
$fn$, current_schema(), 'es_events_' || current_schema());
END;
$do$;
