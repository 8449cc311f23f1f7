-- es-postgres schema, version 5: the database itself keeps `events` append-only.
--
-- A trigger refuses every UPDATE and DELETE of a stored event, and TRUNCATE of the table,
-- whoever sends it: a bug, a hand-written fix or an ORM cannot rewrite history.
--
-- The one deliberate way through, for erasure tooling (e.g. crypto-shredding or a legal
-- deletion): set the custom setting `es.allow_event_changes` to `on` for the transaction that
-- needs it, and only that one:
--
--     BEGIN;
--     SET LOCAL es.allow_event_changes = 'on';
--     UPDATE events SET payload = ... WHERE ...;
--     COMMIT;
--
-- `SET LOCAL` ends with the transaction, so the bypass cannot leak into a pooled session.
-- Rewriting an event changes what consumers replay; erasure tooling must say what it changed.
-- Revoking UPDATE, DELETE and TRUNCATE from the application's role adds a second line.
CREATE FUNCTION es_refuse_event_changes() RETURNS trigger
LANGUAGE plpgsql
AS $body$
BEGIN
    IF coalesce(current_setting('es.allow_event_changes', true), '') = 'on' THEN
        IF TG_LEVEL = 'STATEMENT' THEN
            RETURN NULL;
        ELSIF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'events are append-only: % on %.% is refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'erasure tooling may SET LOCAL es.allow_event_changes = ''on'' in its own transaction';
END;
$body$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION es_refuse_event_changes();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION es_refuse_event_changes();
