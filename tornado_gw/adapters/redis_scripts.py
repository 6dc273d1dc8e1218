"""Script calls in one pipeline without a ``SCRIPT EXISTS`` round trip each time.

redis-py's pipelines ask ``SCRIPT EXISTS`` for their scripts before every ``execute``:
a second round trip per batch, as costly to the gateway as the batch itself in a
connection storm. Here scripts go as plain ``EVALSHA``; a call that Redis answers
``NOSCRIPT`` (it restarted or flushed its scripts) has its script loaded and runs once
more, alone, so nothing that succeeded runs twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

ScriptArg = str | int | float


class ScriptPipeline:
    """A non-transactional pipeline: ``script`` queues a call, ``pipe`` takes any other
    command, ``execute`` returns every answer in order or raises the first error."""

    def __init__(self, client: aredis.Redis) -> None:
        self._client = client
        self.pipe = client.pipeline(transaction=False)
        self._scripts: dict[int, tuple[AsyncScript, Sequence[str], Sequence[ScriptArg]]] = {}

    def script(self, script: AsyncScript, keys: Sequence[str], args: Sequence[ScriptArg]) -> None:
        self._scripts[len(self.pipe.command_stack)] = (script, keys, args)
        self.pipe.evalsha(script.sha, len(keys), *keys, *args)

    async def execute(self) -> list[Any]:
        answers = list(await self.pipe.execute(raise_on_error=False))
        for index, answer in enumerate(answers):
            if isinstance(answer, NoScriptError) and index in self._scripts:
                script, keys, args = self._scripts[index]
                answers[index] = await script(keys=keys, args=args, client=self._client)  # loads it
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers
