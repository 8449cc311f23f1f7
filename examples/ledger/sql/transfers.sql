-- A page of the transfers by id: $1 after this id (NULL: from the first), $2 at most this many.
SELECT id, from_account, to_account, amount, currency, status, reason, requested_at, requested_by, correlation_id
FROM {schema}.ledger_transfers WHERE $1::uuid IS NULL OR id > $1 ORDER BY id LIMIT $2
