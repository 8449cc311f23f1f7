-- numeric as text: the sums may pass 64 bits, and are read into i128.
SELECT currency, net_inflow::text AS net_inflow, balances::text AS balances, in_flight::text AS in_flight
FROM {schema}.ledger_totals
