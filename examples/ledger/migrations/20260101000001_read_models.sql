-- The ledger's read models in PostgreSQL, kept by the `ledger-tables` consumer (es-postgres
-- ExactlyOnce delivery: rows and checkpoint commit together). Created in the event store's
-- schema (the migrator runs with search_path set to it); tracked in `_ledger_migrations`.
-- Sums over accounts are `numeric`: they can pass 64 bits.

CREATE TABLE ledger_balances (
    id text PRIMARY KEY,
    owner text NOT NULL,
    currency text NOT NULL,
    balance bigint NOT NULL,
    overdraft_limit bigint NOT NULL,
    status text NOT NULL,
    version bigint NOT NULL
);

CREATE TABLE ledger_statement (
    account_id text NOT NULL,
    version bigint NOT NULL,
    position bigint NOT NULL,
    recorded_at timestamptz NOT NULL,
    description text NOT NULL,
    amount bigint NOT NULL,
    balance bigint NOT NULL,
    transfer_id uuid,
    user_id text,
    correlation_id uuid,
    PRIMARY KEY (account_id, version)
);

CREATE TABLE ledger_totals (
    currency text PRIMARY KEY,
    net_inflow numeric NOT NULL DEFAULT 0,
    balances numeric NOT NULL DEFAULT 0,
    in_flight numeric NOT NULL DEFAULT 0
);

CREATE TABLE ledger_transfers (
    id uuid PRIMARY KEY,
    from_account text NOT NULL,
    to_account text NOT NULL,
    amount bigint NOT NULL,
    currency text NOT NULL,
    status text NOT NULL,
    reason text,
    requested_at timestamptz NOT NULL,
    requested_by text,
    correlation_id uuid
);
