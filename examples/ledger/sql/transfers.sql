SELECT id, from_account, to_account, amount, currency, status, reason, requested_at, requested_by, correlation_id
FROM {schema}.ledger_transfers ORDER BY id
