#!/usr/bin/env bash
# `make demo`: the whole round trip by itself. Uses the system `make run` started when it is
# up (same RUN_DIR / RUN_PORT_BASE); otherwise starts it (scripts/run.sh) in the background,
# runs scripts/demo.py against it, and stops it again.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export RUN_DIR=${RUN_DIR:-$ROOT}
mkdir -p "$RUN_DIR/var/log"
export BIN=${BIN:-$ROOT/target/debug}
endpoint=http://127.0.0.1:${RUN_PORT_BASE:-50051}
up() { DESKMAILCTL_ENDPOINT=$endpoint "$BIN/deskmailctl" -c "$ROOT/config/deskmailctl.example.toml" health >/dev/null 2>&1; }

run_pid=
if up && [ -s "$RUN_DIR/var/demo-mail.env" ]; then
  echo "demo: using the system already running (configd at $endpoint)"
else
  echo "demo: starting the system (scripts/run.sh; log $RUN_DIR/var/log/run.log)"
  "$ROOT/scripts/run.sh" >"$RUN_DIR/var/log/run.log" 2>&1 &
  run_pid=$!
  trap '[ -n "$run_pid" ] && kill -TERM "$run_pid" 2>/dev/null; wait "$run_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 300); do
    grep -q "Press Ctrl-C" "$RUN_DIR/var/log/run.log" && break
    kill -0 "$run_pid" 2>/dev/null || { cat "$RUN_DIR/var/log/run.log" >&2; exit 1; }
    sleep 0.1
  done
  grep -q "Press Ctrl-C" "$RUN_DIR/var/log/run.log" || { echo "demo: the system did not come up in 30 s" >&2; exit 1; }
fi
python3 "$ROOT/scripts/demo.py" --run-dir "$RUN_DIR"
