INSERT INTO {schema}.ledger_transfers
    (id, from_account, to_account, amount, currency, status, reason, requested_at, requested_by, correlation_id)
VALUES ($1, $2, $3, $4, $5, 'requested', NULL, $6, $7, $8)
