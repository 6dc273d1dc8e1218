"""Cost of the periodic presence refresh on the ordered store lane, against a real Redis.

Run: ``.venv/bin/python -m bench.presence_refresh`` (Redis on 127.0.0.1:6379 or BENCH_REDIS_HOST).
Prints the median of 5 runs of re-joining 2,000 (conversation, connection) entries and of
saving 400 session snapshots: what every instance does every ``presence_ttl_s / 3``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid

from tornado_gw.adapters.redis_snapshots import RedisPresence, RedisSessions
from tornado_gw.core.records import SessionSnapshot
from tornado_gw.settings import Settings

RUNS = 5


async def main() -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    settings = Settings(redis_host=os.environ.get("BENCH_REDIS_HOST", "127.0.0.1:6379"), prefix=prefix)
    presence, sessions = RedisPresence.from_settings(settings), RedisSessions.from_settings(settings)
    entries = [(f"c{i % 100}", f"u{i // 5}", f"p{i // 5}") for i in range(2000)]
    conversations = tuple(f"c{k}" for k in range(5))
    snapshots = [SessionSnapshot(f"s{i}", f"u{i}", conversations, f"p{i}") for i in range(400)]
    rejoin_s, save_s = [], []
    try:
        for _ in range(RUNS):
            started = time.perf_counter()
            await presence.rejoin(entries, time.time() + 90)
            rejoin_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            await sessions.save(snapshots, 200)
            save_s.append(time.perf_counter() - started)
        print(f"rejoin {len(entries)} presence entries: {statistics.median(rejoin_s) * 1000:.1f} ms (median)")
        print(f"save {len(snapshots)} sessions: {statistics.median(save_s) * 1000:.1f} ms (median)")
    finally:
        keys = [key async for key in presence._redis.scan_iter(prefix + "*")]
        if keys:
            await presence._redis.delete(*keys)
        await presence.close()
        await sessions.close()


if __name__ == "__main__":
    asyncio.run(main())
