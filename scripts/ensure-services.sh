#!/usr/bin/env bash
# ensure-services.sh — idempotently make the services deskmail's tests need available
# (adapted from shared/recipes/ensure-services.example.sh; adds the mail-stack packages:
#  Dovecot, Postfix, swaks, for the test kit's private instances, which it starts itself;
#  isync (mbsync) and fetchmail, the peers the fetcher benchmark measures against)
# on Debian 12 (no systemd required; run as root when anything has to be installed/started):
#   RabbitMQ    amqp://guest:guest@127.0.0.1:5672/%2f  (+ management HTTP API http://guest:guest@127.0.0.1:15672/api)
#   PostgreSQL  postgres://root@127.0.0.1:5432/root   (role root, SUPERUSER, trust auth on 127.0.0.1 and ::1)
# Fast path (everything already up): TCP probes of 5672/15672 + one psql connect, ~0.06 s.
set -euo pipefail

RABBIT_START_TIMEOUT=${RABBIT_START_TIMEOUT:-120}   # seconds for rabbitmqctl await_startup
RABBIT_MANAGEMENT=${RABBIT_MANAGEMENT:-1}          # 1: also provide the HTTP API on 127.0.0.1:15672 (per-test vhosts)
PG_ROLE=${PG_ROLE:-root}
PG_DATABASES=${PG_DATABASES:-"root test"}
PG_URL="postgres://${PG_ROLE}@127.0.0.1:5432/postgres"

export DEBIAN_FRONTEND=noninteractive
ms()   { date +%s%3N; }
log()  { printf 'ensure-services: %s\n' "$*" >&2; }
die()  { printf 'ensure-services: ERROR: %s\n' "$*" >&2; exit 1; }
T_ALL=$(ms)
step() { STEP=$1; T_STEP=$(ms); }
ok()   { log "$STEP: ${1:-ok} ($(( $(ms) - T_STEP )) ms)"; }
need_root() { [ "$(id -u)" = 0 ] || die "$STEP: needs root ($*)"; }
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
pg_ok() { PGCONNECT_TIMEOUT=3 psql "$PG_URL" -XAtqc 'select 1' >/dev/null 2>&1; }
as_postgres() { (cd / && runuser -u postgres -- "$@"); }
rabbit_diag() {
  local f="/var/log/rabbitmq/rabbit@$(hostname -s).log"
  grep -E '\[(warning|error|critical)\]' "$f" 2>/dev/null | tail -n 15 >&2 || true
  log "see $f and /var/log/rabbitmq/startup_err"
}

# Serialise concurrent invocations (parallel CI jobs / test binaries): a second
# `pg_ctlcluster start` on a running cluster fails with "Cluster is already running".
# Every command that can spawn a daemon gets `9>&-`, else the daemon inherits fd 9 and
# holds the lock forever (the next run then blocks in flock).
exec 9>"${TMPDIR:-/tmp}/deskmail-ensure-services.lock"
flock -w 600 9 || die "timed out waiting for ${TMPDIR:-/tmp}/deskmail-ensure-services.lock"

# ---------------------------------------------------------------- packages
step "packages"
missing=()
dpkg-query -W -f='${Status}' rabbitmq-server 2>/dev/null | grep -q 'ok installed' || missing+=(rabbitmq-server)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
# Mail stack for the test kit (private Dovecot/Postfix per test run, never the system ones).
for pkg in dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix swaks libnet-ssleay-perl openssl curl isync fetchmail; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
policy_guard=0
if ((${#missing[@]})); then
  # Postfix asks debconf; "No configuration" leaves /etc/postfix alone. policy-rc.d keeps apt
  # from starting the system-wide daemons (the test kit runs its own instances).
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
  if [ ! -e /usr/sbin/policy-rc.d ] && [ "$(id -u)" = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; policy_guard=1
  fi
  need_root "apt-get install ${missing[*]}"
  apt_opts=(-y -q --no-install-recommends --no-upgrade -o DPkg::Lock::Timeout=600)
  # Try with the existing package lists first; `apt-get update` only when there are none
  # or the install fails (missing/stale lists: "Unable to locate package", 404s).
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null \
     || ! apt-get install "${apt_opts[@]}" "${missing[@]}" >&2 9>&-; then
    log "packages: running apt-get update"
    apt-get update -q -o DPkg::Lock::Timeout=600 >&2 || die "apt-get update failed"
    apt-get install "${apt_opts[@]}" "${missing[@]}" >&2 9>&- || die "apt-get install ${missing[*]} failed"
  fi
  ((policy_guard)) && rm -f /usr/sbin/policy-rc.d
  ok "installed ${missing[*]}"
else
  ok "already installed"
fi

# ---------------------------------------------------------------- RabbitMQ (launch)
# Launched before PostgreSQL is handled so the two start-ups (~5 s and ~2.3 s) overlap.
step "rabbitmq"
rabbit_wait=0
mgmt_enabled() { grep -qs 'rabbitmq_management\b' /etc/rabbitmq/enabled_plugins; }
if port_open 5672; then
  ok "already listening on 5672"
  if [ "$RABBIT_MANAGEMENT" = 1 ] && ! port_open 15672; then
    step "rabbitmq management"; need_root "rabbitmq-plugins enable"
    rabbitmq-plugins -q enable rabbitmq_management >/dev/null 9>&- || die "rabbitmq-plugins enable rabbitmq_management failed"
    for _ in $(seq 50); do port_open 15672 && break; sleep 0.2; done
    port_open 15672 || die "management plugin enabled but nothing listens on 127.0.0.1:15672"
    ok "enabled online"
  fi
else
  need_root "start rabbitmq-server"
  host=$(hostname -s)
  getent hosts "$host" >/dev/null \
    || die "hostname '$host' does not resolve; add '127.0.0.1 $host' to /etc/hosts (RabbitMQ node is rabbit@$host)"
  if [ "$RABBIT_MANAGEMENT" = 1 ] && ! mgmt_enabled; then
    rabbitmq-plugins -q enable --offline rabbitmq_management >/dev/null || die "rabbitmq-plugins enable --offline failed"
  fi
  T_RABBIT=$(ms); log "rabbitmq: launching"
  if epmd -names 2>/dev/null | grep -q '^name rabbit at'; then
    # Erlang node is up but the app is stopped (e.g. after `rabbitmqctl stop_app`) or still booting
    rabbitmqctl -q start_app >&2 9>&- || true
  else
    rabbitmq-server -detached >/dev/null 2>&1 9>&- || die "rabbitmq-server -detached failed"
  fi
  rabbit_wait=1
fi

# ---------------------------------------------------------------- PostgreSQL
step "postgresql"
if pg_ok; then
  ok "already accepting $PG_URL"
else
  need_root "start cluster / configure auth"
  ver=$(pg_lsclusters -h 2>/dev/null | awk '$2=="main"{print $1}' | sort -V | tail -n1)
  if [ -z "$ver" ]; then
    ver=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    log "postgresql: no cluster found, creating $ver/main"
    pg_createcluster "$ver" main >&2 || die "pg_createcluster $ver main failed"
  fi
  read -r _ _ port status _ < <(pg_lsclusters -h "$ver" main)
  [ "$port" = 5432 ] || die "cluster $ver/main is configured for port $port, expected 5432"
  hba=/etc/postgresql/$ver/main/pg_hba.conf
  changed_hba=0
  if ! grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    # pg_hba.conf is first-match: prepend trust lines for loopback TCP (test machines only!)
    sed -i '1i host all all 127.0.0.1/32 trust  # deskmail tests\nhost all all ::1/128 trust  # deskmail tests' "$hba"
    changed_hba=1
    log "postgresql: prepended loopback trust rules to $hba"
  fi
  if [[ $status != online* ]]; then
    pg_ctlcluster "$ver" main start >&2 9>&- \
      || { tail -n 20 "/var/log/postgresql/postgresql-$ver-main.log" >&2 || true; die "pg_ctlcluster $ver main start failed"; }
  elif ((changed_hba)); then
    pg_ctlcluster "$ver" main reload >&2
  fi
  as_postgres psql -XAtq -v ON_ERROR_STOP=1 >/dev/null <<SQL || die "could not create role/databases as postgres"
SELECT format('CREATE ROLE %I LOGIN SUPERUSER', '$PG_ROLE')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') \gexec
$(for db in $PG_DATABASES; do
    echo "SELECT format('CREATE DATABASE %I OWNER %I', '$db', '$PG_ROLE') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db') \\gexec"
  done)
SQL
  pg_ok || die "PostgreSQL $ver/main is up but $PG_URL does not connect (check $hba)"
  ok "started/configured $ver/main"
fi

# ---------------------------------------------------------------- RabbitMQ (wait)
if ((rabbit_wait)); then
  step "rabbitmq"; T_STEP=$T_RABBIT
  # `rabbitmq-server -detached` returns at once; `rabbitmqctl await_startup` fails right away
  # ("node 'rabbit' not running at all") until the node has registered with epmd (~0.8 s).
  deadline=$(( $(date +%s) + RABBIT_START_TIMEOUT ))
  until epmd -names 2>/dev/null | grep -q '^name rabbit at'; do
    (( $(date +%s) < deadline )) \
      || { rabbit_diag; die "RabbitMQ node did not come up within ${RABBIT_START_TIMEOUT}s"; }
    sleep 0.2
  done
  rabbitmqctl -q --timeout "$RABBIT_START_TIMEOUT" await_startup >&2 9>&- \
    || { rabbit_diag; die "RabbitMQ did not start within ${RABBIT_START_TIMEOUT}s"; }
  port_open 5672 || die "RabbitMQ reports started but nothing listens on 127.0.0.1:5672"
  if [ "$RABBIT_MANAGEMENT" = 1 ]; then port_open 15672 || die "RabbitMQ started but the management API does not listen on 127.0.0.1:15672"; fi
  ok "started"
fi

# ---------------------------------------------------------------- Python test clients
# Real clients in another language for the tests: a gRPC client generated from proto/ by
# grpcio-tools, and pika as an integrator's AMQP client.
step "python clients"
PY_PKGS=(grpcio grpcio-tools grpcio-reflection grpcio-health-checking pika)
if python3 -c 'import grpc, grpc_tools, grpc_reflection, grpc_health, pika' 2>/dev/null; then
  ok "already installed"
else
  command -v python3 >/dev/null || die "python3 is missing (apt-get install python3 python3-pip)"
  python3 -m pip --version >/dev/null 2>&1 || { need_root "apt-get install python3-pip"; apt-get install -y -q --no-install-recommends --no-upgrade -o DPkg::Lock::Timeout=600 python3-pip >&2 9>&- || die "cannot install python3-pip"; }
  python3 -m pip install -q --disable-pip-version-check "${PY_PKGS[@]}" >&2 9>&- \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages "${PY_PKGS[@]}" >&2 9>&- \
    || die "pip install ${PY_PKGS[*]} failed"
  python3 -c 'import grpc, grpc_tools, grpc_reflection, grpc_health, pika' || die "python clients installed but not importable"
  ok "installed ${PY_PKGS[*]}"
fi

log "all services up ($(( $(ms) - T_ALL )) ms total)"
