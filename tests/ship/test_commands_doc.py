"""The README's and the seed's commands exist in the code (issue 14): every ``make``
target, ``python -m tornado_gw`` command and flag, and ``docker-compose`` service they name."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.ship.shared import ROOT, shared_file
from tornado_gw.cli import COMMANDS, main
from tornado_gw.settings import setting_names

README = (ROOT / "README.md").read_text(encoding="utf-8")
OWN_FLAGS = {"config", "user", "ttl", "conversation", "type", "payload", "url", "reason"}  # cli: not settings


def _seed() -> str:
    return shared_file("seed", "websocket-gateway.md").read_text(encoding="utf-8")


def _make_targets() -> set[str]:
    rules = re.findall(r"^([a-z][a-z0-9 -]*):(?!=)", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    return {target for rule in rules for target in rule.split()}


def _compose_services() -> set[str]:
    return set(yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"])


@pytest.mark.parametrize("source", ["README.md", "seed"])
def test_every_make_target_named_exists(source: str) -> None:
    text = README if source == "README.md" else _seed()
    named = set(re.findall(r"\bmake ([a-z][a-z0-9-]*)", text))
    assert named and named - _make_targets() == set()


@pytest.mark.parametrize("source", ["README.md", "seed"])
def test_every_docker_compose_service_named_exists(source: str) -> None:
    text = README if source == "README.md" else _seed()
    named = set(re.findall(r"docker-compose up ([a-z][a-z0-9-]*)", text))
    assert named and named - _compose_services() == set()


def test_every_command_of_the_readme_exists_and_answers_help(capsys: pytest.CaptureFixture[str]) -> None:
    named = set(re.findall(r"python -m tornado_gw ([a-z]+)\b", README))
    assert named >= {"relay", "migrate", "token", "emit"} and named <= set(COMMANDS)
    for command in named:
        assert main([command, "--help"], environ={}) == 0
        assert capsys.readouterr().out.startswith("usage:")


def test_every_flag_the_readme_shows_is_a_setting_or_a_command_flag() -> None:
    lines = [line for line in README.splitlines() if re.search(r"python -m tornado_gw|bin/wsgateway", line)]
    flags = {flag.replace("-", "_") for line in lines for flag in re.findall(r"--([a-z][a-z_-]*)", line)}
    assert {"port", "workers"} <= flags
    assert flags - set(setting_names()) - OWN_FLAGS == set()
