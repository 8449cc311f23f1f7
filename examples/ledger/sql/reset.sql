TRUNCATE {schema}.ledger_balances, {schema}.ledger_statement, {schema}.ledger_totals, {schema}.ledger_transfers, {schema}.ledger_trace
