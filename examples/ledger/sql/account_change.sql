-- An account moves to a new version, maybe a new status and balance; returns what the
-- statement line needs.
UPDATE {schema}.ledger_balances
SET version = $2, status = coalesce($3, status), balance = balance + $4
WHERE id = $1
RETURNING currency, balance
