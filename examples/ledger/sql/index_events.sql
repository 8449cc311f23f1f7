-- Events of flows: $1 correlation ids, $2 positions, $3 event ids.
INSERT INTO {schema}.ledger_trace (correlation_id, position, event_id)
SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::uuid[])
ON CONFLICT DO NOTHING
