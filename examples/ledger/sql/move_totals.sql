-- Currencies' totals change ($1 currencies, then per currency the changes of $2 net inflow,
-- $3 balances and $4 money in flight, as decimal text: sums may exceed 64 bits).
UPDATE {schema}.ledger_totals AS t
SET net_inflow = t.net_inflow + u.net_inflow,
    balances = t.balances + u.balances,
    in_flight = t.in_flight + u.in_flight
FROM unnest($1::text[], $2::text[]::numeric[], $3::text[]::numeric[], $4::text[]::numeric[])
    AS u (currency, net_inflow, balances, in_flight)
WHERE t.currency = u.currency AND t.currency = ANY($1)
