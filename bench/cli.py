"""``python -m bench [SCENARIO ...] [options]``: run, repeat interleaved, print, save.

Repetitions interleave the peers (A, B, C, A, B, C, ...) so a slow minute of the box
hits every peer alike; each figure is the median over the repetitions. The Markdown
report is printed and written to bench/results/<timestamp>.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import NoReturn

import redis

from bench import outbox, scenarios, tables
from bench.peers import PEERS, REPO, Peer
from bench.redis_server import bench_redis
from bench.report import Metrics, Outcome

RUNNERS: dict[str, Callable[[Peer, scenarios.Context], Metrics]] = {
    "fanout": scenarios.fanout, "latency": scenarios.latency, "latency_joining": scenarios.latency_joining,
    "sweep": scenarios.sweep, "idle": scenarios.idle,
    "resume": outbox.resume, "relay": outbox.relay,
}
ALL = ["fanout", "latency", "latency_joining", "sweep", "idle", "resume", "relay"]
RESULTS = REPO / "bench" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"any of {', '.join(ALL)}, gencost, all (default: all)")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds-long run: tiny sizes, one repetition, every available peer")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default 3)")
    parser.add_argument("--peers", default="tornado_gw,naive,socketio", help="comma-separated peer names")
    parser.add_argument("--duration", type=float, help="seconds of publishing per run or sweep step")
    parser.add_argument("--generator", choices=["python", "node"], default="python",
                        help="load generator: picows+uvloop (default) or Node ws")
    args = parser.parse_args(argv)
    chosen = args.scenarios or ["all"]
    args.scenarios = ALL if "all" in chosen else chosen
    unknown = (set(args.scenarios) - set(ALL) - {"gencost"}) | (set(args.peers.split(",")) - set(PEERS))
    if unknown:
        parser.error(f"unknown scenario or peer: {', '.join(sorted(unknown))}")
    if args.smoke:
        args.reps = 1
    return args


def raise_fd_limit() -> None:
    """19k connections need ~19k descriptors in the server and across the generator."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (max(hard, 65536), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return
        except (ValueError, OSError):
            continue


def run_one(run: Callable[[Peer, scenarios.Context], Metrics], peer: Peer, ctx: scenarios.Context) -> Outcome:
    """One repetition; a peer that cannot run here is skipped, one that misbehaves failed."""
    reason = peer.unavailable()
    if reason:
        return Outcome("skipped", reason=reason)
    started = time.monotonic()
    try:
        outcome = Outcome("ok", run(peer, ctx))
    except outbox.Skipped as exc:
        outcome = Outcome("skipped", reason=str(exc))
    except (scenarios.RunFailed, RuntimeError, TimeoutError, OSError, redis.RedisError) as exc:
        outcome = Outcome("failed", reason=f"{type(exc).__name__}: {exc}")
    print(f"  {peer.name:<10} {outcome.status:<7} {time.monotonic() - started:5.1f} s "
          f"{tables.one_line(outcome)}", file=sys.stderr, flush=True)
    return outcome


def run_scenario(name: str, peers: list[Peer], ctx: scenarios.Context,
                 reps: int) -> dict[str, list[Outcome]]:
    """``reps`` interleaved repetitions of one scenario over ``peers``."""
    outcomes: dict[str, list[Outcome]] = {peer.name: [] for peer in peers}
    for rep in range(reps):
        print(f"{name}: repetition {rep + 1}/{reps}", file=sys.stderr, flush=True)
        for peer in peers:
            outcomes[peer.name].append(run_one(RUNNERS[name], peer, ctx))
    return outcomes


def run_gencost(peers: list[Peer], ctx: scenarios.Context, reps: int) -> dict[str, list[Outcome]]:
    """The fanout load received by each generator in turn, against the first available peer."""
    peer = next((p for p in peers if p.unavailable() is None), peers[0])
    outcomes: dict[str, list[Outcome]] = {"python": [], "node": []}
    for rep in range(reps):
        print(f"gencost ({peer.name}): repetition {rep + 1}/{reps}", file=sys.stderr, flush=True)
        for generator in outcomes:
            ctx.generator = generator
            outcomes[generator].append(run_one(RUNNERS["fanout"], peer, ctx))
    return outcomes


def header(args: argparse.Namespace, argv: list[str], redis_host: str) -> str:
    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=REPO).stdout.strip()
        except OSError:
            return "n/a"

    return (f"# tornado_gw benchmark, {time.strftime('%Y-%m-%d %H:%M:%S')}\n\n"
            f"Command: `python -m bench {' '.join(argv)}`  \n"
            f"Machine: {os.cpu_count()} cores, {platform.platform()}; Python {platform.python_version()}, "
            f"Node {version(['node', '--version']) or 'n/a'}; "
            f"commit {version(['git', 'rev-parse', '--short', 'HEAD'])}"
            f"; load average at start {os.getloadavg()[0]:.1f}; Redis {redis_host}"
            f"  \nGenerator: {args.generator}; {args.reps} interleaved repetition(s), medians shown"
            f"{'; SMOKE sizes (figures mean nothing)' if args.smoke else ''}.\n")


def _on_sigterm(signum: int, frame: object) -> NoReturn:
    raise SystemExit(f"bench: stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    raise_fd_limit()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = RESULTS / "logs" / stamp
    logdir.mkdir(parents=True)
    with bench_redis(logdir) as (redis_host, client):
        ctx = scenarios.Context(args.generator, logdir, redis_host, client, args.smoke, args.duration)
        text, failed = run_all(args, ctx, header(args, argv, redis_host))
    print(text)
    path = RESULTS / f"{stamp}.md"
    path.write_text(text)
    print(f"\nbench: report written to {path.relative_to(REPO)}; logs in {logdir.relative_to(REPO)}",
          file=sys.stderr)
    return 1 if failed and args.smoke else 0


def run_all(args: argparse.Namespace, ctx: scenarios.Context, head: str) -> tuple[str, bool]:
    """Every chosen scenario in turn; returns the report and whether any run failed."""
    peers = [PEERS[name] for name in args.peers.split(",")]
    sections, failed = [head], False
    for name in args.scenarios:
        outcomes = (run_gencost(peers, ctx, args.reps) if name == "gencost"
                    else run_scenario(name, peers, ctx, args.reps))
        failed |= any(o.status == "failed" for runs in outcomes.values() for o in runs)
        sections.append(tables.section(name, outcomes, args.smoke))
    return "\n".join(sections), failed
