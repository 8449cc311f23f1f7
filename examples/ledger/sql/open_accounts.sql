-- Accounts appear ($1: their rows, a JSON array), and their currencies' totals, at zero, if new.
WITH accounts AS (
    INSERT INTO {schema}.ledger_balances
    SELECT * FROM jsonb_populate_recordset(NULL::{schema}.ledger_balances, $1)
)
INSERT INTO {schema}.ledger_totals (currency)
SELECT DISTINCT a->>'currency' FROM jsonb_array_elements($1) AS a
ON CONFLICT (currency) DO NOTHING
