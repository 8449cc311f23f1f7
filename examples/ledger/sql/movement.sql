-- Money moved: the currency's totals change ($1 currency, $2 net inflow, $3 balances,
-- $4 in flight) and the account's statement gets a line ($5: account id, $6: the line as JSON).
WITH totals AS (
    UPDATE {schema}.ledger_totals
    SET net_inflow = net_inflow + $2, balances = balances + $3, in_flight = in_flight + $4
    WHERE currency = $1
)
INSERT INTO {schema}.ledger_statement
SELECT * FROM jsonb_populate_record(NULL::{schema}.ledger_statement, $6 || jsonb_build_object('account_id', $5::text))
