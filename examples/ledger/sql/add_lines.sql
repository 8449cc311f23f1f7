-- Statement lines ($1: a JSON array of lines, each with its account_id).
INSERT INTO {schema}.ledger_statement
SELECT * FROM jsonb_populate_recordset(NULL::{schema}.ledger_statement, $1)
