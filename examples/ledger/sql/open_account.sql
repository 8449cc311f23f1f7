-- An account appears, and its currency's totals (at zero) if they are new.
WITH account AS (
    INSERT INTO {schema}.ledger_balances (id, owner, currency, balance, overdraft_limit, status, version)
    VALUES ($1, $2, $3, 0, $4, 'open', $5)
)
INSERT INTO {schema}.ledger_totals (currency) VALUES ($3) ON CONFLICT (currency) DO NOTHING
