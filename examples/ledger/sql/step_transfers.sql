-- Transfers move on (one row per transfer: $1 ids, $2 statuses, $3 reasons or NULL to keep),
-- found by key (`= ANY($1)`, rather than a scan joined with the array).
UPDATE {schema}.ledger_transfers AS t
SET status = u.status, reason = coalesce(u.reason, t.reason)
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u (id, status, reason)
WHERE t.id = u.id AND t.id = ANY($1)
