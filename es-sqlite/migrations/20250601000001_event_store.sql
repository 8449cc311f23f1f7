-- es-sqlite schema, version 1. STRICT tables: SQLite refuses a value of the wrong type
-- instead of storing it, so every column reads back as the type the store wrote.

-- The global log. `position` is the rowid: appends assign it explicitly as the current
-- maximum plus one inside their write transaction, which holds SQLite's single write lock,
-- so positions are committed in order and without gaps (see the crate docs).
CREATE TABLE events (
    position        INTEGER PRIMARY KEY,
    event_id        BLOB    NOT NULL UNIQUE CHECK (length(event_id) = 16),
    aggregate_type  TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version > 0),
    event_name      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version > 0),
    -- The payload's JSON text exactly as appended (after es-core's checks).
    payload         TEXT    NOT NULL,
    correlation_id  BLOB,
    causation_id    BLOB,
    user_id         TEXT,
    -- The metadata's free-form JSON object; NULL when it is empty.
    extra           TEXT,
    -- Microseconds since the Unix epoch, UTC.
    recorded_at     INTEGER NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, version)
) STRICT;

-- Filtered reads of the global log (consumers of a few aggregate types or event names).
CREATE INDEX events_by_type ON events (aggregate_type, position);
CREATE INDEX events_by_name ON events (event_name, position);

-- One snapshot per stream: the newest by (state_version, version).
CREATE TABLE snapshots (
    aggregate_type  TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    state_version   INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    taken_at        INTEGER NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
) STRICT, WITHOUT ROWID;

-- The last global position each consumer has processed.
CREATE TABLE checkpoints (
    name        TEXT    PRIMARY KEY,
    position    INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Events a consumer could not handle and set aside.
CREATE TABLE parked_events (
    consumer        TEXT    NOT NULL,
    position        INTEGER NOT NULL,
    event_id        BLOB,
    aggregate_type  TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    event_name      TEXT    NOT NULL,
    error           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    parked_at       INTEGER NOT NULL,
    PRIMARY KEY (consumer, position)
) STRICT, WITHOUT ROWID;

-- Single-active leases across processes: a holder keeps its row's expiry in the future with
-- a heartbeat; anyone may take a row whose expiry has passed.
CREATE TABLE leases (
    name        TEXT    PRIMARY KEY,
    holder      BLOB    NOT NULL,
    -- Milliseconds since the Unix epoch.
    expires_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
