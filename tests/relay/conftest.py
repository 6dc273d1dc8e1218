"""Fixtures of the relay tests (Postgres fixtures come from tests/support/pg.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tornado_gw.settings import Settings


@pytest.fixture
def relay_settings(pg_settings: Settings, redis_host: str) -> Settings:
    """Migrated tables and a Redis prefix of this test's own, with a short poll interval."""
    return replace(pg_settings, redis_host=redis_host, relay_poll_interval_s=0.2)
