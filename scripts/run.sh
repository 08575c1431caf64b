#!/usr/bin/env bash
# Starts the whole system on the embedded defaults: configd (SQLite under var/), fetcher,
# router and sender, each with its config/*.example.toml, logs under var/log/.
# Ctrl-C (or SIGTERM) stops every daemon gracefully and waits for them.
# Expects `make build` to have run (make run does both).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/debug}
mkdir -p var/log

# configd refuses to start without an encryption key: make one for this checkout, once.
if [ ! -s var/configd.key ]; then
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > var/configd.key)
  echo "run: created var/configd.key (the at-rest key for mailbox secrets; keep it)"
fi

pids=()
stop() { # [exit code]
  trap - INT TERM
  echo; echo "run: stopping ${#pids[@]} daemons..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "run: all stopped."
  exit "${1:-0}"
}
trap stop INT TERM

start() { # name
  local name=$1
  # Own session: Ctrl-C reaches only this script, which then stops each daemon with one
  # SIGTERM (a second signal would make a daemon exit without draining).
  setsid "$BIN/deskmail-$name" --config "config/$name.example.toml" >"var/log/$name.log" 2>&1 &
  pids+=($!)
  echo "run: deskmail-$name started (pid $!, log var/log/$name.log)"
}

for d in configd fetcher router sender; do
  "$BIN/deskmail-$d" --config "config/$d.example.toml" --check-config >/dev/null
done
start configd
for _ in $(seq 50); do "$BIN/deskmailctl" health >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN/deskmailctl" health
start fetcher
start router
start sender

cat <<MSG

deskmail is running:
  configd (gRPC)   http://127.0.0.1:50051   try: $BIN/deskmailctl -c config/deskmailctl.example.toml status
  RabbitMQ         amqp://127.0.0.1:5672    (prefix "deskmail")
  logs             var/log/*.log
Press Ctrl-C to stop everything.
MSG
# Any daemon that exits on its own stops the rest, so a broken system is not left half-up.
wait -n "${pids[@]}" || true
echo "run: a daemon exited; see var/log/. Stopping the others."
stop 1
