#!/usr/bin/env bash
# The project's test command (README, .ci/run): builds everything and runs every test.
#
# Usage: scripts/test.sh [extra cargo test args]
# Needs: a Rust toolchain and a C compiler (the bundled SQLite is built from source).
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v cc >/dev/null || need_packages+=(gcc)
if ((${#need_packages[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need_packages[@]}"
fi

# One build of every crate, then every test: unit, golden, property and end-to-end.
cargo test --workspace --locked "$@"
