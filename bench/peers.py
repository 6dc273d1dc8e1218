"""The servers under test: how to start, probe and stop each peer.

Every peer speaks to the bench's Redis under its own fresh prefix and listens on
127.0.0.1 at a free port; all of them take the same JWTs (HS256, ``sub`` = user id).
A peer that cannot run here (no Node, npm install failed, tornado_gw not written yet)
is reported as skipped with the reason instead of failing the bench.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import procstat
from bench.workload import JWT_SECRET

REPO = Path(__file__).resolve().parent.parent
PEERS_DIR = REPO / "bench" / "peers"
# tornado_gw settings for every benchmark: production mode, what deployments run (development
# mode keeps a debug trail of each connection's last events), with any user in any conversation
# (no membership table), and the limits (WSGATEWAY_ + name) lifted so they never shape the figures.
GW_ENV = {
    "MODE": "production", "WSGATEWAY_AUTHORIZATION": "none",
    "WSGATEWAY_RATE_LIMIT_PER_S": "100000", "WSGATEWAY_RATE_LIMIT_BURST": "100000",
    "WSGATEWAY_IDLE_TIMEOUT_S": "3600", "WSGATEWAY_AUTH_TIMEOUT_S": "300",
    "WSGATEWAY_OUTBOUND_BUFFER_BYTES": str(64 * 1024 * 1024), "WSGATEWAY_MAX_SUBSCRIPTIONS": "1000",
}


@dataclass(frozen=True)
class Peer:
    """A server kind: its command line, wire protocol and WebSocket path."""

    name: str
    protocol: str  # "gw" (CONTRACT §3 JSON frames) or "sio" (Socket.IO 4 over engine.io v4)
    ws_path: str

    def unavailable(self) -> str | None:
        """Why this peer cannot run on this machine, or None."""
        if self.name == "socketio":
            if shutil.which("node") is None:
                return "node not found"
            if not (PEERS_DIR / "socketio" / "node_modules" / "socket.io").is_dir():
                return "npm packages not installed (bash bench/run.sh installs them)"
        if self.name.startswith("tornado_gw") and not (REPO / "tornado_gw" / "__main__.py").is_file():
            return "tornado_gw/__main__.py not found"
        return None

    def command(self, port: int, prefix: str, redis_host: str) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, "REDIS_HOST": redis_host, "JWT_SECRET": JWT_SECRET,
               "WSGATEWAY_PREFIX": prefix, "LOGGER_LEVEL": "warning"}
        if self.name == "naive":
            script = str(PEERS_DIR / "naive_tornado.py")
            return [sys.executable, script, f"--port={port}", "--logging=warning"], env
        if self.name == "socketio":
            env["SIO_KEY"] = prefix + "socket.io"
            return ["node", str(PEERS_DIR / "socketio" / "server.js"), f"--port={port}"], env
        env.update(GW_ENV)
        env.pop("POSTGRES_DSN", None)  # Redis-only deployment: no outbox, no membership table
        workers = ["--workers=2"] if self.name == "tornado_gw_2w" else []
        return [gw_python(), "-m", "tornado_gw", f"--port={port}", *workers], env


PEERS = {
    "tornado_gw": Peer("tornado_gw", "gw", "/ws"),
    # the same gateway as two workers on one port (serve --workers 2): bench/workers.sh
    "tornado_gw_2w": Peer("tornado_gw_2w", "gw", "/ws"),
    "naive": Peer("naive", "gw", "/ws"),
    "socketio": Peer("socketio", "sio", "/socket.io/?EIO=4&transport=websocket"),
}


def gw_python() -> str:
    """The interpreter for tornado_gw: BENCH_GW_PYTHON, else the project's .venv, else ours."""
    candidate = REPO / ".venv" / "bin" / "python"
    return os.environ.get("BENCH_GW_PYTHON") or (str(candidate) if candidate.exists() else sys.executable)


def free_port() -> int:
    """A port below the ephemeral range, free on the wildcard address: servers that listen on
    0.0.0.0 cannot bind a port that one of the generator's client sockets holds."""
    low, _ = (int(p) for p in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(100):
        port = random.randrange(max(1024, low - 12_000), low)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port below the ephemeral range")


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout_s: float,
                   describe: Callable[[], str]) -> None:
    """Poll until any HTTP answer comes back from ``port``; fail fast if ``proc`` dies.

    Raises:
        RuntimeError: the process exited; TimeoutError: no answer within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{describe()} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answered: listening
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{describe()} not listening after {timeout_s:.0f} s")


class RunningPeer:
    """A started server process; ``stop()`` always ends it."""

    def __init__(self, peer: Peer, log_path: Path, redis_host: str, start_timeout_s: float = 30.0) -> None:
        self.peer = peer
        self.redis_host = redis_host
        self.prefix = f"bench{uuid.uuid4().hex[:8]}:"
        self.log_path = log_path
        for attempt in range(3):  # a free port can be taken by someone else before we bind it
            self._start()
            try:
                self._wait_listening(start_timeout_s)
                return
            except RuntimeError:  # it exited
                self.stop()
                if attempt == 2 or "Address already in use" not in self.log_tail():
                    raise
            except BaseException:
                self.stop()
                raise

    def _start(self) -> None:
        self.port = free_port()
        argv, env = self.peer.command(self.port, self.prefix, self.redis_host)
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.peer.ws_path}"

    def _wait_listening(self, timeout_s: float) -> None:
        wait_listening(self.proc, self.port, timeout_s, lambda: f"{self.peer.name} ({self.log_tail()})")

    def log_tail(self, limit: int = 300) -> str:
        """The last lines of the server's output (a traceback's last line names the error)."""
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return " / ".join(line.strip() for line in lines[-3:])[-limit:] or "(no output)"

    def cpu_us(self) -> float:
        return procstat.tree_cpu_us(self.proc.pid)

    def rss_bytes(self) -> int:
        return procstat.tree_rss_bytes(self.proc.pid)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it past ``timeout_s``."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout_s)
