-- The events table is append-only, as on PostgreSQL: UPDATE and DELETE are refused by the
-- database itself, whoever connects. Positions are the current maximum plus one, so deleting
-- the last events would also hand their positions out again to followers already past them.
--
-- Future erasure tooling (for example crypto-shredding of personal data) takes a deliberate,
-- reviewable path: in one maintenance transaction, DROP these triggers, make the change, and
-- re-create them from this file. Nothing in the store does that.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'es-sqlite: events are append-only (UPDATE refused)');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'es-sqlite: events are append-only (DELETE refused)');
END;
