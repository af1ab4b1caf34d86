#!/usr/bin/env bash
# Benchmarks with a table: the local engine (SQLite), the engine on Postgres next to pgbench
# on the same server, and the wire protocol's codec. Brings a throwaway Postgres up and down.
#
# Usage: scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export EVENTOR_TESTBED_DIR="${EVENTOR_TESTBED_DIR:-/tmp/eventor-testbed-bench}"
export EVENTOR_PG_PORT="${EVENTOR_PG_PORT:-55435}"
scripts/testbed.sh up --pg >/dev/null
trap 'scripts/testbed.sh down >/dev/null 2>&1 || true' EXIT
set -a
# shellcheck disable=SC1091
source "$EVENTOR_TESTBED_DIR/env"
set +a

cargo bench -q -p eventor --bench local 2>/dev/null

pgbench=/usr/lib/postgresql/15/bin/pgbench
pg=(-h 127.0.0.1 -p "$EVENTOR_PG_PORT" -U postgres)
"$pgbench" "${pg[@]}" -i -q eventor >/dev/null 2>&1
for clients in 1 8; do
  tps=$("$pgbench" "${pg[@]}" -N -T 10 -c "$clients" -j 2 eventor 2>/dev/null |
    awk '/^tps/ { print int($3) }')
  echo "| pgbench -N, $clients client(s), same server | 10 s | $tps tps | - | - |"
done

echo
cargo bench -q -p eventor-protocol --bench codec 2>/dev/null
