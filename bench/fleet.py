"""The load generator as seen by a scenario: worker processes holding the connections.

Each worker (``bench/worker.py`` on picows + uvloop, or ``bench/gen_node/worker.js`` on
Node ``ws``) holds up to ``per_worker`` connections and answers ``count`` / ``stop`` over
stdio; see bench/worker.py for the line protocol. Connections leave from rotating
127.0.0.x source addresses so repeated 19k-connection runs never exhaust the ephemeral
ports that the previous run left in TIME_WAIT.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import subprocess
import sys
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.workload import ClientSpec

REPO = Path(__file__).resolve().parent.parent
GENERATORS = {
    "python": [sys.executable, "-m", "bench.worker"],
    "node": ["node", str(REPO / "bench" / "gen_node" / "worker.js")],
}
_SOURCE_HOSTS = itertools.cycle(range(2, 255))


@dataclass(frozen=True)
class Counts:
    received: int = 0
    warm: int = 0
    other: int = 0
    dropped: int = 0

    def __add__(self, more: Counts) -> Counts:
        return Counts(self.received + more.received, self.warm + more.warm, self.other + more.other,
                      self.dropped + more.dropped)


class WorkerProcess:
    """One generator process and its line-oriented stdio channel."""

    def __init__(self, argv: list[str], config: dict[str, Any], workdir: Path, index: int) -> None:
        config_path = workdir / f"worker-{index}.json"
        config_path.write_text(json.dumps(config))
        self.latency_path = Path(config["latency_path"])
        self.log_path = workdir / f"worker-{index}.log"
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([*argv, str(config_path)], cwd=REPO, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        self._buffer = b""

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def read_event(self, deadline: float) -> dict[str, Any]:
        """Next JSON line from the worker; raises TimeoutError past ``deadline`` (monotonic)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError(f"generator worker {self.proc.pid} did not answer in time")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"generator worker exited with {self.proc.wait(5)}; see {self.log_path}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return dict(json.loads(line))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@dataclass(frozen=True)
class Ready:
    ok: int
    failed: int
    error: str


class Fleet:
    """Generator workers for one server run: ``add`` connections, ``counts``, ``stop``."""

    def __init__(self, generator: str, url: str, protocol: str, workdir: Path,
                 per_worker: int = 5000) -> None:
        self._argv = GENERATORS[generator]
        self._base = {"url": url, "protocol": protocol, "connect_timeout_s": 60, "connect_concurrency": 200}
        self._workdir = workdir
        self._per_worker = per_worker
        self.workers: list[WorkerProcess] = []

    def add(self, clients: list[ClientSpec], timeout_s: float) -> Ready:
        """Open ``clients`` (authenticated and subscribed) in new workers; waits for all of them."""
        started = []
        for first in range(0, len(clients), self._per_worker):
            index = len(self.workers)
            chunk = clients[first:first + self._per_worker]
            config = {**self._base, "clients": [[c.token, c.conversations] for c in chunk],
                      "source_addrs": [f"127.0.0.{next(_SOURCE_HOSTS)}" for _ in range(2)],
                      "latency_path": str(self._workdir / f"latency-{index}.bin")}
            worker = WorkerProcess(self._argv, config, self._workdir, index)
            self.workers.append(worker)
            started.append(worker)
        deadline = time.monotonic() + timeout_s
        events = [worker.read_event(deadline) for worker in started]
        errors = [event["error"] for event in events if event["error"]]
        return Ready(sum(e["ok"] for e in events), sum(e["failed"] for e in events),
                     errors[0] if errors else "")

    def counts(self, timeout_s: float = 10.0) -> Counts:
        for worker in self.workers:
            worker.send("count")
        return self._collect("count", timeout_s)

    def _collect(self, event: str, timeout_s: float) -> Counts:
        deadline = time.monotonic() + timeout_s
        total = Counts()
        for worker in self.workers:
            line = worker.read_event(deadline)
            assert line["event"] == event, line
            total += Counts(line["received"], line["warm"], line["other"], line["dropped"])
        return total

    def pids(self) -> list[int]:
        return [worker.proc.pid for worker in self.workers]

    def flush(self, timeout_s: float = 30.0) -> tuple[Counts, array[int]]:
        """Counts so far and the latencies (µs) received since the previous flush."""
        for worker in self.workers:
            worker.send("flush")
        counts = self._collect("flushed", timeout_s)
        latencies: array[int] = array("q")
        for worker in self.workers:
            with open(worker.latency_path, "rb") as fh:
                latencies.frombytes(fh.read())
        return counts, latencies

    def stop(self, timeout_s: float = 30.0) -> Counts:
        """Close every connection and end the workers; returns the final counts."""
        for worker in self.workers:
            worker.send("stop")
        counts = self._collect("done", timeout_s)
        self.close()
        return counts

    def close(self) -> None:
        """Kill what is left; safe to call more than once."""
        for worker in self.workers:
            worker.kill()
        self.workers = []
