#!/usr/bin/env bash
# The Python package's tests (coordinator/python): builds the module in debug into a
# virtual environment with maturin, then runs its pytest suite and the Python examples'.
# Needs no test bed; scripts/test.sh runs it after the Rust tests.
#
# Usage: scripts/python-test.sh [extra pytest args]
# Needs: python3 (3.9 or newer) with venv; installs python3-venv with apt-get and maturin
# and pytest with pip when they are missing. The venv: $EVENTOR_PY_VENV, else
# target/python-venv.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${EVENTOR_PY_VENV:-${CARGO_TARGET_DIR:-target}/python-venv}"
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3-venv
fi
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import maturin, pytest' 2>/dev/null \
  || "$venv/bin/pip" install -q 'maturin>=1.7,<2' pytest
# maturin builds into the workspace's target directory (debug: only the module is new).
VIRTUAL_ENV="$venv" "$venv/bin/maturin" develop -q --manifest-path coordinator/python/Cargo.toml
"$venv/bin/python" -m pytest -q coordinator/python/tests examples/python "$@"
