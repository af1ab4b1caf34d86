#!/usr/bin/env bash
# Fault run: a flow mixing steps on the prime and on both test hosts, hit in each round by one
# random fault, then recovered until it succeeds; after every round the store and the
# commands' own record are checked. Prints a table of rounds, faults by kind, recoveries and
# invariant breaks (which must be 0). Needs the test bed (scripts/testbed.sh up) and the
# debug binaries (cargo build -p eventor --bin eventor-coord -p eventor-agent).
#
# Usage: scripts/faults.sh [ROUNDS]   (default 50; the test command runs a few)
# Faults: kill -9 of the coordinator; kill -9 of an agent; SIGSTOP of an agent past its
# heartbeat (then SIGCONT); a host's link cut for 7 s; a Postgres restart.
# Invariants per round: no step that succeeded ran again (each start in ran.txt is a stored
# non-skipped row), every step is done in the last recovery, no command is left running.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-50}"
state="${EVENTOR_TESTBED_DIR:-/tmp/eventor-testbed}"
# shellcheck disable=SC1091
source "$state/env"
coord="$PWD/target/debug/eventor-coord"
agent="$PWD/target/debug/eventor-agent"
[[ -x $coord && -x $agent ]] || { echo "faults: build the debug binaries first" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"; ip link set "$EVENTOR_NODE1_VETH" up 2>/dev/null || true' EXIT

flow() { # a chain of 4, a fan-out over both hosts and the prime, a chain of 3
  cat <<FLOW
name: faults
events: {go: {}, a_done: {}, fan_done: {expr: "b1_done & b2_done & b3_done"}, b1_done: {}, b2_done: {}, b3_done: {}, c1_done: {}, c2_done: {}}
steps:
  a: {run: 'echo a >> $work/ran.txt; sleep 0.3', triggers: {success: [a_done]}}
  b1: {run: 'echo b1 >> $work/ran.txt; sleep 0.$((RANDOM % 9 + 1))', host: node1, triggers: {success: [b1_done]}}
  b2: {run: 'echo b2 >> $work/ran.txt; sleep 0.$((RANDOM % 9 + 1))', host: node2, triggers: {success: [b2_done]}}
  b3: {run: 'echo b3 >> $work/ran.txt; sleep 0.5', triggers: {success: [b3_done]}}
  c1: {run: 'echo c1 >> $work/ran.txt; sleep 0.4', hosts: [node1, node2], triggers: {success: [c1_done]}}
  c2: {run: 'echo c2 >> $work/ran.txt; sleep 0.3', triggers: {success: [c2_done]}}
  c3: {run: 'echo c3 >> $work/ran.txt; sleep 0.2'}
assocs:
  - {event: go, targets: [a]}
  - {event: a_done, targets: [b1, b2, b3]}
  - {event: fan_done, targets: [c1]}
  - {event: c1_done, targets: [c2]}
  - {event: c2_done, targets: [c3]}
trigger: [{event: go}]
FLOW
}

hosts() {
  cat <<HOSTS
store: $EVENTOR_PG_URL_BRIDGE?schema=$1
ssh_config: $EVENTOR_SSH_CONFIG
hosts:
  node1: {agent: $agent}
  node2: {agent: $agent}
HOSTS
}

psql_q() { # $1: schema, $2: query
  psql -qtA "$EVENTOR_PG_URL" -c "set search_path to $1; $2"
}

fault() { # $1: kind; acts on the running coordinator $2
  case $1 in
    coordinator) kill -9 "$2" ;;
    agent) pkill -9 -f "^$agent" || true ;;
    stop-agent)
      pkill -STOP -f "^$agent" || true; sleep 7; pkill -CONT -f "^$agent" || true ;;
    link) ip link set "$EVENTOR_NODE1_VETH" down; sleep 7; ip link set "$EVENTOR_NODE1_VETH" up ;;
    postgres) scripts/testbed.sh pg-restart >/dev/null ;;
  esac
}

kinds=(coordinator agent stop-agent link postgres)
declare -A by_kind=()
breaks=0 recoveries=0 started=$(date +%s)
for ((round = 1; round <= rounds; round++)); do
  schema="faults_r${round}_$$"
  flow >"$work/flow.yaml"; hosts "$schema" >"$work/hosts.yaml"; : >"$work/ran.txt"
  kind=${FAULT:-${kinds[RANDOM % ${#kinds[@]}]}}
  by_kind[$kind]=$((${by_kind[$kind]:-0} + 1))
  (cd "$work" && exec "$coord" run --hosts hosts.yaml flow.yaml --run-id f >/dev/null 2>&1) &
  pid=$!
  sleep "0.$((RANDOM % 9 + 1))"
  fault "$kind" "$pid"
  wait "$pid" 2>/dev/null || true
  for try in 1 2 3 4 5 6; do
    recoveries=$((recoveries + 1))
    mode=recover
    # Killed before it stored even its run row: there is nothing to recover, start anew.
    psql_q "$schema" "select 1 from runs where run_id='f'" 2>/dev/null | grep -q 1 || mode=restart
    if (cd "$work" && "$coord" run --hosts hosts.yaml flow.yaml --run-id f --mode $mode >"$work/recover.log" 2>&1); then
      break
    fi
    [[ $try == 6 ]] && { echo "round $round ($kind): never recovered"; breaks=$((breaks + 1)); }
  done
  # Every step done in the last recovery.
  done_steps=$(psql_q "$schema" "select count(*) from tasks where run_id='f' and recovery=(select max(recovery) from runs where run_id='f') and status in ('success','skipped')")
  [[ $done_steps == 7 ]] || {
    echo "round $round ($kind): $done_steps of 7 steps done"; tail -3 "$work/recover.log"
    breaks=$((breaks + 1))
  }
  # Nothing ran more often than it was started in a stored row (so nothing that had
  # succeeded, and was recorded skipped, ran again).
  for step in a b1 b2 b3 c1 c2 c3; do
    ran=$(grep -cx "$step" "$work/ran.txt" || true)
    rows=$(psql_q "$schema" "select count(*) from tasks where run_id='f' and step='$step' and status not in ('skipped','ready')")
    ((ran <= rows)) || { echo "round $round ($kind): $step ran $ran times, $rows rows"; breaks=$((breaks + 1)); }
  done
  sleep 1 # a command stopped with its group is gone within its grace
  if pgrep -f "$work/ran.txt" >/dev/null; then
    echo "round $round ($kind): a command was left running"; breaks=$((breaks + 1))
  fi
  psql_q public "drop schema $schema cascade" >/dev/null 2>&1 || true
done
elapsed=$(($(date +%s) - started))
echo
echo "| rounds | coordinator kill -9 | agent kill -9 | agent SIGSTOP | link cut | Postgres restart | recoveries | invariant breaks | time |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
echo "| $rounds | ${by_kind[coordinator]:-0} | ${by_kind[agent]:-0} | ${by_kind[stop-agent]:-0} | ${by_kind[link]:-0} | ${by_kind[postgres]:-0} | $recoveries | $breaks | ${elapsed} s |"
((breaks == 0))
