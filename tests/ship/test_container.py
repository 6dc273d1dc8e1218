"""The image and docker-compose.yml, checked where no Docker engine runs (issue 14).

What cannot run here is the image build itself. What can: docker-compose.yml
against the Compose Specification's JSON Schema (shared/schemas, beside the
checkout: ``../shared`` in CI), every service command run through the image's
entrypoint with ``--help``, the image's HEALTHCHECK command run against a real
gateway, and the Dockerfile's instructions read one by one.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tests.e2e.harness import ROOT, GatewayProcess, T, free_port
from tests.ship.shared import shared_file


def _compose_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(shared_file("schemas", "compose-spec.json").read_text())
    return schema


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_compose_schema())  # its $schema: draft-07


@pytest.fixture(scope="module")
def image() -> list[dict[str, str]]:
    """The final stage's instructions (after the last FROM)."""
    structure = DockerfileParser(str(ROOT / "Dockerfile")).structure
    last_from = max(i for i, item in enumerate(structure) if item["instruction"] == "FROM")
    return [item for item in structure[last_from:] if item["instruction"] != "COMMENT"]


def _one(image: list[dict[str, str]], instruction: str) -> str:
    values = [item["value"] for item in image if item["instruction"] == instruction]
    assert len(values) == 1, f"{instruction}: {values}"
    return values[0]


def _entrypoint(image: list[dict[str, str]]) -> list[str]:
    """The exec-form ENTRYPOINT with this interpreter for ``python``, behind tini's ``--``."""
    argv: list[str] = json.loads(_one(image, "ENTRYPOINT"))
    assert argv[:2] == ["tini", "--"], argv
    return [sys.executable if arg == "python" else arg for arg in argv[2:]]


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any],
                                                        validator: jsonschema.Draft7Validator) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_the_schema_check_catches_a_misspelt_key(compose: dict[str, Any],
                                                 validator: jsonschema.Draft7Validator) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["wsgateway"]["enviroment"] = broken["services"]["wsgateway"].pop("environment")
    assert not validator.is_valid(broken)


def test_every_service_built_from_the_image_runs_a_command_the_package_has(
        compose: dict[str, Any], image: list[dict[str, str]]) -> None:
    built = {name: service for name, service in compose["services"].items() if "build" in service}
    assert set(built) == {"migrate", "relay", "wsgateway", "wsgateway2"}
    for name, service in built.items():
        command = service.get("command", json.loads(_one(image, "CMD")))
        done = subprocess.run([*_entrypoint(image), *command, "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=T * 4)
        assert done.returncode == 0 and done.stdout.startswith("usage:"), (name, done.stderr)


def test_each_gateway_publishes_the_port_it_listens_on_and_outlasts_its_drain(
        compose: dict[str, Any]) -> None:
    for name in ("wsgateway", "wsgateway2"):
        service = compose["services"][name]
        port = service["environment"]["WSGATEWAY_PORT"]
        assert service["ports"] == [f"{port}:{port}"]
        assert service["command"] == ["serve"]
        grace_s = float(service["stop_grace_period"].removesuffix("s"))
        assert grace_s > 10  # shutdown_timeout_s (default 10 s): the drain ends before the kill


def test_the_image_is_slim_unprivileged_and_holds_only_the_runtime_wheels(
        image: list[dict[str, str]]) -> None:
    assert _one(image, "FROM").endswith("-slim")
    user = _one(image, "USER")
    assert user not in ("root", "0") and not user.startswith(("root:", "0:"))
    order = [item["instruction"] for item in image]
    runs = [item["value"] for item in image if item["instruction"] == "RUN"]
    assert order.index("USER") > max(i for i, name in enumerate(order) if name == "RUN")  # no root process
    installs = [run for run in runs if "pip install" in run]
    assert installs == ["pip install --no-cache-dir --no-index --find-links=/wheels tornado_gw"
                        " && rm -rf /wheels"]
    copied = [item["value"] for item in image if item["instruction"] == "COPY"]
    assert copied == ["--from=build /wheels /wheels", "config ./config"]  # no sources, tests or tools


def test_sigterm_reaches_the_gateway_through_tini_in_exec_form(image: list[dict[str, str]]) -> None:
    assert _entrypoint(image)[1:] == ["-m", "tornado_gw"]
    assert json.loads(_one(image, "CMD")) == ["serve"]
    assert _one(image, "STOPSIGNAL") == "SIGTERM"
    run = next(item["value"] for item in image if item["instruction"] == "RUN" and "apt-get" in item["value"])
    assert "install --yes --no-install-recommends tini" in run


@pytest.mark.e2e
def test_the_healthcheck_asks_health_and_fails_when_nothing_answers(image: list[dict[str, str]]) -> None:
    options, _, command = _one(image, "HEALTHCHECK").partition("CMD")
    assert "--interval=" in options and "--timeout=" in options
    argv = [sys.executable if arg == "python" else arg for arg in json.loads(command)]
    assert "/health" in argv[-1]
    gateway = GatewayProcess()
    gateway.start()
    try:
        env = {**os.environ, "WSGATEWAY_PORT": str(gateway.port)}
        assert subprocess.run(argv, env=env, capture_output=True, timeout=T).returncode == 0
    finally:
        gateway.stop()
    env = {**os.environ, "WSGATEWAY_PORT": str(free_port())}
    assert subprocess.run(argv, env=env, capture_output=True, timeout=T).returncode != 0
