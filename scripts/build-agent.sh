#!/usr/bin/env bash
# Builds the portable agent: `eventor-agent` (and its supervisor, `eventor-supervise`) for
# x86_64-unknown-linux-musl, linked statically, so a prime can install it on any x86_64
# Linux host whatever its C library (glibc 2.17 and older, musl distributions), and puts
# both next to the prime's `eventor-coord`, where the prime looks for the agent to install.
#
# Usage: scripts/build-agent.sh [DEST_DIR] [PROFILE]
#   DEST_DIR  where eventor-coord lives (default: target/release)
#   PROFILE   cargo profile (default: agent, stripped with link-time optimisation; `dev` for
#             a quick debug build, as the tests use)
# Installs what is missing: the Rust target (rustup) and musl-gcc (apt-get musl-tools), for
# the C parts of the agent (SQLite, the TLS provider).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-target/release}
profile=${2:-agent}
target=x86_64-unknown-linux-musl

if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi
if ! command -v musl-gcc >/dev/null; then
  if [[ $(id -u) == 0 ]]; then apt-get install -y -qq musl-tools >/dev/null; else sudo apt-get install -y -qq musl-tools >/dev/null; fi
fi
cargo build --profile "$profile" --target "$target" -p eventor-agent --bins
out="target/$target/$([[ $profile == dev ]] && echo debug || echo "$profile")"
mkdir -p "$dest"
for bin in eventor-agent eventor-supervise; do
  cp -f "$out/$bin" "$dest/$bin.new" && mv -f "$dest/$bin.new" "$dest/$bin"
done
size=$(stat -c %s "$dest/eventor-agent")
echo "build-agent: $dest/eventor-agent ($target, static, $((size / 1024)) KiB) and eventor-supervise"
