-- An account appears (its row given as JSON), and its currency's totals, at zero, if new.
WITH account AS (
    INSERT INTO {schema}.ledger_balances
    SELECT * FROM jsonb_populate_record(NULL::{schema}.ledger_balances, $1)
)
INSERT INTO {schema}.ledger_totals (currency) VALUES ($1->>'currency') ON CONFLICT (currency) DO NOTHING
