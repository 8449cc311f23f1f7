SELECT account_id, version, position, recorded_at, description, amount, balance, transfer_id, user_id, correlation_id
FROM {schema}.ledger_statement ORDER BY account_id COLLATE "C", version
