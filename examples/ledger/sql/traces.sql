SELECT correlation_id, position, event_id FROM {schema}.ledger_trace
