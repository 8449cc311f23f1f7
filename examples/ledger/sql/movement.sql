-- Money moved: the currency's totals change and the account's statement gets a line.
WITH totals AS (
    UPDATE {schema}.ledger_totals
    SET net_inflow = net_inflow + $2, balances = balances + $3, in_flight = in_flight + $4
    WHERE currency = $1
)
INSERT INTO {schema}.ledger_statement
    (account_id, version, position, recorded_at, description, amount, balance, transfer_id, user_id, correlation_id)
VALUES ($5, $6, $7, $8, $9, $3, $10, $11, $12, $13)
