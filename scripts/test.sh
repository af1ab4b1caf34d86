#!/usr/bin/env bash
# The project's test command (README, .ci/run): brings up the test bed (a throwaway
# Postgres 15 and SSH hosts in network namespaces), runs every test, and tears it down.
#
# Usage: scripts/test.sh [extra cargo test args]
# Needs: root (for network namespaces), a Rust toolchain, python3; installs gcc,
# openssh-server and PostgreSQL 15 with apt-get when they are missing (and, for the Python
# package's tests, python3-venv, maturin and pytest: see scripts/python-test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

install_missing() {
  local packages=()
  command -v cc >/dev/null || packages+=(gcc)
  [[ -x /usr/sbin/sshd ]] || packages+=(openssh-server)
  [[ -x /usr/lib/postgresql/15/bin/postgres ]] || packages+=(postgresql-15)
  command -v ssh-keygen >/dev/null || packages+=(openssh-client)
  # The store suite counts the WAL's syncs with strace; faults.sh queries with psql.
  command -v strace >/dev/null || packages+=(strace)
  command -v psql >/dev/null || packages+=(postgresql-client-15)
  # The web page's test drives it in a headless browser.
  command -v chromium >/dev/null || packages+=(chromium)
  # The portable agent (static, for musl) links the agent's C parts with musl-gcc.
  command -v musl-gcc >/dev/null || packages+=(musl-tools)
  if ((${#packages[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${packages[@]}"
  fi
}

install_missing
scripts/testbed.sh up
trap 'scripts/testbed.sh down >/dev/null 2>&1 || true' EXIT
state="${EVENTOR_TESTBED_DIR:-/tmp/eventor-testbed}"
set -a
# shellcheck disable=SC1091
source "$state/env"
set +a
# Tests that need the test bed fail (rather than skip) when it is missing.
export EVENTOR_REQUIRE_TESTBED=1 EVENTOR_REQUIRE_PG=1

# The portable agent (a debug build: quick), installed by a prime in its deploy test.
scripts/build-agent.sh target/portable-agent dev
export EVENTOR_PORTABLE_AGENT_DIR="$PWD/target/portable-agent"

# One build of every crate, then every test: unit, golden, property, store suite on SQLite
# and Postgres, protocol, SSH and end-to-end.
cargo test --workspace --locked "$@"

# The Python package (`import eventor`): built with maturin into a venv, its pytest suite.
scripts/python-test.sh

# A short fault run (the test bed to itself now): random kills, stops, link cuts and a
# Postgres restart, each recovered and checked; `scripts/faults.sh 50` gives the figures.
scripts/faults.sh 3
