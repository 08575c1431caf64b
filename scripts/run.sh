#!/usr/bin/env bash
# Starts the whole system on the embedded defaults: a local demo mail server (the test kit's
# Dovecot + Postfix, with support@desk.test and customer@client.test), configd (SQLite),
# fetcher, router and sender, each with its config/*.example.toml; then configures, through
# configd, a "Support" queue with auto-reply, a "support" mailbox (IMAP in, SMTP out) on the
# demo server and the system address support@desk.test. Logs go under $RUN_DIR/var/log/.
# Ctrl-C (or SIGTERM) stops every daemon gracefully, then the demo mail server, and waits.
# Expects `make build` to have run (make run does both).
#
# Environment (all optional; the tests use them to run beside other work):
#   RUN_DIR        where var/ (databases, key, logs, demo-mail.env) lives (default: the repo)
#   RUN_PORT_BASE  configd's gRPC port; the daemons' metrics ports are base+1..base+4
#                  (default: configd 50051, metrics 9101-9104 as in config/*.example.toml)
#   RUN_AMQP_URL   the broker URL, e.g. with a vhost of its own (default: the example files')
#   RUN_PREFIX     the exchange/queue name prefix (default: deskmail)
#   DEMO_MAIL=0    do not start the demo mail server nor configure the support mailbox
#   BIN            where the binaries are (default: target/debug)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "$ROOT" && cd "${BIN:-target/debug}" && pwd)
RUN_DIR=$(mkdir -p "${RUN_DIR:-$ROOT}" && cd "${RUN_DIR:-$ROOT}" && pwd)
DEMO_MAIL=${DEMO_MAIL:-1}
cd "$RUN_DIR"
mkdir -p var/log

# Per-daemon overrides (each daemon refuses DESKMAIL_* keys it does not have, so each gets
# only its own).
configd_env=() fetcher_env=() router_env=() sender_env=()
CONFIGD_URL=http://127.0.0.1:50051
if [ -n "${RUN_PORT_BASE:-}" ]; then
  CONFIGD_URL=http://127.0.0.1:$RUN_PORT_BASE
  configd_env+=("DESKMAIL_LISTEN__PORT=$RUN_PORT_BASE" "DESKMAIL_METRICS__PORT=$((RUN_PORT_BASE + 4))")
  fetcher_env+=("DESKMAIL_METRICS__PORT=$((RUN_PORT_BASE + 1))")
  router_env+=("DESKMAIL_METRICS__PORT=$((RUN_PORT_BASE + 2))")
  sender_env+=("DESKMAIL_METRICS__PORT=$((RUN_PORT_BASE + 3))")
fi
for d in fetcher router sender; do
  # shellcheck disable=SC2178  # a nameref to the array
  declare -n envs="${d}_env"
  envs+=("DESKMAIL_CONFIG_SERVICE__URL=$CONFIGD_URL")
  [ -n "${RUN_AMQP_URL:-}" ] && envs+=("DESKMAIL_AMQP__URL=$RUN_AMQP_URL")
  [ -n "${RUN_PREFIX:-}" ] && envs+=("DESKMAIL_AMQP__PREFIX=$RUN_PREFIX")
  unset -n envs
done
export DESKMAILCTL_ENDPOINT=$CONFIGD_URL
ctl() { "$BIN/deskmailctl" -c "$ROOT/config/deskmailctl.example.toml" "$@"; }

# configd refuses to start without an encryption key: make one for this directory, once.
if [ ! -s var/configd.key ]; then
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > var/configd.key)
  echo "run: created $RUN_DIR/var/configd.key (the at-rest key for mailbox secrets; keep it)"
fi

pids=()
names=()
# shellcheck disable=SC2317  # called from the EXIT trap
stop() { # exit code
  trap - EXIT INT TERM
  [ ${#pids[@]} -gt 0 ] || exit "$1"
  echo; echo "run: stopping ${#pids[@]} processes..."
  # Daemons first (newest first), so the fetcher does not see its mail server vanish.
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  echo "run: all stopped."
  exit "$1"
}
# Whatever ends this script (Ctrl-C, SIGTERM, a failed step under set -e) stops what it started.
trap 'stop $?' EXIT
trap 'exit 0' INT TERM

start() { # name env...
  local name=$1; shift
  # Own session: Ctrl-C reaches only this script, which then stops each daemon with one
  # SIGTERM (a second signal would make a daemon exit without draining).
  env "$@" setsid "$BIN/deskmail-$name" --config "$ROOT/config/$name.example.toml" >"var/log/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
  echo "run: deskmail-$name started (pid $!, log $RUN_DIR/var/log/$name.log)"
}

for d in configd fetcher router sender; do
  # shellcheck disable=SC2178  # a nameref to the array
  declare -n envs="${d}_env"
  env "${envs[@]}" "$BIN/deskmail-$d" --config "$ROOT/config/$d.example.toml" --check-config >/dev/null
  unset -n envs
done

if [ "$DEMO_MAIL" = 1 ]; then
  rm -f var/demo-mail.env
  setsid "$BIN/deskmail-demo-mail" --env-file "$RUN_DIR/var/demo-mail.env" >var/log/demo-mail.log 2>&1 &
  pids+=($!)
  names+=(demo-mail)
  for _ in $(seq 100); do [ -s var/demo-mail.env ] && break; kill -0 "${pids[-1]}" 2>/dev/null || break; sleep 0.1; done
  if [ ! -s var/demo-mail.env ]; then
    echo "run: the demo mail server did not start; see $RUN_DIR/var/log/demo-mail.log:" >&2
    tail -20 var/log/demo-mail.log >&2 || true
    exit 1
  fi
  # shellcheck disable=SC1091
  . var/demo-mail.env
  echo "run: demo mail server started (pid ${pids[-1]}, Dovecot IMAPS 127.0.0.1:$DEMO_IMAPS_PORT, Postfix SMTP 127.0.0.1:$DEMO_SMTP_PORT)"
fi

start configd "${configd_env[@]}"
for _ in $(seq 100); do ctl health >/dev/null 2>&1 && break; sleep 0.1; done
ctl health || exit 1

if [ "$DEMO_MAIL" = 1 ]; then
  # Create the demo's queue, mailbox and address, or point them at this run's ports (the
  # demo server takes free ports each time). The demo server's CA is made afresh on each
  # start, so this one box explicitly opts out of certificate checks (test servers only).
  ctl queue get Support >/dev/null 2>&1 ||
    ctl queue create --name Support --auto-reply true \
      --auto-reply-subject 'We received your request: {{subject}}' \
      --auto-reply-body 'Hello {{customer_name}}, your request has ticket number {{ticket_number}}. Reply to this mail to add to it.' >/dev/null
  box=(--in-protocol imap --in-host 127.0.0.1 --in-port "$DEMO_IMAPS_PORT" --in-security tls
    --in-user "$DEMO_SUPPORT" --in-password-env DEMO_SUPPORT_PASSWORD --allow-invalid-certs=true
    --out-host 127.0.0.1 --out-port "$DEMO_SUBMISSION_PORT" --out-security starttls --out-auth password
    --out-user "$DEMO_SUPPORT" --out-password-env DEMO_SUPPORT_PASSWORD --out-allow-invalid-certs=true)
  export DEMO_SUPPORT_PASSWORD
  if ctl mailbox get support >/dev/null 2>&1; then
    ctl mailbox update support "${box[@]}" >/dev/null
  else
    ctl mailbox create --name support "${box[@]}" --delete --poll-interval 60 \
      --dispatch by-queue --queue Support --from "$DEMO_SUPPORT" --from-name 'Demo Support' >/dev/null
  fi
  ctl address get "$DEMO_SUPPORT" >/dev/null 2>&1 ||
    ctl address create --address "$DEMO_SUPPORT" --queue Support --display-name 'Demo Support' >/dev/null
  ctl settings update --default-outbound-mailbox support >/dev/null
  echo "run: configured queue Support, mailbox support and address $DEMO_SUPPORT in configd"
fi

start fetcher "${fetcher_env[@]}"
start router "${router_env[@]}"
start sender "${sender_env[@]}"

cat <<MSG

deskmail is running:
  configd (gRPC)   $CONFIGD_URL   try: $BIN/deskmailctl -c config/deskmailctl.example.toml status
  RabbitMQ         ${RUN_AMQP_URL:-amqp://127.0.0.1:5672/%2f} (prefix "${RUN_PREFIX:-deskmail}")
  logs             $RUN_DIR/var/log/*.log
  tickets          $RUN_DIR/var/router.db (SQLite: tickets, articles, attachments)
MSG
if [ "$DEMO_MAIL" = 1 ]; then
  cat <<MSG
  demo mail        Postfix 127.0.0.1:$DEMO_SMTP_PORT, Dovecot IMAPS 127.0.0.1:$DEMO_IMAPS_PORT
                   mailboxes $DEMO_SUPPORT and $DEMO_CUSTOMER (password $DEMO_CUSTOMER_PASSWORD)

Send a test mail to the support mailbox:
  swaks --server 127.0.0.1:$DEMO_SMTP_PORT --from $DEMO_CUSTOMER --to $DEMO_SUPPORT --header 'Subject: My printer is on fire'
or let \`make demo\` do the whole round trip (mail, ticket, auto-reply, reply, follow-up).
MSG
fi
echo "Press Ctrl-C to stop everything."
# Any process that exits on its own stops the rest, so a broken system is not left half-up.
wait -n "${pids[@]}" || true
echo "run: a process exited; see $RUN_DIR/var/log/. Stopping the others."
exit 1
