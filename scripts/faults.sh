#!/usr/bin/env bash
# Fault run: a flow mixing steps on the prime and on both test hosts, hit in each round by one
# random fault, then recovered until it succeeds; after every round the store and the
# commands' own record are checked. Prints a table of rounds, faults by kind, recoveries and
# invariant breaks by kind (each break printed with its evidence). Needs the test bed
# (scripts/testbed.sh up) and the debug binaries of this tree
# (cargo build -p eventor --bin eventor-coord -p eventor-agent).
#
# Usage: [FAULTS_KINDS=all|"kind ..."] [EVENTOR_BIN=DIR] scripts/faults.sh [ROUNDS]   (default 50; CI runs 3)
#   FAULTS_KINDS unset or `all`: every kind; or a list of kinds.
#   FAULT=kind: every round that one kind (kept from before FAULTS_KINDS).
#
# Faults (one per round, drawn at random from the kinds):
#   coordinator    kill -9 of the prime while a step runs
#   agent          kill -9 of the agents while a task runs on a host
#   stop-agent     SIGSTOP of the agents past their heartbeat (7 s), then SIGCONT
#   link           node1's link cut for 7 s while a task runs there
#   postgres       a Postgres restart while a step runs
#   stop-prime     SIGSTOP of the prime past the store's dead_after (and the hosts' lease);
#                  while it is stopped a recovery is tried (as an operator would), then SIGCONT
#   recovery-kill  kill -9 of the prime while a step runs, then kill -9 of its recovery
#                  while a step of the recovery runs
#   prime-link     the prime runs inside node1's network namespace (reaching Postgres and node2
#                  over the bridge); node1's link is cut for 8 s while a step runs, and past
#                  dead_after a recovery is tried from outside, then the link comes back
# A fault lands when it hits while a step it can touch runs (a host's task for the agent and
# link faults, a recovery's step for recovery-kill); a round whose fault did not land is drawn
# again and not counted.
#
# Every command records its start and its end (or its stop on SIGTERM), one file each under
# rec/ of the shared work dir (the hosts are network namespaces of this machine: one file
# system, one clock), with step, sequence, recovery, attempt, pid and network namespace; a
# starting command also records any other attempt of its task whose command is still alive.
# Invariants per round:
#   overlap            no two attempts of a task (step, sequence) are alive at once
#   rerun-after-done   a step that succeeded or was skipped in a recovery never starts in a
#                      later one
#   success-no-end     every `success` row has its command's recorded end (same attempt, pid)
#   unstored-start     every start has its task row (commit before act)
#   not-done           every step succeeded or was skipped in the last recovery
#   never-recovered    six recoveries were enough
#   left-running       no command runs on after the round
# An attempt killed with SIGKILL (no end, no stop recorded) counts as overlapping only when
# a later attempt found it alive.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-50}"
state="${EVENTOR_TESTBED_DIR:-/tmp/eventor-testbed}"
# shellcheck disable=SC1091
source "$state/env"
# EVENTOR_BIN: a directory holding eventor-coord and eventor-agent (a copy, say, so a
# rebuild during a long fault run does not change them under it); default: this tree's.
bin="${EVENTOR_BIN:-$PWD/target/debug}"
coord="$bin/eventor-coord"
agent="$bin/eventor-agent"
[[ -x $coord && -x $agent ]] || { echo "faults: build the debug binaries first" >&2; exit 2; }

ALL=(coordinator agent stop-agent link postgres stop-prime recovery-kill prime-link)
# Every kind holds since leases (a lost host's task is called dead only after its agent's
# lease), the recovery's fence (nothing goes to a host where the dead prime left a task
# active before that lease is out), the prime's lease on its run (a prime cut off from the
# store stops its commands, lets its hosts go and never writes after a takeover): before
# them, coordinator, recovery-kill, prime-link and stop-prime broke "overlap" and
# "rerun-after-done". FAULTS_KINDS narrows the draw, e.g. to chase one kind.
HOLDING=("${ALL[@]}")
case ${FAULTS_KINDS:-} in
  '') kinds=("${HOLDING[@]}") ;;
  all) kinds=("${ALL[@]}") ;;
  *) read -ra kinds <<<"$FAULTS_KINDS" ;;
esac
[[ -n ${FAULT:-} ]] && kinds=("$FAULT")
for kind in "${kinds[@]}"; do
  [[ " ${ALL[*]} " == *" $kind "* ]] || { echo "faults: unknown kind $kind" >&2; exit 2; }
done

dead_after=2   # seconds: the store URL's dead_after (its minimum)
lease=3        # seconds: the hosts file's lease
work=$(mktemp -d)
cleanup() { # the primes still running are this shell's jobs (a reaped pid may be reused)
  ip link set "$EVENTOR_NODE1_VETH" up 2>/dev/null || true
  for p in $(jobs -p); do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done || true
  [[ -n ${FAULTS_KEEP:-} ]] && echo "faults: kept $work" || rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }

# The command of every step: records its start, sleeps, records its end or its stop.
recorder() {
  cat <<'REC'
#!/bin/sh
# rec.sh SECONDS: one step of the fault flow (its record: rec/ next to this file).
rec="$(dirname "$0")/rec"
id="$EVENTOR_STEP_NAME.$EVENTOR_STEP_SEQUENCE.$EVENTOR_STEP_RECOVERY.$EVENTOR_STEP_ATTEMPT.$$"
what="$EVENTOR_STEP_NAME $EVENTOR_STEP_SEQUENCE $EVENTOR_STEP_RECOVERY $EVENTOR_STEP_ATTEMPT $$"
ns=$(ip netns identify $$ 2>/dev/null); ns=${ns:-root}
for other in "$rec/$EVENTOR_STEP_NAME.$EVENTOR_STEP_SEQUENCE".*.start; do
  [ -e "$other" ] || continue
  [ -e "${other%.start}.end" ] || [ -e "${other%.start}.stop" ] && continue
  pid=${other%.start}; pid=${pid##*.}
  # Alive: not gone, and not a zombie waiting for PID 1 (which reaps late here).
  state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ] &&
    echo "alive $what $ns $(date +%s.%N) $(basename "${other%.start}")" >"$rec/$id.alive.$pid"
done
# The store keeps a command's process group (the command, started by the keeper, leads it).
pgid=$(sed 's/.*) //' /proc/$$/stat | cut -d' ' -f3)
echo "start $what $ns $(date +%s.%N) $pgid" >"$rec/$id.start"
trap 'echo "stop $what $ns $(date +%s.%N)" >"$rec/$id.stop"; exit 143' TERM INT HUP
sleep "$1" &
wait $!
echo "end $what $ns $(date +%s.%N)" >"$rec/$id.end"
REC
}

flow() { # a chain of 4, a fan-out over both hosts and the prime, a chain of 3
  local r="exec sh $work/rec.sh"
  cat <<FLOW
name: faults
events: {go: {}, a_done: {}, fan_done: {expr: "b1_done & b2_done & b3_done"}, b1_done: {}, b2_done: {}, b3_done: {}, c1_done: {}, c2_done: {}}
steps:
  a: {run: '$r 0.3', triggers: {success: [a_done]}}
  b1: {run: '$r 1.$((RANDOM % 9))', host: node1, triggers: {success: [b1_done]}}
  b2: {run: '$r 1.$((RANDOM % 9))', host: node2, triggers: {success: [b2_done]}}
  b3: {run: '$r 0.5', triggers: {success: [b3_done]}}
  c1: {run: '$r 1.0', hosts: [node1, node2], triggers: {success: [c1_done]}}
  c2: {run: '$r 0.3', triggers: {success: [c2_done]}}
  c3: {run: '$r 0.2'}
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
store: $EVENTOR_PG_URL_BRIDGE?schema=$1&dead_after=${dead_after}s
ssh_config: $EVENTOR_SSH_CONFIG
lease: ${lease}s
hosts:
  node1: {agent: $agent}
  node2: {agent: $agent}
HOSTS
}

psql_q() { # $1: schema, $2: query
  psql -qtA -F' ' "$EVENTOR_PG_URL" -c "set search_path to $1; $2"
}

# Starts a prime of the round in the background ($1: mode, $2: log, $3: netns or empty);
# its pid is in $prime.
start_prime() {
  local inside=()
  [[ -n ${3:-} ]] && inside=(ip netns exec "$3")
  (cd "$work" && exec "${inside[@]}" "$coord" run --hosts hosts.yaml flow.yaml --run-id f \
    --mode "$1" >"$work/$2" 2>&1) &
  prime=$!
}

recover_mode() { # recover, or restart when the run was killed before storing its run row
  if psql_q "$schema" "select 1 from runs where run_id='f'" 2>/dev/null | grep -q 1; then
    echo recover
  else
    echo restart
  fi
}

# The records: "start|end|stop step seq recovery attempt pid netns time" (a start adds the
# process group, which the store keeps as the task's pid) and
# "alive step seq recovery attempt pid netns time other-id" (one line per file).
records() { cat "$work"/rec/* 2>/dev/null || true; }

# Waits (up to 15 s) until a step the fault can touch runs ($1: awk condition on a start
# line's fields), then a random 0 to 0.3 s, so the fault falls somewhere inside it.
wait_target() {
  local deadline=$((SECONDS + 15))
  while ((SECONDS < deadline)); do
    records | awk -v rec="$work/rec" '
      $1 == "start" { running[$2 "." $3 "." $4 "." $5 "." $6] = $0 }
      $1 == "end" || $1 == "stop" { delete running[$2 "." $3 "." $4 "." $5 "." $6] }
      END { for (k in running) { split(running[k], f, " "); if ('"$1"') found = 1 }; exit !found }' &&
      break
    sleep 0.05
  done
  sleep "0.$((RANDOM % 4))"
}

# Stops a stopped prime's SIGSTOP and waits for the prime ($1) and a usurper ($2).
wait_both() {
  wait "$1" 2>/dev/null || true
  wait "$2" 2>/dev/null && usurped=won || usurped=refused
}

# A recovery tried while the prime is away; its pid is in $usurper.
usurp() {
  local prime_pid=$prime
  start_prime "$(recover_mode)" usurp.log
  usurper=$prime prime=$prime_pid
}

sig() { # $1: signal, then pids (ours: the round's prime, or this tree's agents)
  (($# > 1)) && kill "$@" 2>/dev/null || true
}

# Hits the round's prime with fault $1; sets fault_at (when it hit), target (the awk
# condition a step running then must meet for the fault to have landed) and note.
fault() {
  note=""
  case $1 in
    coordinator | postgres | stop-prime | prime-link) target='1' ;;
    agent | stop-agent) target='f[7] != "root"' ;;
    link) target='f[7] == "'"$EVENTOR_NODE1_NETNS"'"' ;;
    recovery-kill) target='f[4] >= 1' ;;
  esac
  # A prime may be gone already (the shared bed's other users cut links too): every signal to
  # one is allowed to miss, and the landing check tells.
  [[ $1 == recovery-kill ]] && { wait_target '1'; sig -9 "$prime"; wait "$prime" 2>/dev/null || true
    recoveries=$((recoveries + 1)); start_prime "$(recover_mode)" killed-recovery.log; }
  wait_target "$target"
  fault_at=$(now)
  case $1 in
    coordinator | recovery-kill) sig -9 "$prime" ;;
    agent) agents=$(pgrep -f "^$agent( |\$)" || true)
      sig -9 $agents; note="agents killed: ${agents//$'\n'/ }" ;;
    stop-agent) agents=$(pgrep -f "^$agent( |\$)" || true)
      sig -STOP $agents; sleep 7; sig -CONT $agents
      note="agents stopped: ${agents//$'\n'/ }" ;;
    link) ip link set "$EVENTOR_NODE1_VETH" down; sleep 7; ip link set "$EVENTOR_NODE1_VETH" up ;;
    postgres) scripts/testbed.sh pg-restart >/dev/null ;;
    stop-prime) sig -STOP "$prime"; sleep $((dead_after + lease)); usurp; sleep 2
      sig -CONT "$prime"; wait_both "$prime" "$usurper"; note="recovery during the stop $usurped" ;;
    prime-link) ip link set "$EVENTOR_NODE1_VETH" down; sleep $((dead_after + 3)); usurp; sleep 3
      ip link set "$EVENTOR_NODE1_VETH" up; wait_both "$prime" "$usurper"
      note="recovery during the cut $usurped" ;;
  esac
  wait "$prime" 2>/dev/null || true
}

# Did a step meeting $target run at $fault_at (started before, not ended before)? Sets hit to
# the steps that did.
landed() {
  hit=$(records | awk -v at="$fault_at" '
    $1 == "start" && $8 <= at { running[$2 "." $3 "." $4 "." $5 "." $6] = $0 }
    ($1 == "end" || $1 == "stop") && $8 < at { gone[$2 "." $3 "." $4 "." $5 "." $6] = 1 }
    END { for (k in running) { if (k in gone) continue; split(running[k], f, " ")
            if ('"$target"') printf "%s r%s a%s on %s; ", f[2], f[4], f[5], f[7] } }')
  [[ -n $hit ]]
}

# Recovers the run until it succeeds (at most 6 times); a run a usurper finished is done.
recover_all() {
  local try
  for try in 1 2 3 4 5 6; do
    [[ $(psql_q "$schema" "select status from runs where run_id='f' order by recovery desc limit 1" 2>/dev/null) == success ]] &&
      return 0
    recoveries=$((recoveries + 1))
    (cd "$work" && "$coord" run --hosts hosts.yaml flow.yaml --run-id f --mode "$(recover_mode)" \
      >"$work/recover.log" 2>&1) && return 0
  done
  brk never-recovered "$(tail -3 "$work/recover.log")"
}

brk() { # $1: the invariant, $2: evidence
  by_break[$1]=$((${by_break[$1]:-0} + 1)) breaks=$((breaks + 1))
  echo "round $round ($kind) BREAK $1: $2"
}

# The checks over the store's task rows and the commands' records of this round.
check() {
  { psql_q "$schema" "select 'row', step, sequence, recovery, attempt, status, coalesce(pid::text, '-'),
      coalesce(host, 'prime') from tasks where run_id='f'"
    echo "last $(psql_q "$schema" "select max(recovery) from runs where run_id='f'")"
    records
  } | awk -f <(checker) >"$work/breaks.txt"
  local invariant evidence left
  while read -r invariant evidence; do brk "$invariant" "$evidence"; done <"$work/breaks.txt"
  sleep 1 # a command stopped with its group is gone within its grace
  left=$(pgrep -f "$work/rec.sh" || true)
  if [[ -n $left ]]; then
    brk left-running "pids ${left//$'\n'/ }: $(ps -o pid,args -p "${left//$'\n'/,}" | tail -n +2)"
    kill -9 $left 2>/dev/null || true
  fi
}

checker() {
  cat <<'AWK'
function key(a, b) { return a SUBSEP b }
function ts(x) { return sprintf("%.3f", x) }
function show(id) { return id " [" ts(start[id]) ", " (id in fin ? ts(fin[id]) " " how[id] : "no end") "] on " ns[id] }
$1 == "row" { task = key($2, $3); status[task, $4] = $6; attempt[task, $4] = $5; pid[task, $4] = $7
  host[task, $4] = $8; if ($6 == "success" || $6 == "skipped") done_in[task] = done_in[task] " " $4
  if ($6 == "success") wins[++nwins] = task SUBSEP $4; steps[$2] = 1; next }
$1 == "last" { last = $2; next }
{ id = $2 " " $3 " r" $4 " a" $5 " pid " $6 }
$1 == "start" { start[id] = $8 + 0; ns[id] = $7; task_of[id] = key($2, $3); rec_of[id] = $4; att_of[id] = $5
  pid_of[id] = $6; pgid_of[id] = $9; ids[++nids] = id; next }
$1 == "end" || $1 == "stop" { fin[id] = $8 + 0; how[id] = $1; next }
$1 == "alive" { split($9, o, "."); other = o[1] " " o[2] " r" o[3] " a" o[4] " pid " o[5]
  seen_alive[other, id] = " (" id " found it alive as it started)"; pairs[++npairs] = other SUBSEP id }
END {
  for (i = 1; i <= nids; i++) for (j = 1; j <= nids; j++) {
    a = ids[i]; b = ids[j]
    if (i == j || task_of[a] != task_of[b] || !(a in fin)) continue
    if (start[a] <= start[b] && start[b] < fin[a] && !((a, b) in seen_time)) {
      seen_time[a, b] = 1; pairs[++npairs] = a SUBSEP b }
  }
  for (i = 1; i <= npairs; i++) { split(pairs[i], p, SUBSEP)
    if ((p[1], p[2]) in printed) continue; printed[p[1], p[2]] = 1
    print "overlap", show(p[1]) " and " show(p[2]) seen_alive[p[1], p[2]] }
  for (i = 1; i <= nids; i++) {
    id = ids[i]; t = task_of[id]; n = split(done_in[t], rs, " ")
    for (k = 1; k <= n; k++) if (rs[k] + 0 < rec_of[id] + 0)
      print "rerun-after-done", show(id) " after " status[t, rs[k]] " in recovery " rs[k]
    if (!((t, rec_of[id]) in attempt) || attempt[t, rec_of[id]] < att_of[id])
      print "unstored-start", show(id) " has no task row of its recovery and attempt"
  }
  for (i = 1; i <= nwins; i++) {
    split(wins[i], w, SUBSEP); t = key(w[1], w[2]); r = w[3]; found = 0
    for (j = 1; j <= nids; j++) { id = ids[j]
      if (task_of[id] == t && rec_of[id] == r && att_of[id] == attempt[t, r] && how[id] == "end" &&
          (pid[t, r] == "-" || pid[t, r] == pid_of[id] || pid[t, r] == pgid_of[id])) found = 1 }
    if (!found) print "success-no-end", w[1] " " w[2] " r" r " a" attempt[t, r] " pid " pid[t, r] \
      " on " host[t, r] " is success with no recorded end"
  }
  for (s in steps) { st = status[key(s, "1"), last]
    if (st != "success" && st != "skipped") print "not-done", s " is " (st == "" ? "missing" : st) \
      " in the last recovery " last }
}
AWK
}

declare -A by_kind=() redrawn=() by_break=()
breaks=0 recoveries=0 unlanded=0 started=$(date +%s)
recorder >"$work/rec.sh"
for ((round = 1; round <= rounds; round++)); do
  for draw in 1 2 3 4 5; do
    schema="faults_r${round}_d${draw}_$$"
    kind=${kinds[RANDOM % ${#kinds[@]}]}
    flow >"$work/flow.yaml"; hosts "$schema" >"$work/hosts.yaml"
    rm -rf "$work/rec"; mkdir "$work/rec"
    usurper=""
    ns=""; [[ $kind == prime-link ]] && ns=$EVENTOR_NODE1_NETNS
    start_prime restart first.log "$ns"
    fault "$kind"
    recover_all
    check
    [[ -n ${FAULTS_KEEP:-} ]] && cp -r "$work" "$work.r$round.d$draw"
    psql_q public "drop schema $schema cascade" >/dev/null 2>&1 || true
    if landed; then echo "round $round ($kind): hit ${hit%; }${note:+; $note}"; break; fi
    echo "round $round ($kind): the fault did not land, drawn again"
    redrawn[$kind]=$((${redrawn[$kind]:-0} + 1))
    [[ $draw == 5 ]] && unlanded=$((unlanded + 1))
  done
  by_kind[$kind]=$((${by_kind[$kind]:-0} + 1))
done
elapsed=$(($(date +%s) - started))
echo
echo "| rounds | recoveries | invariant breaks | faults that never landed | time |"
echo "|---:|---:|---:|---:|---:|"
echo "| $rounds | $recoveries | $breaks | $unlanded | ${elapsed} s |"
echo
echo "| fault | rounds | drawn again (did not land) |"
echo "|---|---:|---:|"
for kind in "${ALL[@]}"; do
  echo "| $kind | ${by_kind[$kind]:-0} | ${redrawn[$kind]:-0} |"
done
echo
echo "| invariant | breaks |"
echo "|---|---:|"
for b in overlap rerun-after-done success-no-end unstored-start not-done never-recovered left-running; do
  echo "| $b | ${by_break[$b]:-0} |"
done
((breaks == 0 && unlanded == 0))
