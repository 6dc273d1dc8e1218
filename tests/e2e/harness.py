"""Real gateway processes and real WebSocket clients for end-to-end tests.

Every wait is bounded by ``T`` (seconds, scaled by TEST_TIMEOUT_SCALE for slow
machines); nothing sleeps blindly.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ujson
import websockets
from websockets.asyncio.client import ClientConnection

from tornado_gw.web.auth import mint_token

T = 5.0 * float(os.environ.get("TEST_TIMEOUT_SCALE", "1"))
SECRET = "e2e-test-secret-0123456789abcdef0123456789"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port below Linux's ephemeral range, so no client socket takes it meanwhile."""
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port


def token(user_id: str, ttl_s: float | None = 3600.0, secret: str = SECRET) -> str:
    return mint_token(secret, user_id, ttl_s, time.time())


def settings_env(overrides: Mapping[str, Any]) -> dict[str, str]:
    """Settings as WSGATEWAY_* variables (the seed's aliases pass through unchanged)."""
    env = {}
    for name, value in overrides.items():
        key = name if name.isupper() else "WSGATEWAY_" + name.upper()
        env[key] = ",".join(value) if isinstance(value, (list, tuple)) else str(value)
    return env


class GatewayProcess:
    """``python -m tornado_gw`` on a free port, started and stopped by the test."""

    program: tuple[str, ...] = (sys.executable, "-m", "tornado_gw")  # or another build of the same CLI

    def __init__(self, command: str = "serve", **settings: Any) -> None:
        self.port = int(settings.pop("port", 0)) or free_port()
        self.command = command
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WSGATEWAY_", "REDIS_", "POSTGRES_"))}
        env.update({"JWT_SECRET": SECRET, "WSGATEWAY_PORT": str(self.port), "LOGGER_LEVEL": "debug"})
        env.update(settings_env(settings))
        self.env = env
        fd, self.log_path = tempfile.mkstemp(prefix="gw-", suffix=".log")
        os.close(fd)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, wait: bool = True) -> GatewayProcess:
        for attempt in range(3):
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([*self.program, self.command], cwd=ROOT,
                                             env=self.env, stdout=log, stderr=subprocess.STDOUT)
            if not wait:
                return self
            try:
                wait_until(lambda: self.http("GET", "/health")[0] == 200, f"gateway on {self.port} to start",
                           check=self._still_running)
                return self
            except AssertionError:
                if attempt == 2 or "Address already in use" not in self.logs():
                    raise
                self.port = free_port()  # another test's client took the port meanwhile
                self.env["WSGATEWAY_PORT"] = str(self.port)
        return self

    def _still_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.logs()}")

    def logs(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def http(self, method: str, path: str, body: Any = None,
             headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else (body if isinstance(body, bytes) else ujson.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=T) as response:
                return response.status, _parse(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _parse(exc.read())
        except OSError:
            return 0, None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = T) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(T * 4)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(T)

    def metric(self, name: str, **labels: str) -> float:
        """Value of one Prometheus sample from ``/metrics`` (0 when absent)."""
        status, text = self.http("GET", "/metrics")
        assert status == 200
        wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in str(text).splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0


def _parse(raw: bytes) -> Any:
    try:
        return ujson.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = T,
               check: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check is not None:
            check()
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")


async def async_wait_until(predicate: Callable[[], bool], what: str, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")


class Client:
    """A WebSocket client that keeps every frame it received, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self._cursor = 0

    @classmethod
    async def connect(cls, gateway: GatewayProcess, **kwargs: Any) -> Client:
        # max_queue=None: the client reads on even when the test does not look (no TCP backpressure).
        options = {"open_timeout": T, "max_size": None, "max_queue": None, **kwargs}
        ws = await websockets.connect(gateway.ws_url, **options)
        return cls(ws)

    async def send(self, kind: str, payload: Any = None) -> None:
        frame: dict[str, Any] = {"type": kind}
        if payload is not None:
            frame["payload"] = payload
        await self.ws.send(ujson.dumps(frame))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def next(self, timeout: float = T) -> dict[str, Any]:
        """The next frame not yet returned by ``next``/``expect``."""
        while self._cursor >= len(self.received):
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            self.received.append(ujson.loads(raw))
        frame = self.received[self._cursor]
        self._cursor += 1
        return frame

    async def expect(self, kind: str, timeout: float = T) -> dict[str, Any]:
        """Skip frames until one of ``kind``; fail if none arrives within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.next(max(0.01, deadline - time.monotonic()))
            if frame.get("type") == kind:
                return frame

    async def auth(self, user_id: str, **payload: Any) -> dict[str, Any]:
        await self.send("auth", {"token": payload.pop("token", None) or token(user_id), **payload})
        frame = await self.next()
        assert frame["type"] == "auth.success", frame
        return frame["payload"]

    async def subscribe(self, *conversation_ids: str, **payload: Any) -> dict[str, Any]:
        await self.send("subscribe", {"conversation_ids": list(conversation_ids), **payload})
        frame = await self.expect("subscribed")
        return frame["payload"]

    async def closed(self, timeout: float = T) -> tuple[int | None, str | None]:
        """Wait for the server to close; returns (code, reason)."""

        async def drain() -> tuple[int | None, str | None]:
            try:
                while True:
                    self.received.append(ujson.loads(await self.ws.recv()))
            except websockets.ConnectionClosed as exc:
                return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, None)

        return await asyncio.wait_for(drain(), timeout)

    async def silent(self, seconds: float) -> list[dict[str, Any]]:
        """Frames that arrive within ``seconds`` (to assert that nothing does)."""
        extra: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return extra
            try:
                extra.append(await self.next(left))
            except (asyncio.TimeoutError, TimeoutError):
                return extra

    async def close(self) -> None:
        await self.ws.close()


async def raw_upgrade(gateway: GatewayProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection that completed the WebSocket handshake, for hand-made frames."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), T)).startswith(b"HTTP/1.1 101")
    return reader, writer


async def joined(gateway: GatewayProcess, user_id: str, *conversations: str) -> Client:
    """A client authenticated as ``user_id`` and subscribed to ``conversations``."""
    client = await Client.connect(gateway)
    await client.auth(user_id)
    if conversations:
        await client.subscribe(*conversations)
    return client


def publish(gateway: GatewayProcess, conversation_id: str, n: int) -> int:
    """``POST /publish`` of a ``message.new`` numbered ``n``; returns its seq (embedded log)."""
    event = {"channel": f"conv:{conversation_id}", "type": "message.new",
             "payload": {"conversation_id": conversation_id, "n": n}}
    status, body = gateway.http("POST", "/publish", event)
    assert status == 202, body
    return int(body["seq"])
