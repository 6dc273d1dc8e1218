"""``serve --workers N``: N gateway processes on one port under one supervisor (issue 14).

Real processes on the real Redis: the supervisor is started the way an operator
starts it, and what is checked is what clients and the operator see: every
connection served, by more than one process, a dead worker replaced, one SIGTERM
draining them all.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import websockets

from tests.e2e.harness import ROOT, Client, GatewayProcess, T, free_port, joined, wait_until
from tornado_gw.settings import SettingsError, load_settings

pytestmark = pytest.mark.e2e

CLIENTS = 12  # all on one worker by chance: 2 ** -11


def _workers(supervisor: GatewayProcess) -> list[int]:
    """The supervisor's child processes, as /proc lists them."""
    assert supervisor.proc is not None
    pid = supervisor.proc.pid
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except FileNotFoundError:
        return []


ESTABLISHED, LISTEN = "01", "0A"  # TCP states in /proc/net/tcp


def _connections_by_pid(pids: list[int], port: int, state: str = ESTABLISHED) -> dict[int, int]:
    """TCP sockets on ``port`` in ``state`` held by each of ``pids`` (/proc fds x /proc/net/tcp)."""
    owner: dict[str, int] = {}
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owner[target[len("socket:["):-1]] = pid
    counts = dict.fromkeys(pids, 0)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in rows.readlines()[1:]:
                fields = row.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == state and fields[9] in owner:
                    counts[owner[fields[9]]] += 1
    return counts


@pytest.fixture
def supervised(redis_host: str, redis_prefix: str) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(**settings: object) -> GatewayProcess:
        gateway = GatewayProcess(workers=2, REDIS_HOST=redis_host, prefix=redis_prefix, tick_interval_s=0.05,
                                 shutdown_timeout_s=1, **settings)
        started.append(gateway)
        gateway.start()
        _wait_listening(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def _wait_listening(gateway: GatewayProcess) -> None:
    """Two workers, each with its own listening socket on the port."""
    def listening() -> bool:
        workers = _workers(gateway)
        counts = _connections_by_pid(workers, gateway.port, LISTEN)
        return len(workers) == 2 and all(count > 0 for count in counts.values())
    wait_until(listening, "two workers listening", timeout=T * 2)


def _publish(gateway: GatewayProcess, conversation_id: str, n: int) -> None:
    event = {"channel": f"conv:{conversation_id}", "type": "test.n", "payload": {"n": n}}
    status, body = gateway.http("POST", "/publish", event)
    assert status == 202, body


async def _answers_ping(client: Client) -> bool:
    try:
        await client.send("ping")
        await client.expect("pong")
    except websockets.ConnectionClosed:
        return False
    return True


async def _all_receive(clients: list[Client], n: int) -> None:
    for client in clients:
        frame = await client.expect("test.n")
        assert frame["payload"] == {"n": n}


async def test_workers_share_one_port_and_serve_as_one_service(
        supervised: Callable[..., GatewayProcess]) -> None:
    gateway = supervised()
    clients = [await joined(gateway, f"u{i}", "x") for i in range(CLIENTS)]
    counts = _connections_by_pid(_workers(gateway), gateway.port)
    assert sum(counts.values()) == CLIENTS
    assert all(count > 0 for count in counts.values()), counts  # both processes accept connections
    _publish(gateway, "x", 1)  # answered by either worker, delivered by both through Redis
    await _all_receive(clients, 1)


async def test_a_worker_that_dies_is_replaced_and_the_others_keep_their_clients(
        supervised: Callable[..., GatewayProcess]) -> None:
    gateway = supervised()
    clients = [await joined(gateway, f"u{i}", "x") for i in range(CLIENTS)]
    before = _workers(gateway)
    counts = _connections_by_pid(before, gateway.port)
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in _workers(gateway), "the killed worker reaped", timeout=T * 2)
    _wait_listening(gateway)  # a new one in its place
    alive = [await _answers_ping(client) for client in clients]
    assert sum(alive) == counts[before[1]]  # only the killed worker's clients lost their connection
    survivors = [client for client, up in zip(clients, alive, strict=True) if up]
    late = [await joined(gateway, f"late{i}", "x") for i in range(CLIENTS)]
    assert all(count > 0 for count in _connections_by_pid(_workers(gateway), gateway.port).values())
    _publish(gateway, "x", 2)
    await _all_receive(survivors + late, 2)
    assert f"(pid {victim}) killed by SIGKILL" in gateway.logs()


async def test_one_sigterm_drains_every_worker_and_the_supervisor_exits_0(
        supervised: Callable[..., GatewayProcess]) -> None:
    gateway = supervised()
    clients = [await joined(gateway, f"u{i}", "x") for i in range(CLIENTS)]
    workers = _workers(gateway)
    assert all(count > 0 for count in _connections_by_pid(workers, gateway.port).values())
    started = time.monotonic()
    gateway.signal(signal.SIGTERM)
    codes = await asyncio.gather(*(client.closed() for client in clients))
    assert {code for code, _reason in codes} == {1001}
    assert gateway.wait_exit(T * 2) == 0
    assert time.monotonic() - started < 1 + T  # shutdown_timeout_s plus start-up slack
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)


def test_workers_that_cannot_start_make_the_supervisor_give_up_with_exit_1(redis_host: str,
                                                                           redis_prefix: str) -> None:
    with socket.socket() as taken:  # a listener without SO_REUSEPORT: the workers cannot bind
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gateway = GatewayProcess(port=port, workers=2, REDIS_HOST=redis_host, prefix=redis_prefix)
        gateway.start(wait=False)
        try:
            assert gateway.wait_exit(T * 4) == 1
        finally:
            gateway.stop()
    assert "workers keep failing at start-up" in gateway.logs()


def test_more_than_one_worker_without_redis_is_refused_with_one_line_and_exit_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSGATEWAY_", "REDIS_", "POSTGRES_"))}
    done = subprocess.run([sys.executable, "-m", "tornado_gw", "--workers=2", f"--port={free_port()}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=T * 4)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "tornado_gw: invalid setting workers: more than one worker needs redis_host (REDIS_HOST) to share "
        "clients' subscriptions, presence and sessions"]


def test_workers_is_a_setting_from_1_to_256_and_more_than_one_needs_redis(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config/gateway.yaml
    assert load_settings({}, {}, None).workers == 1
    assert load_settings({}, {"WSGATEWAY_WORKERS": "4", "REDIS_HOST": "redis:6379"}, None).workers == 4
    with pytest.raises(SettingsError, match="workers: expected an integer from 1 to 256, got '0'"):
        load_settings({"workers": "0"}, {"REDIS_HOST": "redis:6379"}, None)
    with pytest.raises(SettingsError, match="workers: more than one worker needs redis_host"):
        load_settings({"workers": "2"}, {}, None)
