#!/usr/bin/env bash
# Where tornado_gw's CPU goes under the fanout load (25,000 deliveries/s): runs the
# fanout scenario for tornado_gw alone, attaches `perf record` to the gateway while it
# is measured, and prints the split between the kernel (socket sends, epoll) and the
# interpreter, then the hottest symbols of each.
#
#   bash bench/profile_cpu.sh            # needs perf (Debian: linux-perf) and root or perf_event_paranoid <= 1
#
# With BENCH_GW_PYTHON pointing at a Python >= 3.12, Python functions show up by name
# (PYTHONPERFSUPPORT=1 is set for the gateway).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "profile_cpu: perf is not installed" >&2; exit 2; }
out=$(mktemp -d)
PYTHONPERFSUPPORT=1 bash bench/run.sh fanout --peers tornado_gw --reps 1 --duration 20 >"$out/bench.log" 2>&1 &
bench=$!
pid=""
for _ in $(seq 1 120); do
    pid=$(pgrep -f "tornado_gw --port" | head -1 || true)
    [ -n "$pid" ] && break
    sleep 0.5
done
[ -n "$pid" ] || { echo "profile_cpu: the gateway did not start; see $out/bench.log" >&2; exit 1; }
# Connecting, warming up and the first seconds of the measured phase come first.
sleep 16
perf record -F 2000 -g -p "$pid" -o "$out/perf.data" -- sleep 5 >/dev/null 2>&1
wait "$bench"
grep -E "tornado_gw +ok" "$out/bench.log" || { echo "profile_cpu: the run failed; see $out/bench.log" >&2; exit 1; }
echo "== CPU by binary (kernel = socket sends, epoll, TCP; libpython = the interpreter)"
perf report -i "$out/perf.data" --no-children --sort dso -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -6
echo "== hottest symbols"
perf report -i "$out/perf.data" --no-children --sort sym -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25
echo "(perf data and logs: $out)"
