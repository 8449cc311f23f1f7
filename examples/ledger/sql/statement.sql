-- A page of one account's statement: $1 account, $2 after this version, $3 at most this many.
SELECT account_id, version, position, recorded_at, description, amount, balance, transfer_id, user_id, correlation_id
FROM {schema}.ledger_statement WHERE account_id = $1 AND version > $2 ORDER BY version LIMIT $3
