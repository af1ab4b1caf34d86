#!/usr/bin/env bash
# eventor next to its peers, all measured in one go on this machine; prints one markdown table
# (case | tool | wall | per job | wall vs eventor's):
#   - 1,000 `true` on this host: eventor (SQLite, every transition committed, max_concurrent 2
#     for 2 cores), one shell loop, two shell loops side by side, GNU parallel -j2, and
#     HyperQueue (LocalCluster with a 2-core worker; its start-up is reported apart);
#   - 1,000 `true` over the test hosts node1+node2, 2 slots each: eventor (Postgres store on the
#     test bed) and GNU parallel --sshlogin over warmed-up ControlMaster connections;
#   - a chain of 1,000 `true` steps, each started by the previous one's success: eventor and a
#     shell loop.
#
#   - `--echo` alone, on this host, no test bed: a step printing 100 MB (1,000,000 numbered
#     lines), eventor-coord's console (which echoes every line) to a file against --quiet.
#   - `--syscalls` alone, on this host, no test bed: system calls per task (`strace -f -c`,
#     every process of the run, the commands' own included) of 1,000 `true` steps with no
#     limit, with max_concurrent 2, and as a chain, beside a shell loop and a shell chain.
#
# Usage: scripts/bench-peers.sh [N]   (N jobs per case, default 1000; needs root)
#        scripts/bench-peers.sh --echo  (BENCH_REPEAT: best of R alternating pairs, default 5)
#        scripts/bench-peers.sh --syscalls [N]  (installs strace when missing)
#   BENCH_REPEAT=R  best of R runs for each case but GNU parallel over ssh (default 3)
#   EVENTOR_BIN=DIR use DIR's eventor-coord and eventor-agent instead of a release build
# Installs GNU parallel and GNU time (apt) and hyperqueue (pip) when missing. Reuses a test bed
# that is up (scripts/testbed.sh status), else brings one up and takes it down at exit.
#
# Per job = wall / N. "vs eventor" = this tool's wall / eventor's wall in the same case
# (above 1: slower than eventor). Wall times include each tool's own start (eventor-coord opening
# its store, GNU parallel's perl start), except HyperQueue's cluster start-up.
set -euo pipefail
# The helpers (test bed reuse, timing, hosts files, ssh multiplexing) live in bench-cluster.sh.
# shellcheck source=bench-cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-cluster.sh"

repeat=${BENCH_REPEAT:-3}
rows=()

# row CASE TOOL WALL N EVENTOR_WALL: a table row.
row() {
  rows+=("| $1 | $2 | $(fmt_s "$3") | $(per_ms "$3" "$4") | $(ratio "$3" "$5")× |")
}

# shell_loops N K: K shell loops side by side, N `/bin/true` runs in all (an external program,
# as eventor runs, not bash's builtin `true`).
shell_loops() {
  local n=$1 k=$2 j
  for ((j = 0; j < k; j++)); do
    (for ((i = j; i < n; i += k)); do /bin/true; done) &
  done
  wait
}

# shell_chain N: N `/bin/true` one after another, each only if the one before succeeded.
shell_chain() {
  local i
  for ((i = 0; i < $1; i++)); do /bin/true || return 1; done
}

# chain_flow FILE N: steps s1..sN, s(k+1) started by the success of s(k).
chain_flow() {
  awk -v n="$2" 'BEGIN {
    print "name: chain"
    print "events:"
    for (i = 0; i < n; i++) printf "  e%d: {}\n", i
    print "steps:"
    for (i = 1; i < n; i++) printf "  s%d: {run: \"true\", triggers: {success: [e%d]}}\n", i, i
    printf "  s%d: {run: \"true\"}\n", n
    print "assocs:"
    for (i = 1; i <= n; i++) printf "  - {event: e%d, targets: [s%d]}\n", i - 1, i
    print "trigger: [{event: e0}]"
  }' >"$1"
}

hq_need() {
  python3 -c 'import hyperqueue' 2>/dev/null && return 0
  msg "installing hyperqueue (pip)"
  python3 -m pip install -q hyperqueue >/dev/null 2>&1
}

# hq_run N R: prints "startup best_wall best_wait": HyperQueue's LocalCluster (server and one
# 2-core worker, in-process) start-up until a first 1-task job ran, then R jobs of N `true`
# programs one after another.
# wait_for_jobs only looks every second, so the wall is taken from the tasks themselves: from
# submit to the newest task output file (each task creates its own .stdout when it starts; a
# `true` ends within a millisecond). best_wait is what submit + wait_for_jobs took.
hq_run() {
  python3 - "$1" "$2" "$work/hq" <<'PY' 2>"$work/hq.log" | tail -n1
import os, sys, time
from hyperqueue import Job, LocalCluster
from hyperqueue.cluster import WorkerConfig

n, repeat, base = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.makedirs(base, exist_ok=True)


def run(client, name, tasks):
    """Runs a job of `tasks` true's; returns (submit time, newest task start, wait's length)."""
    cwd = os.path.join(base, name)
    os.makedirs(cwd)
    job = Job(default_workdir=cwd)
    for _ in range(tasks):
        job.program(["true"])
    start, start_mono = time.time(), time.monotonic()
    client.wait_for_jobs([client.submit(job)])
    wait = time.monotonic() - start_mono
    files = [e for e in os.scandir(cwd) if e.name.endswith(".stdout")]
    assert len(files) == tasks, f"{len(files)} task outputs, expected {tasks}"
    return start, max(e.stat().st_mtime for e in files), wait


t0 = time.time()
with LocalCluster(os.path.join(base, "server"), WorkerConfig(cores=2)) as cluster:
    client = cluster.client()
    # The worker registers after LocalCluster returns: start-up ends when a first task ran.
    _, first_task, _ = run(client, "warmup", 1)
    startup = first_task - t0
    walls, waits = [], []
    for r in range(repeat):
        start, last_task, wait = run(client, f"job{r}", n)
        walls.append(last_task - start)
        waits.append(wait)
print(f"{startup:.3f} {min(walls):.3f} {min(waits):.3f}")
PY
}

main_peers() {
  local n=${1:-1000} ev_t t hq hq_start hq_wait connect
  bench_setup 2
  hq_need
  spread_flow local.yaml "$n" "max_concurrent: 2" ""
  spread_flow spread.yaml "$n" "" ", hosts: [node1, node2]"
  ready_flow ready.yaml node1 node2
  chain_flow chain.yaml "$n"
  pg_schema "bench_peers_$$"
  hosts_file hosts.yaml "$store_url" node1 node2

  # 1. Locally.
  ev_t=$(best "$repeat" ev_local local.yaml)
  row "$n \`true\` on this host" "eventor (SQLite, max_concurrent 2)" "$ev_t" "$n" "$ev_t"
  t=$(best "$repeat" shell_loops "$n" 1)
  row "" "shell loop" "$t" "$n" "$ev_t"
  t=$(best "$repeat" shell_loops "$n" 2)
  row "" "2 shell loops side by side" "$t" "$n" "$ev_t"
  t=$(best "$repeat" sh -c "seq $n | parallel -j2 true")
  row "" "GNU parallel -j2" "$t" "$n" "$ev_t"
  t=$(hq_run "$n" "$repeat") # (assigned first: a failure in a here-string would not stop us)
  read -r hq_start hq hq_wait <<<"$t"
  row "" "HyperQueue (2-core worker, no journal)" "$hq" "$n" "$ev_t"

  # 2. Over node1 + node2, 2 slots each. The wall includes connecting and starting agents.
  ev_warm hosts.yaml ready.yaml
  connect=$(best "$repeat" ev --hosts hosts.yaml ready.yaml)
  ev_t=$(best "$repeat" ev --hosts hosts.yaml spread.yaml)
  row "$n \`true\` over node1+node2" "eventor (Postgres, hosts: [node1, node2])" "$ev_t" "$n" "$ev_t"
  ssh_mux_warm node1 node2
  t=$(seconds parallel_ssh "$n" node1 node2) # about a minute: once
  row "" "GNU parallel --sshlogin 2/node1,2/node2 (ControlMaster)" "$t" "$n" "$ev_t"

  # 3. A chain.
  ev_t=$(best "$repeat" ev_local chain.yaml)
  row "chain of $n \`true\` (each on the previous one's success)" "eventor (SQLite)" "$ev_t" "$n" "$ev_t"
  t=$(best "$repeat" shell_chain "$n")
  row "" "shell loop (\`/bin/true \|\| stop\`)" "$t" "$n" "$ev_t"

  echo "| case | tool | wall | per job | vs eventor |"
  echo "|---|---|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "HyperQueue: cluster start-up $(fmt_s "$hq_start") (not in its wall); submit + wait_for_jobs" \
    "returned after $(fmt_s "$hq_wait") (it polls once a second)."
  echo "eventor over node1+node2: a run that only connects, starts both agents and runs 1 step on" \
    "each takes $(fmt_s "$connect") of its wall."
  echo "Best of $repeat runs per case (GNU parallel over ssh: 1 run); $(nproc) cores; $(date -u +%FT%TZ)."
}

# main_echo: the console echo case alone (no test bed).
main_echo() {
  local r=${BENCH_REPEAT:-5} echoed quiet echo_seen t
  trap cleanup EXIT
  binaries
  work=$(mktemp -d)
  cd "$work"
  flood_lines lines.txt
  flood_flow flood.yaml "$work/lines.txt" ""
  t=$(echo_pair "$r" --store "$(fresh_sqlite)" flood.yaml)
  read -r echoed quiet <<<"$t"
  echo_seen=$(cat "$work/echo-seen")
  echo "| case | wall, console to a file | wall, --quiet | echoed ÷ quiet |"
  echo "|---|---:|---:|---:|"
  echo "| a step printing 100 MB (1,000,000 lines) on this host | $(fmt_s "$echoed") | $(fmt_s "$quiet") | $(ratio "$echoed" "$quiet")× |"
  echo
  echo "Best of $r alternating pairs; the echo held $echo_seen; $(nproc) cores; $(date -u +%FT%TZ)."
}

# calls_of FILE N: a row's cells from `strace -c` summary FILE, per task of N: every call,
# then the ones the commands' starts and the store's commits are made of.
calls_of() {
  awk -v n="$2" '
    $NF == "total" { total = $4 }
    $NF ~ /^(futex|fcntl|execve|pidfd_open|pwrite64|clone3|clone|vfork|rt_sigaction)$/ {
      # A line with an error count has 6 fields, without one 5: calls is always the 4th.
      calls[$NF] = $4; if (NF == 6) errors[$NF] = $5
    }
    function per(name) { return sprintf("%.1f", calls[name] / n) }
    END {
      spawn = (calls["clone3"] + calls["clone"] + calls["vfork"]) / n
      printf "| %.1f | %s | %s | %s (%.1f failed) | %s | %s | %.1f | %s |\n", total / n,
        per("futex"), per("fcntl"), per("execve"), errors["execve"] / n, per("pidfd_open"),
        per("pwrite64"), spawn, per("rt_sigaction")
    }' "$1"
}

# main_syscalls [N]: system calls per task of eventor's local cases and the shell's.
main_syscalls() {
  local n=${1:-1000} what
  trap cleanup EXIT
  apt_need strace strace
  binaries
  work=$(mktemp -d)
  cd "$work"
  spread_flow default.yaml "$n" "" ""
  spread_flow limited.yaml "$n" "max_concurrent: 2" ""
  chain_flow chain.yaml "$n"
  echo "| $n tasks | all calls | futex | fcntl | execve | pidfd_open | pwrite64 | process starts | rt_sigaction |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for what in "eventor, no limit:ev_local default.yaml" \
    "eventor, max_concurrent 2:ev_local limited.yaml" \
    "eventor, a chain:ev_local chain.yaml" \
    "shell loop:shell_loops $n 1" "shell chain:shell_chain $n"; do
    # shellcheck disable=SC2086 # the command's words
    strace -f -c -o "$work/calls.txt" bash -c "$(declare -f ev ev_local fresh_sqlite shell_loops shell_chain); \
      coord=$coord work=$work; ${what#*:}" >/dev/null
    printf '| %s ' "${what%%:*}"
    calls_of "$work/calls.txt" "$n"
  done
  echo
  echo "Per task: every process of the run counted (strace -f -c), the commands' own calls and the" \
    "bash running the case included; $(nproc) cores; $(date -u +%FT%TZ)."
}

if [[ ${1:-} == --echo ]]; then
  main_echo
elif [[ ${1:-} == --syscalls ]]; then
  shift
  main_syscalls "$@"
else
  main_peers "$@"
fi
