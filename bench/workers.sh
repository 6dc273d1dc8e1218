#!/usr/bin/env bash
# What a second worker gives (issue 14): the fanout and sweep scenarios against tornado_gw as
# one process and as `--workers 2` (peer tornado_gw_2w: two processes on one port, SO_REUSEPORT),
# interleaved like every benchmark run. Compare delivered/s at saturation (sweep), and CPU per
# delivered message and latency at the fixed fanout load. The load generator shares the box.
#   bash bench/workers.sh            the full run (3 repetitions)
#   bash bench/workers.sh --smoke    seconds-long sizes, to check that it runs (CI)
exec bash "$(dirname "$0")/run.sh" fanout sweep --peers tornado_gw,tornado_gw_2w "$@"
