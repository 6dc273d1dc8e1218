"""A step of the wall clock (NTP) moves no deadline (issue 9 §8).

The gateway runs with ``tests/support/stepped_clock`` on its PYTHONPATH: each
SIGUSR1 moves its wall clock two hours forward, as an NTP correction of a
badly set clock would. Idle, auth and token deadlines run on the monotonic
clock, so the connections stay; an idle one is still closed on time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import FAST
from tests.e2e.harness import ROOT, SECRET, Client, GatewayProcess, T, token
from tornado_gw.web.auth import mint_token

pytestmark = pytest.mark.e2e
STEP_S = 7200.0  # past the idle timeout and past the token's exp
IDLE_TIMEOUT_S = 2.0


@pytest.fixture
def stepped() -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(**FAST, idle_timeout_s=IDLE_TIMEOUT_S, auth_timeout_s=3 * IDLE_TIMEOUT_S)
    gateway.env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "tests" / "support" / "stepped_clock"), gateway.env.get("PYTHONPATH", "")])
    gateway.env["STEPPED_CLOCK_STEP_S"] = str(STEP_S)
    gateway.start()
    yield gateway
    gateway.stop()


async def _keeps_answering(client: Client, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await client.send("ping")
        assert (await client.next())["type"] == "pong"
        await asyncio.sleep(IDLE_TIMEOUT_S / 4)


async def test_a_wall_clock_step_closes_nothing_and_idle_still_times_out(stepped: GatewayProcess) -> None:
    active = await Client.connect(stepped)
    await active.auth("alice", token=token("alice", ttl_s=3600))
    waiting = await Client.connect(stepped)  # not authenticated yet: the auth deadline runs
    stepped.signal(signal.SIGUSR1)
    await _keeps_answering(active, 2 * IDLE_TIMEOUT_S)  # dozens of ticks after the step
    quiet_since = time.monotonic()
    # A token's exp is a calendar time: checked against the (stepped) wall clock.
    await waiting.auth("bob", token=mint_token(SECRET, "bob", 3600, time.time() + STEP_S))
    await _keeps_answering(waiting, IDLE_TIMEOUT_S / 2)
    assert (await active.closed(timeout=T + IDLE_TIMEOUT_S))[0] == 4004  # the idle deadline still works
    assert time.monotonic() - quiet_since >= IDLE_TIMEOUT_S - 0.5
    await waiting.close()
