#!/usr/bin/env bash
# Property-based fuzzing of the live HTTP API: schemathesis (from PyPI, in a venv under
# target/) reads GET /openapi.json and sends generated requests, valid and invalid, to
# `ledger serve` on a temporary SQLite file and on a fresh PostgreSQL schema. It fails on any
# 5xx and on any response that breaks the schema. FUZZ_EXAMPLES (default 100) bounds the cases
# per operation; DATABASE_URL names the PostgreSQL server (it must be reachable). One worker:
# with two, hypothesis parsed lambdas' sources from two threads at once and CPython 3.11's
# parser failed ("AST constructor recursion depth mismatch"), a crash of the tool, not a finding.
set -euo pipefail
cd "$(dirname "$0")/../../.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-$root/target}
venv=$root/target/fuzz-venv
examples=${FUZZ_EXAMPLES:-100}
database_url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}

if ! "$venv/bin/schemathesis" --version >/dev/null 2>&1; then
  python3 -m venv "$venv"
  # Pinned, so that a new release cannot change what CI generates.
  "$venv/bin/pip" install --quiet 'schemathesis==4.32.5'
fi
cargo build --quiet -p ledger --bin ledger
ledger=$target/debug/ledger
work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# fuzz NAME LEDGER-ARGS...: serves on a free port, runs schemathesis, stops the server.
fuzz() {
  local name=$1 log=$work/$1.log base=""
  shift
  # The store comes from the arguments alone (the CLI would also read DATABASE_URL).
  env -u DATABASE_URL RUST_LOG=warn "$ledger" "$@" serve --addr 127.0.0.1:0 2>"$log" &
  server=$!
  for _ in $(seq 1 100); do
    base=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$base" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$log" >&2; echo "ledger serve ($name) did not start" >&2; return 1; }
    sleep 0.1
  done
  [ -n "$base" ] || { echo "ledger serve ($name) did not say where it listens" >&2; return 1; }
  echo "== schemathesis on $name ($base, $examples examples per operation)"
  local status=0
  "$venv/bin/schemathesis" run "$base/openapi.json" \
    --checks not_a_server_error,response_schema_conformance \
    --max-examples "$examples" --seed 20260101 --workers 1 \
    --phases examples,coverage,fuzzing --no-color \
    --suppress-health-check all --request-timeout 20 || status=$?
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=""
  if grep -q '"level":"ERROR"\|ERROR' "$log"; then
    echo "the server logged errors during the run on $name:" >&2
    grep 'ERROR' "$log" | head -n 20 >&2
    status=1
  fi
  return "$status"
}

fuzz sqlite --data "$work/fuzz.db"
schema=ledger_fuzz_$(date +%s)_$$
fuzz postgres --database-url "$database_url" --schema "$schema"
PGOPTIONS="-c client_min_messages=warning" psql "$database_url" -q -c "DROP SCHEMA IF EXISTS \"$schema\" CASCADE"
echo "fuzzing found nothing on either store"
