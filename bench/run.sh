#!/usr/bin/env bash
# One command to set up and run the benchmark (see bench/README.md).
#   bash bench/run.sh                 every scenario, 3 interleaved repetitions (~30 min)
#   bash bench/run.sh fanout latency  chosen scenarios
#   bash bench/run.sh --smoke         a seconds-long check that the harness works (CI)
# Setup: bench/.venv (pip, bench/requirements.txt) and the Node peers' packages (npm ci).
# A failed npm install only skips the Socket.IO peer. Redis must listen at
# BENCH_REDIS_HOST (default 127.0.0.1:6379).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=bench/.venv
if ! "$venv/bin/python" -c "import picows, uvloop, redis, jwt, tornado, msgpack" 2>/dev/null; then
    "${BENCH_PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements.txt
fi

for dir in bench/peers/socketio bench/gen_node; do
    if ! command -v npm >/dev/null; then
        echo "bench: npm not found; the Socket.IO peer and the Node generator are skipped" >&2
        break
    fi
    if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
        (cd "$dir" && timeout 300 npm ci --no-audit --no-fund --loglevel=error) \
            || echo "bench: npm ci in $dir failed; what needs it is reported as skipped" >&2
    fi
done

smoke=0
for arg in "$@"; do [ "$arg" = "--smoke" ] && smoke=1; done
limit=$([ "$smoke" = 1 ] && echo 600 || echo 7200)
exec timeout --signal=TERM --kill-after=30 "${BENCH_TIMEOUT_S:-$limit}" "$venv/bin/python" -m bench "$@"
