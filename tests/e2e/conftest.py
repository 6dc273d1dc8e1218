"""Fixtures that start real gateway processes; each is stopped at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.harness import GatewayProcess

# Short timers keep the suite fast; a test that checks a default leaves it unset.
FAST = {"tick_interval_s": 0.05, "shutdown_timeout_s": 1}


@pytest.fixture
def start_gateway() -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(command: str = "serve", wait: bool = True, **settings: Any) -> GatewayProcess:
        gateway = GatewayProcess(command, **{**FAST, **settings})
        started.append(gateway)
        return gateway.start(wait=wait)

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(start_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    """One embedded-default gateway with fast ticks."""
    return start_gateway()
