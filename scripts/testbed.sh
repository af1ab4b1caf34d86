#!/usr/bin/env bash
# Test bed for eventor's integration tests: brings up (and down) a throwaway
# PostgreSQL 15 cluster and N SSH test hosts (network namespaces, or sshd's on
# 127.0.0.x where namespaces are refused) on this machine. Needs root.
#
# Usage:
#   scripts/testbed.sh up [--hosts N] [--pg] [--ssh] [--loopback]
#       Tears down whatever is up, then brings up Postgres and/or N hosts
#       (default: both, N=2). --loopback skips network namespaces.
#   scripts/testbed.sh down        stop everything, remove the state dir
#   scripts/testbed.sh status      print what is up (exit 0 all up, 3 if not)
#   scripts/testbed.sh pg-restart  pg_ctl -m fast -w restart (reconnect test)
#   scripts/testbed.sh pg-role     add the password role (below) to a running
#       testbed that predates it, and its URLs to the env file
#   scripts/testbed.sh pg-tls      turn TLS on in a running testbed that predates
#       it (a reload, no restart), add the TLS-only role, and its env lines
#
# Then:  . "${EVENTOR_TESTBED_DIR:-/tmp/eventor-testbed}/env"
#        ssh -F "$EVENTOR_SSH_CONFIG" node1 hostname -I
#        psql "$EVENTOR_PG_URL" -c 'select 1'
#        ip link set "$EVENTOR_NODE1_VETH" down   # cut node1 off (netns mode)
#
# Environment: EVENTOR_TESTBED_DIR (state dir, default /tmp/eventor-testbed),
# EVENTOR_PG_PORT (default 55432). The state dir holds env, ssh_config,
# known_hosts, id_ed25519, per-node sshd files and the Postgres cluster.
# Traffic goes only to loopback and the test subnet 10.213.0.0/24 on evbr0.
# Postgres trusts every role but one: evpw must log in with its SCRAM
# password ($EVENTOR_PG_URL_PW, $EVENTOR_PG_URL_PW_BRIDGE; the password holds
# / ? @ and : to exercise URL parsing), for the credential tests. TLS is on
# (a test CA and a server certificate for localhost, 127.0.0.1 and the bridge
# address, in $STATE/pg/tls); evtls may log in only over TLS, with its SCRAM
# password ($EVENTOR_PG_URL_TLS, $EVENTOR_PG_URL_TLS_BRIDGE; the CA in
# $EVENTOR_PG_TLS_CA, another CA that signed nothing in $EVENTOR_PG_TLS_WRONG_CA).
# Sourced (`. scripts/testbed.sh`), it only defines its functions.
set -euo pipefail

STATE=${EVENTOR_TESTBED_DIR:-/tmp/eventor-testbed}
PG_PORT=${EVENTOR_PG_PORT:-55432}
PG_BIN=/usr/lib/postgresql/15/bin
SSHD=/usr/sbin/sshd
BRIDGE=evbr0
NET_PREFIX=10.213.0
SUBNET=$NET_PREFIX.0/24
BRIDGE_ADDR=$NET_PREFIX.1
NS_PREFIX=ev-node
VETH_PREFIX=ev-veth
MARKER=.eventor-testbed
MAX_HOSTS=50
PW_USER=evpw
PW_PASS='ev/s3cr?et@pw:x'
TLS_USER=evtls
TLS_PASS='ev-tls-pw'

msg() { printf 'testbed: %s\n' "$*" >&2; }
die() { msg "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# as_postgres CMD ARGS...: run a command as the postgres user.
as_postgres() { su postgres -s /bin/bash -c "$(printf '%q ' "$@")"; }

# wait_for SECONDS WHAT CMD...: retry CMD every 0.1 s until it succeeds.
wait_for() {
  local secs=$1 what=$2 deadline
  shift 2
  deadline=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    (($(date +%s) < deadline)) || { msg "timed out after ${secs}s: $what"; return 1; }
    sleep 0.1
  done
}

tcp_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
# pid_alive PID: running (a zombie waiting for init to reap it counts as gone).
pid_alive() {
  [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
  [[ $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) != Z ]]
}
pid_of() { [[ -s $1 ]] && head -n1 "$1"; }
node_dir() { echo "$STATE/nodes/node$1"; }
state_mode() { cat "$STATE/mode" 2>/dev/null || echo none; }

# node_addr K MODE: the address of host K.
node_addr() {
  if [[ $2 == loopback ]]; then echo "127.0.0.$((10 + $1))"; else echo "$NET_PREFIX.$((10 + $1))"; fi
}

# ---------------------------------------------------------------- state dir

state_is_ours() { [[ ! -e $STATE ]] || [[ -e $STATE/$MARKER ]] || [[ -z $(ls -A "$STATE" 2>/dev/null) ]]; }

make_state_dir() {
  state_is_ours || die "$STATE exists and is not a testbed state dir; set EVENTOR_TESTBED_DIR"
  mkdir -p "$STATE/nodes"
  chmod 755 "$STATE"
  touch "$STATE/$MARKER"
}

remove_state_dir() {
  [[ -e $STATE ]] || return 0
  if state_is_ours; then rm -rf "$STATE"; else msg "not removing $STATE: no $MARKER in it"; fi
}

# ---------------------------------------------------------------- prerequisites

need_pg_binaries() {
  local b
  for b in initdb pg_ctl postgres; do
    [[ -x $PG_BIN/$b ]] && continue
    msg "PostgreSQL 15 server binaries missing ($PG_BIN/$b)."
    msg "Install them with: apt-get update && apt-get install -y postgresql-15"
    exit 1
  done
  command -v psql >/dev/null || die "psql missing: apt-get install -y postgresql-client-15"
  id postgres >/dev/null 2>&1 || die "no postgres user: apt-get install -y postgresql-15"
}

need_sshd() {
  if [[ ! -x $SSHD ]]; then
    msg "$SSHD missing: installing openssh-server with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq openssh-server >&2
  fi
  [[ -x $SSHD ]] || die "$SSHD still missing after apt-get install openssh-server"
  { command -v ssh-keygen && command -v ssh; } >/dev/null || die "ssh client missing: apt-get install -y openssh-client"
  mkdir -p /run/sshd
  chmod 755 /run/sshd
}

# ---------------------------------------------------------------- network

# netns_usable: can this sandbox make namespaces, veth pairs and bridges?
netns_usable() {
  local ns=ev-probe$$ ok=0
  ip netns add "$ns" 2>/dev/null || return 1
  ip link add evprobe$$ type veth peer name eth0 netns "$ns" 2>/dev/null || ok=1
  ip link add evprobebr$$ type bridge 2>/dev/null || ok=1
  ip link del evprobebr$$ 2>/dev/null || true
  ip link del evprobe$$ 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  return "$ok"
}

make_bridge() {
  ip link add "$BRIDGE" type bridge
  ip addr add "$BRIDGE_ADDR/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}

# make_netns K: namespace ev-nodeK with eth0 at .1K on the bridge.
make_netns() {
  local ns=$NS_PREFIX$1 veth=$VETH_PREFIX$1 addr
  addr=$(node_addr "$1" netns)
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$BRIDGE" up
  ip netns exec "$ns" ip addr add "$addr/24" dev eth0
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip link set eth0 up
}

# ---------------------------------------------------------------- ssh hosts

make_user_key() {
  ssh-keygen -q -t ed25519 -N '' -C eventor-testbed-user -f "$STATE/id_ed25519"
  cp "$STATE/id_ed25519.pub" "$STATE/authorized_keys"
  chmod 600 "$STATE/authorized_keys"
  : >"$STATE/known_hosts"
  : >"$STATE/ssh_config"
}

# write_sshd_config K ADDR
write_sshd_config() {
  local dir
  dir=$(node_dir "$1")
  cat >"$dir/sshd_config" <<EOF
# eventor testbed sshd for node$1 (generated by scripts/testbed.sh)
ListenAddress $2
Port 22
HostKey $dir/ssh_host_ed25519_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $STATE/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
UseDNS no
PrintMotd no
MaxStartups 100:30:200
MaxSessions 100
Subsystem sftp internal-sftp
EOF
}

# add_client_entries K ADDR: known_hosts lines and an ssh_config block.
add_client_entries() {
  local key
  key=$(cut -d' ' -f1,2 "$(node_dir "$1")/ssh_host_ed25519_key.pub")
  printf '%s %s\nnode%s %s\n' "$2" "$key" "$1" "$key" >>"$STATE/known_hosts"
  cat >>"$STATE/ssh_config" <<EOF
Host node$1
    HostName $2
    User root
    Port 22
    IdentityFile $STATE/id_ed25519
    IdentitiesOnly yes
    StrictHostKeyChecking yes
    UserKnownHostsFile $STATE/known_hosts
    ConnectTimeout 5
    BatchMode yes

EOF
}

# start_sshd K ADDR MODE
start_sshd() {
  local dir run=()
  dir=$(node_dir "$1")
  mkdir -p "$dir"
  ssh-keygen -q -t ed25519 -N '' -C "eventor-testbed-node$1" -f "$dir/ssh_host_ed25519_key"
  write_sshd_config "$1" "$2"
  add_client_entries "$1" "$2"
  [[ $3 == netns ]] && run=(ip netns exec "$NS_PREFIX$1")
  [[ $3 == loopback ]] && tcp_open "$2" 22 && die "$2:22 is already taken by another process"
  "$SSHD" -t -f "$dir/sshd_config" || die "bad sshd config $dir/sshd_config"
  with_host_rc "${run[@]}" "$SSHD" -f "$dir/sshd_config" -E "$dir/sshd.log" || { tail -n5 "$dir/sshd.log" >&2; die "sshd for node$1 failed"; }
}

# with_host_rc CMD...: runs CMD in a mount namespace of its own, where the login user's
# ~/.bashrc is a fresh Debian host's (nothing for a non-interactive shell). Why: bash reads
# ~/.bashrc for every command sshd runs, and the hosts share this machine's files. This
# machine's rc (pyenv init) costs 90 ms of CPU per login and takes a lock that concurrent
# logins queue on in 0.1 s sleeps: sixteen "hosts" would wait on one another, which sixteen
# real hosts never do. EVENTOR_TESTBED_HOST_RC=machine keeps the machine's rc; so does a
# machine where unshare is refused.
with_host_rc() {
  local rc
  rc="$(getent passwd root | cut -d: -f6)/.bashrc"
  if [[ ${EVENTOR_TESTBED_HOST_RC:-plain} == machine || ! -f $rc ]] ||
    ! unshare --mount --propagation private true 2>/dev/null; then
    "$@"
    return
  fi
  [[ -f $STATE/host.bashrc ]] || echo "# ~/.bashrc of every test host (scripts/testbed.sh)" >"$STATE/host.bashrc"
  unshare --mount --propagation private -- \
    sh -c 'mount --bind "$1" "$2" && shift 2 && exec "$@"' sh "$STATE/host.bashrc" "$rc" "$@"
}

# sshd_ready K ADDR: its pid file names a live sshd and ADDR:22 accepts.
# (sshd daemonizes before it binds, so its exit code says nothing.)
sshd_ready() {
  local dir
  dir=$(node_dir "$1")
  grep -q 'Cannot bind' "$dir/sshd.log" 2>/dev/null && return 2
  pid_alive "$(pid_of "$dir/sshd.pid")" && tcp_open "$2" 22
}

wait_sshd() {
  local deadline rc
  deadline=$(($(date +%s) + 10))
  while :; do
    rc=0
    sshd_ready "$1" "$2" || rc=$?
    ((rc == 0)) && return 0
    ((rc != 2 && $(date +%s) < deadline)) || break
    sleep 0.1
  done
  tail -n5 "$(node_dir "$1")/sshd.log" >&2
  die "sshd for node$1 did not come up on $2:22"
}

# verify_host K ADDR MODE: a real ssh login; print the address it reports.
verify_host() {
  local out
  # shellcheck disable=SC2016 # expanded by the remote shell
  out=$(ssh -F "$STATE/ssh_config" "node$1" 'set -- $SSH_CONNECTION; echo "$3 $(hostname -I 2>/dev/null)"') ||
    die "ssh -F $STATE/ssh_config node$1 failed"
  [[ " $out " == *" $2 "* ]] || die "node$1 answered from '$out', expected $2"
  if [[ $3 == netns ]]; then
    printf 'ssh node%s: %s:22 up (netns %s, veth %s, sshd pid %s); ssh says: %s\n' \
      "$1" "$2" "$NS_PREFIX$1" "$VETH_PREFIX$1" "$(pid_of "$(node_dir "$1")/sshd.pid")" "$out"
  else
    printf 'ssh node%s: %s:22 up (loopback, sshd pid %s); ssh says: %s\n' \
      "$1" "$2" "$(pid_of "$(node_dir "$1")/sshd.pid")" "$out"
  fi
}

# verify_hosts N MODE: verify_host for each host, in parallel, output in order.
verify_hosts() {
  local k pids=() rc=0
  for ((k = 1; k <= $1; k++)); do
    verify_host "$k" "$(node_addr "$k" "$2")" "$2" >"$(node_dir "$k")/verify.out" &
    pids+=($!)
  done
  for ((k = 1; k <= $1; k++)); do
    wait "${pids[k - 1]}" || rc=1
    cat "$(node_dir "$k")/verify.out"
  done
  return "$rc"
}

# up_hosts N MODE
up_hosts() {
  local k mode=$2 t0
  t0=$(now)
  make_user_key
  [[ $mode == netns ]] && make_bridge
  for ((k = 1; k <= $1; k++)); do
    [[ $mode == netns ]] && make_netns "$k"
    start_sshd "$k" "$(node_addr "$k" "$mode")" "$mode"
  done
  for ((k = 1; k <= $1; k++)); do wait_sshd "$k" "$(node_addr "$k" "$mode")"; done
  verify_hosts "$1" "$mode"
  msg "ssh hosts up in $(since "$t0")s"
}

# ---------------------------------------------------------------- postgres

pg_data() { echo "$STATE/pg/data"; }
pg_log() { echo "$STATE/pg/postgres.log"; }

port_taken() { tcp_open 127.0.0.1 "$1"; }

init_pg() {
  local pg=$STATE/pg
  mkdir -p "$pg/data" "$pg/run"
  chown -R postgres:postgres "$pg"
  chmod 700 "$pg/data"
  su postgres -s /bin/bash -c "test -x $(printf '%q' "$pg")" || die "user postgres cannot reach $pg; pick an EVENTOR_TESTBED_DIR it can traverse"
  as_postgres "$PG_BIN/initdb" -D "$pg/data" -A trust -U postgres -E UTF8 --no-sync --no-instructions >"$pg/initdb.log" 2>&1 ||
    { tail -n20 "$pg/initdb.log" >&2; die "initdb failed"; }
  chown postgres:postgres "$pg/initdb.log"
}

# configure_pg LISTEN: settings and pg_hba lines for the test subnet.
configure_pg() {
  cat >>"$(pg_data)/postgresql.conf" <<EOF

# eventor testbed (scripts/testbed.sh)
port = $PG_PORT
listen_addresses = '$1'
unix_socket_directories = '$STATE/pg/run'
fsync = on
EOF
  printf 'host all all %s trust\nhost all all 127.0.0.0/8 trust\n' "$SUBNET" >>"$(pg_data)/pg_hba.conf"
}

start_pg() {
  port_taken "$PG_PORT" && die "port $PG_PORT is already in use; set EVENTOR_PG_PORT"
  as_postgres "$PG_BIN/pg_ctl" -D "$(pg_data)" -l "$(pg_log)" -w -t 60 start >/dev/null ||
    { tail -n20 "$(pg_log)" >&2; die "postgres failed to start"; }
  wait_for 30 "postgres accepting on 127.0.0.1:$PG_PORT" pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres
}

psql_q() { psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$1" -p "$PG_PORT" -U postgres "$2" -c "$3"; }

# up_pg MODE
up_pg() {
  local listen=127.0.0.1 t0 ver
  t0=$(now)
  [[ $1 == netns ]] && listen="127.0.0.1,$BRIDGE_ADDR"
  init_pg
  configure_pg "$listen"
  make_tls_files
  configure_tls
  start_pg
  psql_q 127.0.0.1 postgres 'create database eventor' >/dev/null
  ver=$(psql_q 127.0.0.1 eventor 'show server_version')
  [[ $(psql_q 127.0.0.1 eventor 'select 1') == 1 ]] || die "select 1 on eventor failed"
  if [[ $1 == netns ]]; then
    [[ $(psql_q "$BRIDGE_ADDR" eventor 'select 1') == 1 ]] || die "select 1 via $BRIDGE_ADDR failed"
  fi
  add_pw_role
  add_tls_role
  printf 'postgres: %s up on %s port %s (db eventor, user postgres, trust, fsync on; role %s scram; role %s TLS only), select 1 ok\n' "$ver" "$listen" "$PG_PORT" "$PW_USER" "$TLS_USER"
  msg "postgres up in $(since "$t0")s"
}

# add_pw_role: the SCRAM role, its pg_hba line first (first match wins, and
# initdb's own trust lines come before ours), then a reload. Idempotent. The
# SQL goes on stdin, so the password is on no command line.
add_pw_role() {
  local hba
  hba=$(pg_data)/pg_hba.conf
  psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres eventor >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PW_USER') THEN CREATE ROLE $PW_USER LOGIN; END IF;
END \$\$;
SET password_encryption = 'scram-sha-256';
ALTER ROLE $PW_USER LOGIN PASSWORD '$PW_PASS';
GRANT ALL ON DATABASE eventor TO $PW_USER;
SQL
  if ! grep -q "^host all $PW_USER " "$hba"; then
    sed -i "1i host all $PW_USER 0.0.0.0/0 scram-sha-256" "$hba"
  fi
  psql_q 127.0.0.1 postgres 'select pg_reload_conf()' >/dev/null
  wait_for 10 "$PW_USER refused without its password" pw_role_guarded
  PGPASSWORD=$PW_PASS psql_as_pw 'select 1' >/dev/null || die "$PW_USER cannot log in with its password"
}

psql_as_pw() { psql -X -q -A -t -w -h 127.0.0.1 -p "$PG_PORT" -U "$PW_USER" eventor -c "$1"; }
pw_role_guarded() { ! PGPASSWORD=wrong psql_as_pw 'select 1'; }

# pg_role: add_pw_role on a running testbed, and its URLs in the env file.
pg_role() {
  [[ -f $(pg_data)/postmaster.pid ]] || die "postgres is not up"
  PG_PORT=$(pg_running_port)
  add_pw_role
  local f=$STATE/env
  sed -i '/^export EVENTOR_PG_URL_PW/d' "$f"
  write_env_pw "$(state_mode)" >>"$f"
  echo "postgres: role $PW_USER (scram-sha-256) ready; env: EVENTOR_PG_URL_PW, EVENTOR_PG_URL_PW_BRIDGE"
}

# write_env_pw MODE: the password role's URLs (the password raw, as users write it).
write_env_pw() {
  local host=127.0.0.1
  [[ $1 == netns ]] && host=$BRIDGE_ADDR
  env_line EVENTOR_PG_URL_PW "postgres://$PW_USER:$PW_PASS@127.0.0.1:$PG_PORT/eventor"
  env_line EVENTOR_PG_URL_PW_BRIDGE "postgres://$PW_USER:$PW_PASS@$host:$PG_PORT/eventor"
}

pg_tls_dir() { echo "$STATE/pg/tls"; }

# make_tls_files: a test CA, a server certificate it signs (names: localhost,
# 127.0.0.1 and the bridge address, all the tests connect to), and a second CA
# that signs nothing (the "wrong CA" of the refusal test). Idempotent.
make_tls_files() {
  local d
  d=$(pg_tls_dir)
  [[ -s $d/server.pem ]] && return 0
  mkdir -p "$d"
  tls_ca "$d/ca" "eventor testbed CA"
  tls_ca "$d/wrong-ca" "eventor testbed wrong CA"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$d/server.key" -subj "/CN=eventor testbed postgres" \
    -out "$d/server.csr" 2>/dev/null || die "openssl: server key"
  printf 'subjectAltName = DNS:localhost, IP:127.0.0.1, IP:%s\nextendedKeyUsage = serverAuth\n' "$BRIDGE_ADDR" >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 3650 \
    -sha256 -extfile "$d/server.ext" -out "$d/server.pem" 2>/dev/null || die "openssl: server certificate"
  chown postgres:postgres "$d/server.key" "$d/server.pem"
  chmod 600 "$d/server.key" "$d/ca.key" "$d/wrong-ca.key"
  chmod 644 "$d/ca.pem" "$d/wrong-ca.pem" "$d/server.pem"
  chmod 755 "$d"
}

# tls_ca BASE CN: a self-signed CA, BASE.key and BASE.pem.
tls_ca() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 -keyout "$1.key" -out "$1.pem" \
    -subj "/CN=$2" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    2>/dev/null || die "openssl: $2"
}

# configure_tls: TLS on with the server certificate (takes effect on a reload).
configure_tls() {
  local conf
  conf=$(pg_data)/postgresql.conf
  grep -q "^ssl = on" "$conf" && return 0
  printf "\n# eventor testbed TLS\nssl = on\nssl_cert_file = '%s'\nssl_key_file = '%s'\n" \
    "$(pg_tls_dir)/server.pem" "$(pg_tls_dir)/server.key" >>"$conf"
}

# add_tls_role: the role that may log in only over TLS (hostssl with its SCRAM
# password; hostnossl rejected), its lines first, then a reload. Idempotent.
add_tls_role() {
  local hba
  hba=$(pg_data)/pg_hba.conf
  psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres eventor >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$TLS_USER') THEN CREATE ROLE $TLS_USER LOGIN; END IF;
END \$\$;
SET password_encryption = 'scram-sha-256';
ALTER ROLE $TLS_USER LOGIN PASSWORD '$TLS_PASS';
GRANT ALL ON DATABASE eventor TO $TLS_USER;
SQL
  if ! grep -q "^hostssl all $TLS_USER " "$hba"; then
    sed -i "1i hostssl all $TLS_USER 0.0.0.0/0 scram-sha-256" "$hba"
    sed -i "1i hostnossl all $TLS_USER 0.0.0.0/0 reject" "$hba"
  fi
  psql_q 127.0.0.1 postgres 'select pg_reload_conf()' >/dev/null
  wait_for 10 "$TLS_USER refused without TLS" tls_role_guarded
  PGPASSWORD=$TLS_PASS psql_as_tls require 'select 1' >/dev/null || die "$TLS_USER cannot log in over TLS"
}

psql_as_tls() { PGSSLMODE=$1 psql -X -q -A -t -w -h 127.0.0.1 -p "$PG_PORT" -U "$TLS_USER" eventor -c "$2"; }
tls_role_guarded() { ! PGPASSWORD=$TLS_PASS psql_as_tls disable 'select 1' 2>/dev/null; }

# pg_tls: TLS and its role on a running testbed (a reload, not a restart), and
# their env lines.
pg_tls() {
  [[ -f $(pg_data)/postmaster.pid ]] || die "postgres is not up"
  PG_PORT=$(pg_running_port)
  make_tls_files
  configure_tls
  add_tls_role
  local f=$STATE/env
  sed -i '/^export EVENTOR_PG_URL_TLS/d;/^export EVENTOR_PG_TLS_/d' "$f"
  write_env_tls "$(state_mode)" >>"$f"
  echo "postgres: TLS on, role $TLS_USER (TLS only, scram-sha-256) ready; env: EVENTOR_PG_URL_TLS, EVENTOR_PG_URL_TLS_BRIDGE, EVENTOR_PG_TLS_CA, EVENTOR_PG_TLS_WRONG_CA"
}

# write_env_tls MODE: the TLS role's URLs (no sslmode: the tests add theirs) and
# the CA files.
write_env_tls() {
  local host=127.0.0.1
  [[ $1 == netns ]] && host=$BRIDGE_ADDR
  env_line EVENTOR_PG_URL_TLS "postgres://$TLS_USER:$TLS_PASS@127.0.0.1:$PG_PORT/eventor"
  env_line EVENTOR_PG_URL_TLS_BRIDGE "postgres://$TLS_USER:$TLS_PASS@$host:$PG_PORT/eventor"
  env_line EVENTOR_PG_TLS_CA "$(pg_tls_dir)/ca.pem"
  env_line EVENTOR_PG_TLS_WRONG_CA "$(pg_tls_dir)/wrong-ca.pem"
}

stop_pg() {
  local data pid
  data=$(pg_data)
  [[ -f $data/postmaster.pid ]] || return 0
  pid=$(head -n1 "$data/postmaster.pid")
  as_postgres "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
  if pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
}

pg_running_port() { sed -n 4p "$(pg_data)/postmaster.pid" 2>/dev/null || echo "$PG_PORT"; }

pg_restart() {
  [[ -f $(pg_data)/postmaster.pid ]] || die "postgres is not up (no $(pg_data)/postmaster.pid)"
  PG_PORT=$(pg_running_port)
  as_postgres "$PG_BIN/pg_ctl" -D "$(pg_data)" -l "$(pg_log)" -m fast -w -t 60 restart >/dev/null ||
    { tail -n20 "$(pg_log)" >&2; die "pg_ctl restart failed"; }
  wait_for 30 "postgres accepting after restart" pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres
  echo "postgres: restarted, accepting on port $PG_PORT"
}

# ---------------------------------------------------------------- env file

env_line() { printf "export %s='%s'\n" "$1" "${2//\'/\'\\\'\'}"; }
# env_get NAME: a variable's value from the env file.
env_get() {
  # shellcheck disable=SC1091
  (set +u; . "$STATE/env" 2>/dev/null; eval "echo \"\${$1:-}\"")
}

# write_env N MODE PG(0|1) SSH(0|1)
write_env() {
  local k hosts="" f=$STATE/env pgurl="" pgbr=""
  if (($3)); then
    pgurl="postgres://postgres@127.0.0.1:$PG_PORT/eventor"
    pgbr=$pgurl
    [[ $2 == netns ]] && pgbr="postgres://postgres@$BRIDGE_ADDR:$PG_PORT/eventor"
  fi
  (($4)) && for ((k = 1; k <= $1; k++)); do hosts+="${hosts:+ }node$k"; done
  {
    echo "# eventor testbed environment (generated by scripts/testbed.sh); source it"
    env_line EVENTOR_TESTBED_DIR "$STATE"
    env_line EVENTOR_TESTBED_MODE "$2"
    env_line EVENTOR_PG_URL "$pgurl"
    env_line EVENTOR_PG_URL_BRIDGE "$pgbr"
    if (($3)); then write_env_pw "$2"; write_env_tls "$2"; fi
    env_line EVENTOR_PG_PORT "$PG_PORT"
    env_line EVENTOR_PG_SOCKET_DIR "$( (($3)) && echo "$STATE/pg/run")"
    env_line EVENTOR_BRIDGE_ADDR "$( (($4)) && [[ $2 == netns ]] && echo "$BRIDGE_ADDR")"
    env_line EVENTOR_SSH_CONFIG "$( (($4)) && echo "$STATE/ssh_config")"
    env_line EVENTOR_SSH_KEY "$( (($4)) && echo "$STATE/id_ed25519")"
    env_line EVENTOR_KNOWN_HOSTS "$( (($4)) && echo "$STATE/known_hosts")"
    env_line EVENTOR_TEST_HOSTS "$hosts"
    for k in $hosts; do write_env_host "${k#node}" "$2"; done
  } >"$f"
}

write_env_host() {
  env_line "EVENTOR_NODE$1_ADDR" "$(node_addr "$1" "$2")"
  env_line "EVENTOR_NODE$1_VETH" "$([[ $2 == netns ]] && echo "$VETH_PREFIX$1")"
  env_line "EVENTOR_NODE$1_NETNS" "$([[ $2 == netns ]] && echo "$NS_PREFIX$1")"
}

# ---------------------------------------------------------------- down

# stop_pid PID SIGNAL: signal it, wait up to 5 s, then SIGKILL.
stop_pid() {
  local i
  pid_alive "$1" || return 0
  kill "-$2" "$1" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do pid_alive "$1" || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}

stop_sshd_pidfile() {
  local pid
  pid=$(pid_of "$1") || return 0
  stop_pid "$pid" TERM
}

# stray_pids: sshd's and postmasters started with a path in the state dir
# (e.g. when the state dir was removed by hand while they ran).
stray_pids() {
  local f pid
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    tr '\0' ' ' 2>/dev/null <"$f" | grep -qE "^(sshd: )?$SSHD .*-f $STATE/|^$PG_BIN/postgres -D $STATE/" && echo "$pid"
  done
  return 0
}

kill_strays() {
  local pid
  for pid in $(stray_pids); do
    msg "stopping stray process $pid: $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")"
    stop_pid "$pid" INT
  done
}

our_namespaces() { ip netns list 2>/dev/null | awk -v p="^${NS_PREFIX}[0-9]+$" '$1 ~ p { print $1 }'; }

del_namespace() {
  local pid
  for pid in $(ip netns pids "$1" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  ip netns del "$1" 2>/dev/null || true
}

del_links() {
  local l
  for l in $(ip -o link show 2>/dev/null | awk -F': ' -v p="^${VETH_PREFIX}[0-9]+" '$2 ~ p { sub(/@.*/, "", $2); print $2 }'); do
    ip link del "$l" 2>/dev/null || true
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE" 2>/dev/null || true; fi
}

down() {
  local f ns
  for f in "$STATE"/nodes/*/sshd.pid; do
    if [[ -e $f ]]; then stop_sshd_pidfile "$f"; fi
  done
  for ns in $(our_namespaces); do del_namespace "$ns"; done
  del_links
  if [[ -x $PG_BIN/pg_ctl ]]; then stop_pg; fi
  kill_strays
  remove_state_dir
  echo "testbed: down"
}

# ---------------------------------------------------------------- status

status_hosts() {
  local d k addr pid veth="" st ok=0
  for d in "$STATE"/nodes/node*; do
    [[ -d $d ]] || continue
    k=${d##*/node}
    addr=$(node_addr "$k" "$(state_mode)")
    [[ $(state_mode) == netns ]] && veth=$VETH_PREFIX$k
    pid=$(pid_of "$d/sshd.pid" || true)
    st=down
    pid_alive "$pid" && tcp_open "$addr" 22 && st=up
    [[ $st == up ]] || ok=1
    printf 'ssh node%s: %s %s:22 sshd pid %s%s\n' "$k" "$st" "$addr" "${pid:-none}" \
      "${veth:+, veth $veth $(cat "/sys/class/net/$veth/operstate" 2>/dev/null || echo missing)}"
  done
  return "$ok"
}

status_pg() {
  local port
  [[ -d $(pg_data) ]] || return 0
  port=$(pg_running_port)
  if pg_isready -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; then
    echo "postgres: up on port $port ($(env_get EVENTOR_PG_URL))"
  else
    echo "postgres: down (data dir $(pg_data))"
    return 1
  fi
}

status() {
  local ok=0
  if [[ ! -f $STATE/mode ]]; then
    echo "testbed: down (no $STATE/mode)"
    [[ -n $(our_namespaces) ]] && echo "testbed: leftover namespaces: $(our_namespaces | tr '\n' ' ')"
    return 3
  fi
  echo "testbed: mode $(state_mode), state dir $STATE"
  [[ -f $STATE/env ]] || { echo "testbed: no env file: up did not finish"; ok=3; }
  status_hosts || ok=3
  status_pg || ok=3
  return "$ok"
}

# ---------------------------------------------------------------- up

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

up() {
  local n=2 pg=0 ssh=0 mode=auto t0
  t0=$(now)
  while (($#)); do
    case $1 in
      --hosts) n=${2:-}; shift ;;
      --hosts=*) n=${1#*=} ;;
      --pg) pg=1 ;;
      --ssh) ssh=1 ;;
      --loopback) mode=loopback ;;
      -h | --help) usage; exit 0 ;;
      *) die "unknown option for up: $1" ;;
    esac
    shift
  done
  [[ $n =~ ^[0-9]+$ ]] || die "--hosts wants a number, got '$n'"
  ((10#$n >= 1 && 10#$n <= MAX_HOSTS)) || die "--hosts wants 1..$MAX_HOSTS, got '$n'"
  ((pg || ssh)) || { pg=1; ssh=1; }
  trap 'up_failed $?' EXIT
  bring_up "$((10#$n))" "$pg" "$ssh" "$mode"
  echo "testbed: up in $(since "$t0")s: $( ((ssh)) && echo "$n hosts ($(state_mode) mode)")$( ((ssh && pg)) && echo " + ")$( ((pg)) && echo postgres); env: . $STATE/env"
}

up_failed() {
  (($1 == 0)) && return 0
  msg "up failed; what came up is left for inspection in $STATE; clean up with: $0 down"
}

# bring_up N PG SSH MODE
bring_up() {
  local mode=$4
  state_is_ours || die "$STATE exists and is not a testbed state dir; set EVENTOR_TESTBED_DIR"
  (($2)) && need_pg_binaries
  (($3)) && need_sshd
  [[ -e $STATE/env ]] && msg "tearing down the previous testbed first"
  down >/dev/null
  mode=$(pick_mode "$mode" "$3")
  make_state_dir
  echo "$mode" >"$STATE/mode"
  (($3)) && up_hosts "$1" "$mode"
  (($2)) && up_pg "$mode"
  write_env "$1" "$mode" "$2" "$3"
}

# pick_mode WANTED SSH: netns unless refused (or --loopback, or no hosts).
pick_mode() {
  if [[ $1 == loopback ]]; then msg "loopback mode (asked for)"; echo loopback; return; fi
  if ! (($2)); then echo loopback; return; fi
  if netns_usable; then echo netns; return; fi
  msg "network namespaces refused here (ip netns add failed): falling back to sshd's on 127.0.0.x"
  echo loopback
}

main() {
  [[ $(id -u) == 0 ]] || die "must run as root (namespaces, sshd, su postgres)"
  case ${1:-} in
    up) shift; up "$@" ;;
    down) down ;;
    status) status ;;
    pg-restart) pg_restart ;;
    pg-role) pg_role ;;
    pg-tls) pg_tls ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

# Sourced, only the functions (a throwaway Postgres of one's own uses them).
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
