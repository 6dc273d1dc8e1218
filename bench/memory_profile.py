"""Where a tornado_gw connection's idle bytes go (issue 5: idle memory per connection).

Runs the real gateway (Redis deployment, the bench's lifted limits) in this process,
opens N connections from a separate ``bench.worker`` process (picows, from
``bench/.venv``), each authenticated and subscribed to 5 conversations of 5 members like
the ``idle`` scenario, waits until the gateway is quiet, and prints per connection:

* RSS growth (``/proc/self/statm``): the figure ``idle`` reports; with ``--trace``
  it also holds tracemalloc's own bookkeeping, so take it from a ``--no-trace`` run;
* with ``--trace`` (the default): traced bytes grouped by package and by the source line
  that allocated them, and the gc-tracked objects that appeared, by type.

Usage, from the repository root, with the project's interpreter::

    .venv/bin/python -m bench.memory_profile --connections 2000
    .venv/bin/python -m bench.memory_profile --connections 5000 --no-trace
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from pathlib import Path

import jwt

from bench.peers import GW_ENV, free_port
from bench.workload import JWT_SECRET
from tornado_gw.adapters.wiring import build_wiring
from tornado_gw.server import GatewayServer
from tornado_gw.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
WORKER = [str(REPO / "bench" / ".venv" / "bin" / "python"), "-m", "bench.worker"]
PAGE = os.sysconf("SC_PAGE_SIZE")
QUIET_S = 2.0
WARM = 20


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def package(filename: str) -> str:
    """``tornado/web.py`` -> ``tornado``; the interpreter's own files -> ``stdlib:<module>``."""
    parts = Path(filename).parts
    for marker in ("site-packages", "tornado_gw"):
        if marker in parts:
            index = parts.index(marker)
            if marker == "tornado_gw":
                return "/".join(parts[index:index + 2])
            return parts[index + 1]
    return "stdlib:" + Path(filename).stem


def short(filename: str) -> str:
    parts = Path(filename).parts
    for marker in ("site-packages", "main", "python3.11"):
        if marker in parts:
            return "/".join(parts[parts.index(marker) + 1:])
    return filename


def census() -> Counter[str]:
    """Bytes of every gc-tracked object by type (containers, handlers, protocol objects)."""
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        sizes[type(obj).__qualname__] += sys.getsizeof(obj)
    return sizes


async def open_connections(url: str, first: int, count: int, workdir: Path) -> subprocess.Popen[bytes]:
    """``count`` connections of users ``u<first>`` ..., each in 5 conversations of 5 members
    (``bench.workload.small_groups``), held by one ``bench.worker`` until it is killed."""
    exp = int(time.time()) + 3600
    clients = [[jwt.encode({"sub": f"u{n}", "exp": exp}, JWT_SECRET, "HS256"),
                [f"g{j}-{n // 5}" for j in range(5)]] for n in range(first, first + count)]
    config_path = workdir / f"worker-{first}.json"
    config_path.write_text(json.dumps({
        "url": url, "protocol": "gw", "connect_timeout_s": 120, "connect_concurrency": 200,
        "clients": clients, "source_addrs": [f"127.0.0.{n}" for n in (2, 3)],
        "latency_path": str(workdir / f"latency-{first}.bin")}))
    worker = subprocess.Popen([*WORKER, str(config_path)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    assert worker.stdout is not None
    line = await asyncio.get_running_loop().run_in_executor(None, worker.stdout.readline)
    ready = json.loads(line or b'{"failed": -1, "error": "worker exited"}')
    if ready["failed"]:
        worker.kill()
        raise SystemExit(f"{ready['failed']} connections failed: {ready['error']}")
    return worker


async def wait_quiet(server: GatewayServer) -> float:
    """Until the store writes of the joins (sessions, presence, its announcements), which
    run one at a time, are done: they are transient, not the idle cost. Returns the wait."""
    start = time.monotonic()
    await asyncio.sleep(QUIET_S)
    while not server.runner._serial.empty():
        await asyncio.sleep(0.1)
    await asyncio.sleep(QUIET_S)
    return time.monotonic() - start


def report(count: int, rss0: int, rss1: int, before: tracemalloc.Snapshot | None,
           after: tracemalloc.Snapshot | None, census0: Counter[str], census1: Counter[str],
           top: int) -> None:
    print(f"connections: {count}")
    print(f"RSS per connection: {(rss1 - rss0) / count:,.0f} B"
          + ("  (includes tracemalloc's own bookkeeping)" if after is not None else ""))
    if before is not None and after is not None:
        diffs = after.compare_to(before, "lineno")
        total = sum(d.size_diff for d in diffs)
        print(f"traced bytes per connection: {total / count:,.0f} B\n")
        by_package: Counter[str] = Counter()
        for diff in diffs:
            by_package[package(diff.traceback[0].filename)] += diff.size_diff
        print("by package (B/conn):")
        for name, size in by_package.most_common():
            if abs(size) / count >= 20:
                print(f"  {size / count:8,.0f}  {name}")
        print(f"\ntop {top} allocating lines (B/conn, blocks/conn):")
        for diff in sorted(diffs, key=lambda d: -d.size_diff)[:top]:
            frame = diff.traceback[0]
            print(f"  {diff.size_diff / count:8,.0f}  {diff.count_diff / count:5.1f}  "
                  f"{short(frame.filename)}:{frame.lineno}")
    grown = {name: census1[name] - census0.get(name, 0) for name in census1}
    print("\ngc-tracked objects that appeared, shallow sys.getsizeof (B/conn):")
    for name, size in sorted(grown.items(), key=lambda item: -item[1])[:top]:
        if size / count >= 20:
            print(f"  {size / count:8,.0f}  {name}")


def one_connection(server: GatewayServer) -> None:
    """Shallow sizes of the objects one connection owns, with their attribute tables."""
    handler = next(reversed(server.registry.sockets.values()))
    protocol = handler.ws_connection
    parts: dict[str, object] = {"handler": handler, "protocol": protocol}
    if protocol is not None:
        parts["stream"] = protocol.stream
        parts["socket"] = protocol.stream.socket
    parts["core Connection"] = server.dispatcher.state.connections.get(handler.conn_id)
    print("\none connection's own objects (shallow B; instance dict: B, keys):")
    for name, obj in parts.items():
        attrs = getattr(obj, "__dict__", None)
        table = f"{sys.getsizeof(attrs):6,}  {len(attrs)} keys" if attrs is not None else ""
        print(f"  {sys.getsizeof(obj):6,}  {table:20}  {name}")
        if attrs is not None and os.environ.get("MEMPROF_KEYS"):
            print("          " + " ".join(sorted(attrs)))


async def run(args: argparse.Namespace) -> None:
    port = free_port()
    env = {**os.environ, **GW_ENV, "REDIS_HOST": args.redis, "JWT_SECRET": JWT_SECRET,
           "WSGATEWAY_PREFIX": f"memprof-{uuid.uuid4().hex[:8]}:"}
    env.pop("POSTGRES_DSN", None)
    settings = load_settings({"port": str(port)}, env, None)
    server = GatewayServer(settings, await build_wiring(settings))
    await server.start()
    await asyncio.sleep(QUIET_S)
    with tempfile.TemporaryDirectory(prefix="memprof-") as tmp:
        # A few connections first, so one-off costs (imports, caches, first Redis channels)
        # are in the baseline and not divided over N.
        url = f"ws://127.0.0.1:{port}/ws"
        warm = await open_connections(url, 10**6, WARM, Path(tmp))
        await wait_quiet(server)
        gc.collect()
        census0, rss0 = census(), rss_bytes()
        before = tracemalloc.take_snapshot() if args.trace else None
        worker = await open_connections(url, 0, args.connections, Path(tmp))
        print(f"store writes drained {await wait_quiet(server):.1f} s after the last subscribe")
        gc.collect()
        after = tracemalloc.take_snapshot() if args.trace else None
        rss1, census1 = rss_bytes(), census()
        opened = len(server.registry.sockets) - WARM
        if opened != args.connections:
            raise SystemExit(f"{opened} of {args.connections} connections are open")
        report(args.connections, rss0, rss1, before, after, census0, census1, args.top)
        one_connection(server)
        for proc in (worker, warm):
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 60
    while server.registry.sockets and time.monotonic() < deadline:
        await asyncio.sleep(0.5)  # the disconnects' session writes
    await server.stop(30.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_HOST", "127.0.0.1:6379"))
    parser.add_argument("--no-trace", dest="trace", action="store_false",
                        help="RSS only, without tracemalloc's overhead in the figure")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.trace:
        tracemalloc.start(1)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
