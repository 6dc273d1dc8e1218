"""Frozen settings of one process (CONTRACT §1).

Each setting has one name: the YAML key, the flag (``--idle_timeout_s=2``,
dashes work too) and the environment variable ``WSGATEWAY_`` + NAME. The
seed's environment names (``REDIS_HOST``, ``JWT_SECRET``, ...) are accepted as
aliases. Precedence: flags > environment > YAML file > defaults.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settings:
    port: int = 8081
    prefix: str = "ws:"
    auth_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    typing_ttl_s: float = 10.0
    presence_ttl_s: float = 90.0
    presence_grace_s: float = 15.0
    resume_window_s: float = 120.0
    max_frame_bytes: int = 8192
    max_subscriptions: int = 500
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 100
    outbound_buffer_bytes: int = 1048576
    replay_max_events: int = 1000
    shutdown_timeout_s: float = 10.0
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_leeway_s: float = 10.0
    jwt_secret: str | None = None
    authorization: str = "none"  # resolved: "members" when postgres_dsn is set and not given
    outbox_table: str = "outbox"
    members_table: str = "conversation_members"
    allowed_origins: tuple[str, ...] = ()
    redis_host: str | None = None
    redis_password: str | None = None
    redis_database: int = 0
    postgres_dsn: str | None = None
    publish_api_key: str | None = None
    mode: str = "development"
    logger_level: str = "info"
    logger_encoding: str = "console"
    tick_interval_s: float = 1.0
    memory_log_events: int = 10000
    membership_cache_s: float = 5.0
    probe_interval_s: float = 5.0
    probe_timeout_s: float = 3.0
    relay_batch_size: int = 500
    relay_poll_interval_s: float = 1.0
    outbox_retention_s: float = 86400.0
