-- A transfer appears, its row given as JSON.
INSERT INTO {schema}.ledger_transfers
SELECT * FROM jsonb_populate_record(NULL::{schema}.ledger_transfers, $1)
