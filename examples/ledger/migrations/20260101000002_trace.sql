-- The index of flows: every event with a correlation id, by that id and position, so that a
-- trace reads one index range instead of scanning the log.
CREATE TABLE ledger_trace (
    correlation_id uuid NOT NULL,
    position bigint NOT NULL,
    event_id uuid NOT NULL,
    PRIMARY KEY (correlation_id, position)
);
