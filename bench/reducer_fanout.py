"""The reducer's CPU per broker message, against an earlier commit (issue 10: no cost on the hot path).

The fanout scenario's server CPU per delivery moves by 20 % between runs on a busy
2-core box, which hides a change in the reducer. This times the reducer alone, in
process: 1,000 authenticated connections, each in 5 of 100 conversations (the fanout
scenario's shape), then ``--events`` broker messages through ``reducer.handle``. It
runs the same measurement on this tree and on ``--against`` (a temporary git worktree),
interleaved, and prints the median of each and their ratio.

Usage, from the repository root::

    .venv/bin/python -m bench.reducer_fanout --against b8d5489
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.peers import REPO

CONNECTIONS = 1_000
CONVERSATIONS = 100
PER_CONNECTION = 5


def measure(events: int) -> float:
    """Microseconds of process CPU per broker message through ``handle`` in this process."""
    from tornado_gw.core import commands as c
    from tornado_gw.core.reducer import handle
    from tornado_gw.core.state import Gateway, Limits

    state = Gateway(Limits(max_subscriptions=CONVERSATIONS))
    for n in range(CONNECTIONS):
        handle(state, c.Connect(f"k{n}", 1.0))
        handle(state, c.Authenticate(f"k{n}", f"u{n}", None, None, None, f"s{n}", 1.0))
    for n in range(CONNECTIONS):
        conversations = tuple(f"c{(n * PER_CONNECTION + k) % CONVERSATIONS}" for k in range(PER_CONNECTION))
        handle(state, c.Subscribe(f"k{n}", conversations, None, 1.0))
    while any(conn.op is not None for conn in state.connections.values()):  # each subscribe waits for auth
        for channel in list(state.subscribers):
            handle(state, c.ChannelReady(channel, 1.0))
    messages = []
    for seq in range(1, events + 1):
        cid = f"c{seq % CONVERSATIONS}"
        frame = {"type": "message.new", "payload": {"conversation_id": cid}, "seq": seq}
        messages.append(c.BrokerMessage(f"conv:{cid}", json.dumps(frame).encode(), frame, 2.0))
    delivered = 0
    started = time.process_time()
    for message in messages:
        outcome = handle(state, message)
        # handle returned the effects alone before issue 10, (events, effects) since
        for effect in outcome.effects if hasattr(outcome, "effects") else outcome:
            delivered += len(getattr(effect, "conn_ids", ()))
    spent = time.process_time() - started
    expected = events * CONNECTIONS * PER_CONNECTION // CONVERSATIONS
    assert delivered == expected, f"{delivered:,} deliveries, {expected:,} expected: the setup is wrong"
    return spent / events * 1e6


def _run_in(tree: Path, events: int) -> float:
    code = f"import sys; sys.path.insert(0, {str(tree)!r}); from bench.reducer_fanout import measure; " \
           f"print(measure({events}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the measurement failed in {tree}:\n{done.stderr}")
    return float(done.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reducer_fanout",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--against", required=True, help="the baseline commit")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="reducer-fanout-") as tmp:
        baseline = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(baseline), args.against],
                       cwd=REPO, check=True)
        # the baseline may predate this file: it runs this tree's measure() against its own core
        (baseline / "bench" / "reducer_fanout.py").write_text(Path(__file__).read_text())
        try:
            runs: dict[str, list[float]] = {"this tree": [], args.against: []}
            for _ in range(args.reps):
                runs["this tree"].append(_run_in(REPO, args.events))
                runs[args.against].append(_run_in(baseline, args.events))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=REPO, check=True)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    print(f"reducer CPU per broker message ({CONNECTIONS:,} connections, {PER_CONNECTION} of {CONVERSATIONS} "
          f"conversations each, {args.events:,} messages, median of {args.reps}):")
    for name, values in runs.items():
        print(f"  {name:>12}: {medians[name]:.2f} µs (runs: {', '.join(f'{v:.2f}' for v in values)})")
    print(f"  ratio this tree / {args.against}: {medians['this tree'] / medians[args.against]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
