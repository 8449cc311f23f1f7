UPDATE {schema}.ledger_transfers SET status = $2, reason = coalesce($3, reason) WHERE id = $1
