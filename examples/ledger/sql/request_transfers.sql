-- Transfers appear ($1: their rows, a JSON array).
INSERT INTO {schema}.ledger_transfers
SELECT * FROM jsonb_populate_recordset(NULL::{schema}.ledger_transfers, $1)
