SELECT account_id, version, position, recorded_at, description, amount, balance, transfer_id, user_id, correlation_id
FROM {schema}.ledger_statement WHERE account_id = $1 ORDER BY version
