SELECT id, owner, currency, balance, overdraft_limit, status, version
FROM {schema}.ledger_balances ORDER BY id COLLATE "C"
