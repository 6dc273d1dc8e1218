"""The seed's commands without Docker: ``make build-ws`` and ``make run-all`` (issue 14).

Both run the scripts the Makefile runs, with this interpreter, and check what a
developer sees: a single file that serves the protocol, and a local cluster
whose relay delivers to both gateways, one log, stopped by one Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from tests.e2e.harness import ROOT, SECRET, Client, GatewayProcess, T, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BUILD_TIMEOUT_S = 300.0


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``scripts/build_ws.sh`` (what ``make build-ws`` runs) into a temporary directory."""
    out = tmp_path_factory.mktemp("build-ws")
    done = subprocess.run(["scripts/build_ws.sh", sys.executable, str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=BUILD_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


class BinaryGateway(GatewayProcess):
    def __init__(self, binary: Path, shiv_root: Path, **settings: object) -> None:
        super().__init__(**settings)
        self.program = (str(binary),)
        self.env["SHIV_ROOT"] = str(shiv_root)  # where the zipapp unpacks its extensions


def test_build_ws_makes_a_wheel_and_one_executable_with_the_c_extensions_for_this_python(built: Path) -> None:
    assert [wheel.name for wheel in (built / "dist").iterdir()] == ["tornado_gw-0.1.0-py3-none-any.whl"]
    binary = built / "bin" / "wsgateway"
    assert os.access(binary, os.X_OK)
    with open(binary, "rb") as stream:
        assert stream.readline().decode().strip() == f"#!{sys._base_executable}"  # type: ignore[attr-defined]
    tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
    names = zipfile.ZipFile(binary).namelist()
    for extension in ("ujson", "hiredis/hiredis", "psycopg_binary/_psycopg"):
        assert f"site-packages/{extension}.{tag}-x86_64-linux-gnu.so" in names or any(
            name.startswith(f"site-packages/{extension}.{tag}") for name in names), extension


async def test_the_built_binary_serves_the_protocol(built: Path, tmp_path: Path) -> None:
    gateway = BinaryGateway(built / "bin" / "wsgateway", tmp_path)
    gateway.start()
    try:
        assert gateway.http("GET", "/health") == (200, {"status": "ok", "connections": 0})
        client = await Client.connect(gateway)
        await client.auth("alice")
        await client.subscribe("c1")
        event = {"channel": "conv:c1", "type": "message.new", "payload": {"conversation_id": "c1"}}
        assert gateway.http("POST", "/publish", event)[0] == 202
        frame = await client.expect("message.new")
        assert frame == {"type": "message.new", "payload": {"conversation_id": "c1"}, "seq": 1}
        await client.close()
    finally:
        gateway.stop()
    assert gateway.proc is not None and gateway.proc.returncode == 0


@pytest.fixture
def run_all(tmp_path: Path, redis_host: str, redis_prefix: str, pg_dsn: str) -> Iterator[tuple[dict[str, str],
                                                                                                   Path]]:
    suffix = uuid4().hex[:10]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSGATEWAY_", "REDIS_", "POSTGRES_"))}
    env.update({
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",  # what make does with .venv/bin
        "REDIS_HOST": redis_host, "POSTGRES_DSN": pg_dsn, "JWT_SECRET": SECRET,
        "WSGATEWAY_PREFIX": redis_prefix, "WSGATEWAY_AUTHORIZATION": "none",
        "WSGATEWAY_OUTBOX_TABLE": f"outbox_{suffix}", "WSGATEWAY_MEMBERS_TABLE": f"members_{suffix}",
        "WSGATEWAY_SHUTDOWN_TIMEOUT_S": "1", "WSGATEWAY_RELAY_POLL_INTERVAL_S": "0.1",
        "GATEWAY1_PORT": str(free_port()), "GATEWAY2_PORT": str(free_port()),
    })
    yield env, tmp_path / "run-all.log"


async def test_run_all_migrates_and_runs_the_relay_and_two_gateways_in_one_log_stopped_by_one_ctrl_c(
        run_all: tuple[dict[str, str], Path]) -> None:
    env, log_path = run_all
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["scripts/run_all.sh"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # a terminal's job
    try:
        gateways = []
        for name in ("GATEWAY1_PORT", "GATEWAY2_PORT"):
            gateway = GatewayProcess(port=int(env[name]))
            wait_until(lambda g=gateway: g.http("GET", "/health")[0] == 200,  # type: ignore[misc]
                       f"gateway on {env[name]}", timeout=T * 6, check=lambda: _running(proc, log_path))
            gateways.append(gateway)
        clients = [await Client.connect(gateway) for gateway in gateways]
        for client in clients:
            await client.auth("alice")
            await client.subscribe("c1")
        emit = subprocess.run([sys.executable, "-m", "tornado_gw", "emit", "--conversation", "c1", "--type",
                               "message.new", "--payload", '{"conversation_id": "c1"}'], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=T * 4)
        assert emit.returncode == 0, emit.stderr  # an outbox row, as an API server writes it
        for client in clients:  # numbered and published by the relay
            frame = await client.expect("message.new", timeout=T * 2)
            assert frame["payload"] == {"conversation_id": "c1"} and frame["seq"] >= 1
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        assert proc.wait(T * 4) in (0, 130)
        for client in clients:
            assert (await client.closed())[0] == 1001
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(T)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # nothing of the group is left running
    log_text = log_path.read_text(errors="replace")
    assert f"migrate: tables outbox_{env['WSGATEWAY_OUTBOX_TABLE'][7:]}" in log_text
    for process in ("relay.1", "gateway1.1", "gateway2.1"):
        assert any(f" {process} " in line and "|" in line for line in log_text.splitlines()), process


def _running(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    if proc.poll() is not None:
        log = log_path.read_text(errors="replace")
        raise AssertionError(f"run_all.sh exited with {proc.returncode}:\n{log}")
