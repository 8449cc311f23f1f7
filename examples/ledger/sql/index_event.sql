-- An event of a flow: $1 correlation id, $2 position, $3 event id.
INSERT INTO {schema}.ledger_trace (correlation_id, position, event_id) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING
