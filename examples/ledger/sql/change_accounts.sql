-- Accounts move to a new version, maybe a new status, and by a change of balance (one row per
-- account: $1 ids, $2 versions, $3 statuses or NULL, $4 changes); returns each account's
-- currency and new balance, from which the statement lines get theirs. (`= ANY($1)` makes the
-- planner find the rows by key instead of scanning the table to join with the array.)
UPDATE {schema}.ledger_balances AS b
SET version = u.version, status = coalesce(u.status, b.status), balance = b.balance + u.change
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) AS u (id, version, status, change)
WHERE b.id = u.id AND b.id = ANY($1)
RETURNING b.id, b.currency, b.balance
