"""``adapters/redis_scripts.py`` against real Redis: a script Redis does not know (as after a
restart or ``SCRIPT FLUSH``) is loaded and its call runs once more, alone; the other
commands of the batch run once; an error of any command is raised."""

from __future__ import annotations

from uuid import uuid4

import pytest
import redis.asyncio as aredis
from redis.exceptions import ResponseError

from tests.support.redis import run
from tornado_gw.adapters.redis_scripts import ScriptPipeline


def _client(redis_host: str) -> aredis.Redis:
    host, _, port = redis_host.rpartition(":")
    return aredis.Redis(host=host, port=int(port))


def test_an_unknown_script_is_loaded_and_nothing_else_runs_twice(redis_host: str, redis_prefix: str) -> None:
    async def scenario() -> None:
        client = _client(redis_host)
        # A body no server has seen, so its first EVALSHA is answered NOSCRIPT.
        script = client.register_script(f"-- {uuid4().hex}\nreturn redis.call('INCR', KEYS[1])")
        counter, calls = f"{redis_prefix}counter", f"{redis_prefix}calls"
        try:
            batch = ScriptPipeline(client)
            batch.pipe.incr(counter)
            batch.script(script, [calls], [])
            batch.pipe.incr(counter)
            batch.script(script, [calls], [])
            assert await batch.execute() == [1, 1, 2, 2]
            assert int(await client.get(counter)) == 2 and int(await client.get(calls)) == 2
        finally:
            await client.delete(counter, calls)
            await client.aclose()

    run(scenario())


def test_an_error_of_any_command_is_raised(redis_host: str, redis_prefix: str) -> None:
    async def scenario() -> None:
        client = _client(redis_host)
        text = f"{redis_prefix}text"
        try:
            await client.set(text, "not a number")
            batch = ScriptPipeline(client)
            batch.script(client.register_script("return 1"), [text], [])
            batch.pipe.incr(text)
            with pytest.raises(ResponseError):
                await batch.execute()
        finally:
            await client.delete(text)
            await client.aclose()

    run(scenario())
