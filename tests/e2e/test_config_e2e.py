"""Configuration as an operator meets it (CONTRACT §1): precedence, refusals, log encoding."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import ROOT, Client, GatewayProcess, T, free_port, token, wait_until
from tornado_gw.settings import DEVELOPMENT_JWT_SECRET

pytestmark = pytest.mark.e2e


class FlaggedGateway(GatewayProcess):
    """``python -m tornado_gw ARGS...``: the harness's process passes only the command."""

    def __init__(self, args: Sequence[str], **settings: Any) -> None:
        super().__init__("serve", **settings)
        self.args = list(args)

    def start(self, wait: bool = True) -> FlaggedGateway:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tornado_gw", *self.args], cwd=ROOT,
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            wait_until(lambda: self.http("GET", "/health")[0] == 200, f"gateway on {self.port} to start",
                       check=self._still_running)
        return self


@pytest.fixture
def launch() -> Iterator[Callable[..., FlaggedGateway]]:
    """Start ``python -m tornado_gw ARGS`` listening on ``port``, with ``environ`` as given."""
    started: list[FlaggedGateway] = []

    def start(args: Sequence[str], port: int, **environ: str) -> FlaggedGateway:
        gateway = FlaggedGateway(args, port=port)
        del gateway.env["WSGATEWAY_PORT"]
        gateway.env.update(environ)
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.stop()


async def _limit_observed(gateway: GatewayProcess, limit: int) -> tuple[str, str]:
    """Subscribe to ``limit`` conversations at once, then to one more: the two answers."""
    client = await Client.connect(gateway)
    await client.auth("alice")
    await client.send("subscribe", {"conversation_ids": [f"c{n}" for n in range(limit)]})
    first = await _reply(client)
    await client.send("subscribe", {"conversation_ids": ["one-more"]})
    second = await _reply(client)
    await client.close()
    return first["type"], second["payload"].get("code", second["type"])


async def _reply(client: Client) -> dict[str, Any]:
    while True:
        frame = await client.next()
        if frame["type"] in ("subscribed", "error"):
            return frame


async def test_flags_beat_environment_beat_yaml_beat_defaults(
        launch: Callable[..., FlaggedGateway], tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("yaml", "env", "flags", "default", "unused")}
    config = tmp_path / "gateway.yaml"
    config.write_text(f"port: {ports['yaml']}\nmax_subscriptions: 1\n")
    flags = ["serve", f"--config={config}", f"--port={ports['flags']}", "--max-subscriptions", "3"]
    gateways = {
        "yaml": launch(["--config", str(config)], ports["yaml"]),
        "env": launch([f"--config={config}"], ports["env"],
                      WSGATEWAY_PORT=str(ports["env"]), WSGATEWAY_MAX_SUBSCRIPTIONS="2"),
        "flags": launch(flags, ports["flags"],
                        WSGATEWAY_PORT=str(ports["unused"]), WSGATEWAY_MAX_SUBSCRIPTIONS="2"),
        # run from the checkout, whose config/gateway.yaml repeats the built-in defaults
        "default": launch([f"--port={ports['default']}"], ports["default"]),
    }
    expected = {"yaml": 1, "env": 2, "flags": 3, "default": 500}
    observed = {name: await _limit_observed(gateways[name], limit) for name, limit in expected.items()}
    assert observed == dict.fromkeys(expected, ("subscribed", "too_many_subscriptions"))
    with pytest.raises(ConnectionRefusedError):  # the flag beat WSGATEWAY_PORT
        socket.create_connection(("127.0.0.1", ports["unused"]), timeout=T).close()


def _refusal(tmp_path: Path, **environ: str) -> tuple[int, list[str]]:
    """Run ``python -m tornado_gw`` with only ``environ`` of ours: exit code and stderr lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    env.update({"WSGATEWAY_PORT": str(free_port()), **environ})
    done = subprocess.run([sys.executable, "-m", "tornado_gw"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=T * 2)
    return done.returncode, done.stderr.splitlines()


_OURS = ("WSGATEWAY_", "REDIS_", "POSTGRES_", "JWT_SECRET", "MODE", "LOGGER_", "PUBLISH_API_KEY")
REFUSALS = [
    ("jwt_secret", {"MODE": "production"}),
    ("jwt_secret", {"MODE": "production", "JWT_SECRET": "tornado-gw-development-secret",
                    "WSGATEWAY_AUTHORIZATION": "none"}),
    ("authorization", {"MODE": "production", "JWT_SECRET": "a-real-secret-0123456789abcdef0123"}),
    ("mode", {"MODE": "staging"}),
    ("idle_timeout_s", {"WSGATEWAY_IDLE_TIMEOUT_S": "-1"}),
    ("allowed_origins", {"WSGATEWAY_ALLOWED_ORIGINS": "app.example/path"}),
    ("logger_encoding", {"LOGGER_ENCODING": "xml"}),
]


@pytest.mark.parametrize(("setting", "environ"), REFUSALS,
                         ids=[f"{setting}-{n}" for n, (setting, _) in enumerate(REFUSALS)])
def test_bad_configuration_exits_2_with_one_line_naming_the_setting(
        tmp_path: Path, setting: str, environ: dict[str, str]) -> None:
    code, lines = _refusal(tmp_path, **environ)
    assert code == 2
    assert len(lines) == 1 and setting in lines[0], lines


async def test_json_log_encoding_makes_every_line_a_json_object(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(LOGGER_ENCODING="json", JWT_SECRET="")  # the development secret warns
    client = await Client.connect(gateway)
    await client.auth("alice", token=token("alice", secret=DEVELOPMENT_JWT_SECRET))
    await client.subscribe("c1")
    await client.send_raw("{not json")
    await client.expect("error")
    await client.close()
    intruder = await Client.connect(gateway)
    await intruder.send("auth", {"token": "forged"})
    await intruder.closed()
    assert gateway.http("POST", "/publish", {"channel": "conv:c1", "type": "t", "payload": {}})[0] == 202
    gateway.stop()
    lines = [line for line in gateway.logs().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]
    assert len(entries) >= 3 and all(isinstance(entry, dict) for entry in entries)
    assert all({"level", "message"} <= set(entry) for entry in entries)
    assert any(entry["level"] == "warning" and "DEVELOPMENT" in entry["message"] for entry in entries)
