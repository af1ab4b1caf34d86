#!/usr/bin/env bash
# Cluster benchmark with a table: 1,000 `true` steps over the two test hosts through eventor's
# agents, the same 1,000 on this host, and GNU parallel running them over ssh; plus the time to
# connect to both hosts and start their agents. Brings the test bed up and down.
#
# Usage: scripts/bench-cluster.sh [N]   (N steps, default 1000)
# Fair by construction: both get 2 slots per host, GNU parallel reuses one SSH connection per
# host (ControlMaster, warmed up before timing) and runs all N jobs, `ssh cat` writes to
# /dev/null.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000}"

command -v parallel >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq parallel >/dev/null
}
cargo build -q --release -p eventor -p eventor-agent --bins
scripts/testbed.sh up >/dev/null
trap 'scripts/testbed.sh down >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
source "${EVENTOR_TESTBED_DIR:-/tmp/eventor-testbed}/env"

work=$(mktemp -d)
coord="$PWD/target/release/eventor-coord"
agent="$PWD/target/release/eventor-agent"
cat >"$work/hosts.yaml" <<HOSTS
store: $EVENTOR_PG_URL_BRIDGE?schema=bench_cluster_$$
ssh_config: $EVENTOR_SSH_CONFIG
hosts:
  node1: {agent: $agent, max_concurrent: 2}
  node2: {agent: $agent, max_concurrent: 2}
HOSTS
flow() { # $1: name, $2: extra step keys
  cat >"$work/$1.yaml" <<FLOW
name: $1
events: {go: {}}
steps:
  t: {run: "true" $2}
assocs: [{event: go, targets: [t]}]
trigger: [{event: go, range: [1, $n]}]
FLOW
}
flow spread ", hosts: [node1, node2]"
# Log forwarding: 50 MB of 100-byte lines printed on node1, into the prime's central log.
awk 'BEGIN { line = sprintf("%099d", 0); for (i = 0; i < 500000; i++) print line }' >"$work/lines.txt"
cat >"$work/flood.yaml" <<FLOW
name: flood
events: {go: {}}
steps:
  out: {run: "cat $work/lines.txt", host: node1}
assocs: [{event: go, targets: [out]}]
trigger: [{event: go}]
FLOW
# Touches each host once: one step pinned to node1, one to node2, one sequence.
cat >"$work/ready.yaml" <<FLOW
name: ready
events: {go: {}}
steps:
  a: {run: "true", host: node1}
  b: {run: "true", host: node2}
assocs: [{event: go, targets: [a, b]}]
trigger: [{event: go}]
FLOW
flow local ""

seconds() { # runs "$@" (which must succeed) and prints its wall time in seconds
  local start end
  start=$(date +%s.%N)
  if ! "$@" >"$work/last.log" 2>&1; then
    echo "failed: $*" >&2
    tail -5 "$work/last.log" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

cd "$work"
ready=$(seconds "$coord" run --hosts hosts.yaml ready.yaml --log-level warn)
spread=$(seconds "$coord" run --hosts hosts.yaml spread.yaml --log-level warn)
local_=$(seconds "$coord" run local.yaml --store "sqlite:$work/local.db" --log-level warn)
flood=$(seconds "$coord" run --hosts hosts.yaml flood.yaml --log-level warn --logdir "$work/logs")
kept=$(grep -c ' out\[1\] stdout ' "$work"/logs/flood/*.log || true)
ssh_cat=$(seconds sh -c "ssh -F '$EVENTOR_SSH_CONFIG' node1 cat '$work/lines.txt' >/dev/null")
ssh_cmd="ssh -F $EVENTOR_SSH_CONFIG -o ControlMaster=auto -o ControlPath=$work/cm-%h -o ControlPersist=120"
$ssh_cmd node1 true && $ssh_cmd node2 true # masters up before the clock starts
par=$(seconds sh -c "seq $n | parallel --ssh '$ssh_cmd' --sshlogin 2/node1,2/node2 true")

echo "| case | steps | wall |"
echo "|---|---:|---:|"
echo "| connect 2 hosts, start agents, run 1 step on each (whole run) | 2 | ${ready} s |"
echo "| eventor: \`true\` over node1+node2 (hosts: [node1, node2]) | $n | ${spread} s |"
echo "| eventor: the same on this host | $n | ${local_} s |"
echo "| GNU parallel --sshlogin 2/node1,2/node2, ControlMaster | $n | ${par} s |"
echo
echo "| log forwarding | lines | wall | MB/s |"
echo "|---|---:|---:|---:|"
echo "| 50 MB of output on node1 into the central log ($kept of 500000 lines kept) | 500000 | ${flood} s | $(ratio 50 "$flood") |"
echo "| ssh node1 cat the same file > /dev/null | - | ${ssh_cat} s | $(ratio 50 "$ssh_cat") |"
echo
echo "eventor vs parallel: $(ratio "$par" "$spread")x faster;" \
  "cluster vs local: $(ratio "$spread" "$local_")x"
rm -rf "$work"
