-- A page of one flow: $1 correlation id, $2 after this position, $3 at most this many.
SELECT correlation_id, position, event_id FROM {schema}.ledger_trace
WHERE correlation_id = $1 AND position > $2 ORDER BY position LIMIT $3
