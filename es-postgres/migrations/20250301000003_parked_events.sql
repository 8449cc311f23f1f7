-- es-postgres schema, version 4: events a consumer set aside to go on with the log.
--
-- One row per consumer and position (a consumer parks an event at most once; parking it again
-- replaces the row), with the error it failed with. `CheckpointStore::park`, `parked` and
-- `unpark` use it, and the transactional delivery parks in the batch's own transaction.
CREATE TABLE parked_events (
    consumer        text        NOT NULL,
    position        bigint      NOT NULL CHECK (position >= 0),
    event_id        uuid,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    version         bigint      NOT NULL CHECK (version >= 0),
    event_name      text        NOT NULL,
    error           text        NOT NULL,
    attempts        integer     NOT NULL CHECK (attempts >= 0),
    parked_at       timestamptz NOT NULL,
    PRIMARY KEY (consumer, position)
);
