"""``python -m tornado_gw relay`` as real processes: SIGKILL mid-stream and
restart, a standby taking over, and refusing to start without its dependencies."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.relay.helpers import Observer, all_published, append, relay_env, relay_processes, start_relay
from tests.support.redis import WAIT_S, eventually, run
from tornado_gw.settings import Settings

pytestmark = pytest.mark.e2e

ROWS = 3000
CHANNELS = 7


def _first_seen_seqs_increase_per_channel(frames: list[tuple[str, dict[str, Any]]]) -> bool:
    """What a client sees once duplicates are dropped by seq: strictly increasing per channel."""
    seen: dict[str, list[int]] = defaultdict(list)
    for channel, frame in frames:
        if frame["seq"] not in seen[channel]:
            seen[channel].append(frame["seq"])
    return all(seqs == sorted(seqs) for seqs in seen.values())


def test_relay_killed_mid_stream_and_restarted_loses_nothing_and_repeats_only_same_seq(
        relay_settings: Settings, tmp_path: Path) -> None:
    settings = replace(relay_settings, relay_batch_size=10)
    env = relay_env(settings, settings.redis_host or "")
    kills = 2

    async def scenario() -> None:
        ids = await append(settings, [(f"conv:{n % CHANNELS}", "message.new", {"n": n}) for n in range(ROWS)])
        async with Observer(settings.redis_host or "", settings.prefix).running() as observer:
            with relay_processes() as started:
                for kill_after in (ROWS // 10, ROWS // 2)[:kills]:
                    relay = start_relay(tmp_path, env, started)
                    await observer.wait_for(kill_after, timeout=3 * WAIT_S)
                    relay.kill()  # SIGKILL: no cleanup, the batch in flight stays half done
                start_relay(tmp_path, env, started)
                final = await all_published(settings, ROWS, timeout=3 * WAIT_S)
                await observer.wait_for(ROWS)
        seq_of_payload = {row[2]["n"]: row[3] for row in final}
        # Every row was numbered in id order (all were committed before the relay started) ...
        assert [row[3] for row in final] == [row_id - ids[0] + 1 for row_id in ids]
        # ... every row reached Redis, and a frame published twice carries the seq of its row.
        assert {frame["payload"]["n"] for _, frame in observer.frames} == set(range(ROWS))
        assert all(frame["seq"] == seq_of_payload[frame["payload"]["n"]] for _, frame in observer.frames)
        assert _first_seen_seqs_increase_per_channel(observer.frames)
        # A restart repeats at most the one batch the killed relay had numbered.
        assert len(observer.frames) - ROWS <= kills * settings.relay_batch_size

    run(scenario(), timeout=10 * WAIT_S)


def test_a_standby_relay_takes_over_within_seconds_when_the_active_one_is_killed(
        relay_settings: Settings, tmp_path: Path) -> None:
    env = relay_env(relay_settings, relay_settings.redis_host or "")

    async def scenario() -> None:
        async with Observer(relay_settings.redis_host or "", relay_settings.prefix).running() as observer:
            with relay_processes() as started:
                active = start_relay(tmp_path, env, started)
                await eventually(lambda: "this relay is active" in active.log(), "the first relay to lead")
                standby = start_relay(tmp_path, env, started)
                await eventually(lambda: "standing by" in standby.log(), "the second relay to stand by")
                await append(relay_settings, [("conv:1", "message.new", {"n": n}) for n in range(50)])
                await observer.wait_for(50)
                active.kill()
                killed = time.monotonic()
                await append(relay_settings, [("conv:1", "message.new", {"n": 50})])
                await observer.wait_for(51)
                takeover_s = time.monotonic() - killed
                await append(relay_settings, [("conv:1", "message.new", {"n": 51})])
                await observer.wait_for(52)
                await all_published(relay_settings, 52)
                assert "this relay is active" in standby.log()
        # Each row once, in order: never two relays publishing at the same time.
        assert [frame["payload"]["n"] for _, frame in observer.frames] == list(range(52))
        assert observer.seqs() == list(range(1, 53))
        assert takeover_s < 3.0

    run(scenario(), timeout=6 * WAIT_S)


def test_relay_command_without_postgres_or_redis_exits_2_with_one_line(relay_settings: Settings,
                                                                        tmp_path: Path) -> None:
    env = relay_env(relay_settings, "")
    del env["REDIS_HOST"]
    done = subprocess.run([sys.executable, "-m", "tornado_gw", "relay"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=WAIT_S * 4)
    assert done.returncode == 2
    assert done.stderr == "relay: the relay needs both POSTGRES_DSN and REDIS_HOST to be set\n"
