#!/usr/bin/env bash
# Cluster benchmarks over the test bed's SSH hosts (network namespaces, real SSH, the shared
# Postgres with fsync on, release build). Prints markdown tables.
#
# Usage:
#   scripts/bench-cluster.sh [N]          two hosts: 1,000 (N) `true` steps over node1+node2
#       through eventor's agents, the same N on this host, GNU parallel running them over ssh,
#       the time to connect to both hosts and start their agents, and log forwarding.
#   scripts/bench-cluster.sh --scale [N]  scaling over 2 / 4 / 8 / 16 hosts: connect + start +
#       handshake for a run touching each host once, N (default 4,000) `true` steps spread over
#       the hosts (2 slots per host) against the same N on this host, and the prime's CPU time
#       and peak RSS, next to OpenSSH logging in to the same hosts at once (the test bed's own
#       cost). BENCH_SCALE_HOSTS="2 4 8 16" picks the host counts; connect times are the best
#       of BENCH_REPEAT (default 3) runs.
#
# Test bed: an already-up bed (scripts/testbed.sh status) with Postgres and enough hosts is
# reused and left up; otherwise one is brought up (--hosts N) and torn down at exit. A bed that
# is up with too few hosts is grown, and left up, since it was not ours to remove.
# Binaries: built with `cargo build --release` unless EVENTOR_BIN (a directory holding
# eventor-coord and eventor-agent) is set.
#
# Fair by construction: both get 2 slots per host, GNU parallel reuses one SSH connection per
# host (ControlMaster, warmed up before timing) and runs all N jobs, `ssh cat` writes to
# /dev/null.
#
# scripts/bench-peers.sh sources this file for its helpers; main only runs when executed.
set -euo pipefail

# ---------------------------------------------------------------- helpers (shared)

bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
testbed="$bench_root/scripts/testbed.sh"
testbed_ours=0 # 1: this script brought the bed up, so it takes it down
pg_schemas=()  # Postgres schemas this script created, dropped at exit
mux_hosts=()   # hosts with an ssh master connection, closed at exit
work=""

msg() { printf 'bench: %s\n' "$*" >&2; }

# apt_need CMD PACKAGE: install PACKAGE when CMD is missing (fresh machines lack both).
apt_need() {
  if [[ -x $1 ]] || command -v "$1" >/dev/null; then return 0; fi
  msg "installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  }
}

# binaries: sets coord and agent (release build, or $EVENTOR_BIN as given).
binaries() {
  if [[ -z ${EVENTOR_BIN:-} ]]; then
    (cd "$bench_root" && cargo build -q --release -p eventor -p eventor-agent --bins)
    EVENTOR_BIN="$bench_root/target/release"
  fi
  coord="$EVENTOR_BIN/eventor-coord"
  agent="$EVENTOR_BIN/eventor-agent"
  [[ -x $coord && -x $agent ]] || { msg "no eventor-coord/eventor-agent in $EVENTOR_BIN"; exit 1; }
}

# hosts_up_to N STATUS: STATUS (testbed.sh status output) shows node1..nodeN up.
hosts_up_to() {
  local k
  for ((k = 1; k <= $1; k++)); do
    grep -q "^ssh node$k: up " <<<"$2" || return 1
  done
}

# testbed_use N: make sure a bed with Postgres and node1..nodeN is up, then load its env.
testbed_use() {
  local n=$1 st rc=0
  st=$("$testbed" status 2>/dev/null) || rc=$?
  if ((rc == 0)) && hosts_up_to "$n" "$st"; then
    msg "reusing the test bed that is up"
  else
    # "testbed: down" means nobody's bed: ours to remove at exit. Anything else was someone's.
    grep -q '^testbed: down' <<<"$st" && testbed_ours=1
    msg "bringing the test bed up with $n hosts"
    "$testbed" up --hosts "$n" >/dev/null
  fi
  set -a
  # shellcheck disable=SC1091
  source "${EVENTOR_TESTBED_DIR:-/tmp/eventor-testbed}/env"
  set +a
}

# pg_schema NAME: sets store_url to schema NAME of the test bed's Postgres (at the bridge
# address, where the agents in the namespaces reach it) and records NAME for dropping at exit.
# (Not printed: a $(...) subshell would lose the record.)
pg_schema() {
  pg_schemas+=("$1")
  store_url="$EVENTOR_PG_URL_BRIDGE?schema=$1"
}

cleanup() {
  local s h
  for h in "${mux_hosts[@]}"; do $(ssh_mux_cmd) -O exit "$h" >/dev/null 2>&1 || true; done
  if ((${#pg_schemas[@]})) && command -v psql >/dev/null && [[ -n ${EVENTOR_PG_URL:-} ]]; then
    for s in "${pg_schemas[@]}"; do
      psql -q "$EVENTOR_PG_URL" -c "drop schema if exists \"$s\" cascade" >/dev/null 2>&1 || true
    done
  fi
  [[ -n $work ]] && rm -rf "$work"
  ((testbed_ours)) && "$testbed" down >/dev/null 2>&1 || true
}

# hosts_file FILE STORE HOST...: a hosts file giving each HOST 2 slots.
hosts_file() {
  local file=$1 store=$2 h
  shift 2
  {
    echo "store: $store"
    echo "ssh_config: $EVENTOR_SSH_CONFIG"
    echo "hosts:"
    for h in "$@"; do echo "  $h: {agent: $agent, max_concurrent: 2}"; done
  } >"$file"
}

# spread_flow FILE N CONFIG STEP_KEYS: N sequences of one `true` step (fan-out).
spread_flow() {
  cat >"$1" <<FLOW
name: $(basename "$1" .yaml)
config: {$3}
events: {go: {}}
steps:
  t: {run: "true" $4}
assocs: [{event: go, targets: [t]}]
trigger: [{event: go, range: [1, $2]}]
FLOW
}

# ready_flow FILE HOST...: one `true` step pinned to each HOST, all started at once.
ready_flow() {
  local file=$1 h steps=()
  shift
  {
    echo "name: $(basename "$file" .yaml)"
    echo "events: {go: {}}"
    echo "steps:"
    for h in "$@"; do
      echo "  on_$h: {run: \"true\", host: $h}"
      steps+=("on_$h")
    done
    echo "assocs: [{event: go, targets: [$(join_comma "${steps[@]}")]}]"
    echo "trigger: [{event: go}]"
  } >"$file"
}

# seconds CMD...: runs CMD (which must succeed) and prints its wall time in seconds.
seconds() {
  local start end
  start=$(date +%s.%N)
  if ! "$@" >"$work/last.log" 2>&1; then
    msg "failed: $*"
    tail -5 "$work/last.log" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }'
}

# best R CMD...: the smallest wall time of R runs (the least disturbed by other load).
best() {
  local r=$1 i t min=""
  shift
  for ((i = 0; i < r; i++)); do
    t=$(seconds "$@")
    [[ -z $min ]] && min=$t || min=$(awk -v a="$min" -v b="$t" 'BEGIN { print (b < a) ? b : a }')
  done
  echo "$min"
}

# usage_of CMD...: runs CMD (which must succeed) under /usr/bin/time and prints
# "wall_s cpu_s rss_mb": wall time, user+sys CPU and peak RSS of CMD (waited-for children's
# CPU included: a local run's commands count, an SSH host's do not).
usage_of() {
  local start end
  start=$(date +%s.%N)
  if ! /usr/bin/time -o "$work/usage" -f '%U %S %M' "$@" >"$work/last.log" 2>&1; then
    msg "failed: $*"
    tail -5 "$work/last.log" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" '{ printf "%.3f %.2f %.1f", b - a, $1 + $2, $3 / 1024 }' "$work/usage"
}

# join_comma WORD...: "a, b, c" (YAML flow lists).
join_comma() { local IFS=,; echo "$*" | sed 's/,/, /g'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
fmt_s() { awk -v a="$1" 'BEGIN { printf (a < 10 ? "%.2f s" : "%.1f s"), a }'; }
per_ms() { awk -v a="$1" -v n="$2" 'BEGIN { printf "%.2f ms", 1000 * a / n }'; }
rate() { awk -v a="$1" -v n="$2" 'BEGIN { printf "%d", n / a }'; }

# ssh_mux_cmd: an ssh command line sharing one connection per host (ControlMaster).
ssh_mux_cmd() {
  echo "ssh -F $EVENTOR_SSH_CONFIG -o ControlMaster=auto -o ControlPath=$work/cm-%h -o ControlPersist=300"
}

# ssh_mux_warm HOST...: opens the master connections before any clock starts.
ssh_mux_warm() {
  local h
  for h in "$@"; do
    $(ssh_mux_cmd) "$h" true
    mux_hosts+=("$h")
  done
}

# parallel_ssh N HOST...: GNU parallel running N `true` jobs, 2 at a time on each HOST, over
# the warmed-up master connections.
parallel_ssh() {
  local n=$1 logins
  shift
  logins=$(printf '2/%s,' "$@")
  seq "$n" | parallel --ssh "$(ssh_mux_cmd)" --sshlogin "${logins%,}" true
}

# ssh_all HOST...: OpenSSH to every HOST at once, each running `true` (the test bed's own cost
# of a login per host: every sshd shares this machine's cores).
ssh_all() {
  local h
  for h in "$@"; do ssh -F "$EVENTOR_SSH_CONFIG" "$h" true & done
  wait
}

# ev ARGS...: eventor-coord run, quiet (the wall includes its start and its store).
ev() { "$coord" run --log-level warn -q "$@"; }

# fresh_sqlite: a new SQLite store, so that no run reads an earlier run's rows.
fresh_sqlite() { echo "sqlite:$(mktemp -u "$work/store.XXXXXX").db"; }

# ev_warm HOSTS_FILE FLOW: one untimed run, so that the store's schema exists before the
# clock starts (a fresh schema's tables are created by the first run: not a connect cost).
ev_warm() { ev --hosts "$1" "$2" >/dev/null 2>&1 || true; }

# ev_local FLOW: a run on this host in a fresh SQLite store.
ev_local() { ev "$1" --store "$(fresh_sqlite)"; }

# flood_lines FILE: 100 MB of 100-byte lines, 1,000,000 of them, each starting with its
# number, so a log or an echo can be checked to hold them all, in order.
flood_lines() {
  awk 'BEGIN { pad = sprintf("%089d", 0); for (i = 0; i < 1000000; i++) printf "%09d %s\n", i, pad }' >"$1"
}

# flood_flow FILE LINES STEP_KEYS: one step `out` printing the file LINES.
flood_flow() {
  cat >"$1" <<FLOW
name: flood
events: {go: {}}
steps:
  out: {run: "cat $2" $3}
assocs: [{event: go, targets: [out]}]
trigger: [{event: go}]
FLOW
}

# flood_check FILE: "N lines, in order" for the step out's stdout records in FILE (a
# central log, or a console echo: the same line format).
flood_check() {
  awk '$3 == "out[1]" && $4 == "stdout" { if ($5 + 0 != n) bad++; n++ }
    END { printf "%d lines, %s", n, (bad ? "NOT in order" : "in order") }' "$1"
}

# echo_pair R ARGS...: "echoed_s quiet_s": `eventor-coord run ARGS` with its console (stderr,
# at the default level: task output echoed) to a file, and the same with --quiet; the best of
# R each, the two alternating. Each run writes its central log to a fresh logdir.
# flood_check of the last echo (the console file) goes to $work/echo-seen.
echo_pair() {
  local r=$1 i t e="" q=""
  shift
  for ((i = 0; i < r; i++)); do
    rm -rf "$work/echo-logs"
    t=$(seconds env -u RUST_LOG "$coord" run "$@" --logdir "$work/echo-logs")
    flood_check "$work/last.log" >"$work/echo-seen"
    [[ -z $e ]] && e=$t || e=$(awk -v a="$e" -v b="$t" 'BEGIN { print (b < a) ? b : a }')
    rm -rf "$work/echo-logs"
    t=$(seconds env -u RUST_LOG "$coord" run -q "$@" --logdir "$work/echo-logs")
    [[ -z $q ]] && q=$t || q=$(awk -v a="$q" -v b="$t" 'BEGIN { print (b < a) ? b : a }')
  done
  rm -rf "$work/echo-logs"
  echo "$e $q"
}

bench_setup() { # N_HOSTS: tools, binaries, test bed, work dir; cleanup at exit
  trap cleanup EXIT
  apt_need parallel parallel
  apt_need /usr/bin/time time
  binaries
  testbed_use "$1"
  work=$(mktemp -d)
  cd "$work"
}

# ---------------------------------------------------------------- two hosts

main_pair() {
  local n=${1:-1000} ready spread local_ flood kept echoed quiet echo_seen t ssh_cat par
  bench_setup 2
  pg_schema "bench_cluster_$$"
  hosts_file hosts.yaml "$store_url" node1 node2
  spread_flow spread.yaml "$n" "" ", hosts: [node1, node2]"
  spread_flow local.yaml "$n" "" ""
  ready_flow ready.yaml node1 node2
  # Log forwarding: 100 MB of 100-byte lines printed on node1, into the prime's central log;
  # each line starts with its number, so the log can be checked to hold them all, in order.
  flood_lines lines.txt
  flood_flow flood.yaml "$work/lines.txt" ", host: node1"

  ev_warm hosts.yaml ready.yaml
  ready=$(seconds ev --hosts hosts.yaml ready.yaml)
  spread=$(seconds ev --hosts hosts.yaml spread.yaml)
  local_=$(seconds ev_local local.yaml)
  flood=$(seconds ev --hosts hosts.yaml flood.yaml --logdir "$work/logs")
  kept=$(flood_check "$work"/logs/flood/*.log)
  # The same run with the prime's console (echoing every line) to a file, against --quiet.
  # (Assigned first: a failure inside a here-string's $(...) would not stop the script.)
  t=$(echo_pair "${BENCH_REPEAT:-3}" --hosts hosts.yaml flood.yaml)
  read -r echoed quiet <<<"$t"
  echo_seen=$(cat "$work/echo-seen")
  ssh_cat=$(seconds sh -c "ssh -F '$EVENTOR_SSH_CONFIG' node1 cat '$work/lines.txt' >/dev/null")
  ssh_mux_warm node1 node2
  par=$(seconds parallel_ssh "$n" node1 node2)

  echo "| case | steps | wall |"
  echo "|---|---:|---:|"
  echo "| connect 2 hosts, start agents, run 1 step on each (whole run) | 2 | $(fmt_s "$ready") |"
  echo "| eventor: \`true\` over node1+node2 (hosts: [node1, node2]) | $n | $(fmt_s "$spread") |"
  echo "| eventor: the same on this host (SQLite, no concurrency limit) | $n | $(fmt_s "$local_") |"
  echo "| GNU parallel --sshlogin 2/node1,2/node2, ControlMaster | $n | $(fmt_s "$par") |"
  echo
  echo "| log forwarding | lines | wall | MB/s |"
  echo "|---|---:|---:|---:|"
  echo "| 100 MB of output on node1 into the central log (whole run; $kept of 1000000) | 1000000 | $(fmt_s "$flood") | $(ratio 100 "$flood") |"
  echo "| the same, console echoed to a file (best of ${BENCH_REPEAT:-3}; echo: $echo_seen) | 1000000 | $(fmt_s "$echoed") | $(ratio 100 "$echoed") |"
  echo "| the same, --quiet (best of ${BENCH_REPEAT:-3}) | 1000000 | $(fmt_s "$quiet") | $(ratio 100 "$quiet") |"
  echo "| ssh node1 cat the same file > /dev/null | - | $(fmt_s "$ssh_cat") | $(ratio 100 "$ssh_cat") |"
  echo
  echo "eventor vs parallel: $(ratio "$par" "$spread")x faster;" \
    "cluster vs local: $(ratio "$spread" "$local_")x;" \
    "log forwarding at $(ratio "$ssh_cat" "$flood")x the throughput of ssh cat;" \
    "console echo to a file: $(ratio "$echoed" "$quiet")x the --quiet run"
}

# ---------------------------------------------------------------- scaling

main_scale() {
  local n=${1:-4000} repeat=${BENCH_REPEAT:-3} counts k i u max=0 hosts ready logins after cl lo cl_cpu cl_rss lo_cpu lo_rss
  read -ra counts <<<"${BENCH_SCALE_HOSTS:-2 4 8 16}"
  for k in "${counts[@]}"; do ((k > max)) && max=$k; done
  bench_setup "$max"
  # Local: the same steps, 2 at a time (this machine's cores), every transition in SQLite.
  spread_flow local.yaml "$n" "max_concurrent: 2" ""

  echo "| hosts | connect + start + 1 step on each (whole run) | OpenSSH login to each at once | $n steps over the hosts | steps/s | steps/s after connect | same $n on this host (2 at a time) | cluster ÷ local | prime CPU (user+sys) | CPU per step | prime peak RSS |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for k in "${counts[@]}"; do
    hosts=()
    for ((i = 1; i <= k; i++)); do hosts+=("node$i"); done
    # A schema per host count: each row starts from empty tables.
    pg_schema "bench_scale_$$_$k"
    hosts_file "hosts$k.yaml" "$store_url" "${hosts[@]}"
    ready_flow "ready$k.yaml" "${hosts[@]}"
    spread_flow "spread$k.yaml" "$n" "" ", hosts: [$(join_comma "${hosts[@]}")]"

    ev_warm "hosts$k.yaml" "ready$k.yaml"
    ready=$(best "$repeat" ev --hosts "hosts$k.yaml" "ready$k.yaml")
    logins=$(best "$repeat" ssh_all "${hosts[@]}")
    # /usr/bin/time needs the program itself, not the ev function.
    # (Assigned first: a failure inside a here-string's $(...) would not stop the script.)
    u=$(usage_of "$coord" run --log-level warn -q --hosts "hosts$k.yaml" "spread$k.yaml")
    read -r cl cl_cpu cl_rss <<<"$u"
    u=$(usage_of "$coord" run --log-level warn -q --store "$(fresh_sqlite)" local.yaml)
    read -r lo lo_cpu lo_rss <<<"$u"
    after=$(awk -v a="$cl" -v b="$ready" 'BEGIN { print a - b }')
    echo "| $k | $(fmt_s "$ready") | $(fmt_s "$logins") | $(fmt_s "$cl") | $(rate "$cl" "$n")" \
      "| $(rate "$after" "$n") | $(fmt_s "$lo") ($(rate "$lo" "$n")/s) | $(ratio "$cl" "$lo")" \
      "| $(fmt_s "$cl_cpu") | $(per_ms "$cl_cpu" "$n") | ${cl_rss} MB |"
  done
  echo
  echo "steps/s counts the whole run; \"after connect\" takes the connect column off its wall." \
    "Every host is a network namespace on this $(nproc)-core machine: more hosts add no CPU."
  echo "Local run for comparison: CPU $(fmt_s "$lo_cpu") (its $n \`true\` processes included), peak RSS ${lo_rss} MB (last row's run)."
}

main() {
  if [[ ${1:-} == --scale ]]; then
    shift
    main_scale "$@"
  else
    main_pair "$@"
  fi
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
