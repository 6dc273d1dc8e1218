"""Frozen settings of one process (CONTRACT §1).

Each setting has one name: the YAML key, the flag (``--idle_timeout_s=2``,
dashes work too) and the environment variable ``WSGATEWAY_`` + NAME. The
seed's environment names (``REDIS_HOST``, ``JWT_SECRET``, ...) are accepted as
aliases. Precedence: flags > environment > YAML file > defaults.

Rules of ``load_settings``:
1. Every value is parsed and checked by the parser of its setting; a bad one
   raises ``SettingsError`` whose one-line message names the setting and where
   the value came from. Nothing is silently ignored except empty environment
   variables (``REDIS_HOST=`` means unset, as docker-compose writes it).
2. ``authorization`` not given anywhere resolves to ``members`` when
   ``postgres_dsn`` is set, else ``none``.
3. ``MODE=production`` refuses to start without ``jwt_secret`` (or one under
   ``MIN_PRODUCTION_SECRET_BYTES``) for HS* tokens, and without a membership
   source unless ``authorization: none`` was given explicitly; development mode
   falls back to ``DEVELOPMENT_JWT_SECRET`` (serve warns).
4. ``jwt_algorithms`` are all HS* (checked with ``jwt_secret``) or all public-key
   ones (checked with ``jwt_public_key`` or ``jwt_jwks_url``), never a mix
   (CONTRACT §3 v2): a token must not choose which kind of key checks it.
5. ``workers`` above 1 needs ``redis_host``: the worker processes are separate
   instances and only Redis lets them share subscribers, presence and sessions.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from tornado_gw.core.state import Limits

DEVELOPMENT_JWT_SECRET = "tornado-gw-development-secret"
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA")
MIN_PRODUCTION_SECRET_BYTES = 32
DEFAULT_JWT_ALGORITHMS = ("HS256",)
DEFAULT_CONFIG_PATH = os.path.join("config", "gateway.yaml")


class SettingsError(Exception):
    """A bad or missing setting. ``str()`` is one line naming it; ``setting`` is the name."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"invalid setting {setting}: {problem}")
        self.setting = setting


_CORE = Limits()  # the core's limits keep their defaults in one place: core/state.py


@dataclass(frozen=True, slots=True)
class Settings:
    port: int = 8081
    workers: int = 1
    prefix: str = "ws:"
    auth_timeout_s: float = _CORE.auth_timeout_s
    idle_timeout_s: float = _CORE.idle_timeout_s
    typing_ttl_s: float = _CORE.typing_ttl_s
    presence_ttl_s: float = _CORE.presence_ttl_s
    presence_grace_s: float = _CORE.presence_grace_s
    resume_window_s: float = _CORE.resume_window_s
    max_frame_bytes: int = 8192
    max_subscriptions: int = _CORE.max_subscriptions
    rate_limit_per_s: float = _CORE.rate_limit_per_s
    rate_limit_burst: int = _CORE.rate_limit_burst
    outbound_buffer_bytes: int = 1048576
    replay_max_events: int = _CORE.replay_max_events
    presence_batch_ms: float = _CORE.presence_batch_ms
    presence_list_max: int = _CORE.presence_list_max
    presence_count_interval_s: float = _CORE.presence_count_interval_s
    shutdown_timeout_s: float = 10.0
    jwt_algorithms: tuple[str, ...] = DEFAULT_JWT_ALGORITHMS
    jwt_leeway_s: float = 10.0
    jwt_secret: str | None = None
    jwt_public_key: str | None = None  # PEM text (a path is read by the parser)
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    max_connections_per_user: int = _CORE.max_connections_per_user
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
    jwks_refetch_interval_s: float = 30.0
    relay_batch_size: int = 500
    relay_poll_interval_s: float = 1.0
    outbox_retention_s: float = 86400.0

    @property
    def redis_address(self) -> tuple[str, int]:
        """``(host, port)`` of ``redis_host``; an IPv6 host loses its brackets (``[::1]:6379``).

        Raises:
            ValueError: ``redis_host`` is not set.
        """
        if not self.redis_host:
            raise ValueError("redis_host is not set")
        host, _, port = self.redis_host.rpartition(":")
        return host.removeprefix("[").removesuffix("]"), int(port)

    @property
    def uses_development_secret(self) -> bool:
        """Tokens are checked with the public development secret: serve must warn loudly."""
        return self.jwt_secret == DEVELOPMENT_JWT_SECRET

    @property
    def uses_public_keys(self) -> bool:
        """Tokens are RS*/ES*/EdDSA, checked with ``jwt_public_key`` or ``jwt_jwks_url``."""
        return self.jwt_public_key is not None or self.jwt_jwks_url is not None

    @property
    def require_exp(self) -> bool:
        """CONTRACT §3: ``exp`` is required in production mode."""
        return self.mode == "production"


class _Rejected(ValueError):
    """Raised by a parser with what the value should have been ("a positive number")."""


Parser = Callable[[object], Any]


def _as_number(raw: object, integer: bool) -> float | None:
    """A YAML number or a string from flags/environment; None when it is neither (or a bool)."""
    if isinstance(raw, str):
        try:
            return int(raw.strip()) if integer else float(raw.strip())
        except ValueError:
            return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or (integer and isinstance(raw, float)):
        return None
    return raw


def _number(allow_zero: bool = False) -> Parser:
    expected = "a number >= 0" if allow_zero else "a positive number"

    def parse(raw: object) -> float:
        value = _as_number(raw, integer=False)
        if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise _Rejected(expected)
        return float(value)

    return parse


def _integer(low: int, high: int | None = None) -> Parser:
    if high is not None:
        expected = f"an integer from {low} to {high}"
    else:
        expected = "a positive integer" if low == 1 else f"an integer >= {low}"

    def parse(raw: object) -> int:
        value = _as_number(raw, integer=True)
        if value is None or value < low or (high is not None and value > high):
            raise _Rejected(expected)
        return int(value)

    return parse


def _choice(*choices: str, aliases: Mapping[str, str] | None = None) -> Parser:
    expected = ", ".join(choices[:-1]) + " or " + choices[-1]

    def parse(raw: object) -> str:
        if not isinstance(raw, str):
            raise _Rejected(expected)
        value = raw.strip().lower()
        value = (aliases or {}).get(value, value)
        if value not in choices:
            raise _Rejected(expected)
        return value

    return parse


def _matching(pattern: str, expected: str) -> Parser:
    regex = re.compile(pattern)

    def parse(raw: object) -> str:
        if not isinstance(raw, str) or regex.fullmatch(raw) is None:
            raise _Rejected(expected)
        return raw

    return parse


def _optional_text(raw: object) -> str | None:
    """Secrets and DSNs: kept exactly as given; empty means unset."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise _Rejected("a string")
    return raw


# Postgres names are at most 63 bytes, and the longest name derived from a table name
# ("<outbox>_unpublished_idx", adapters/pg_sql.py) adds 16 characters.
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,46}")
TABLE_NAME_EXPECTED = "an SQL identifier of letters, digits and _ (not starting with a digit, at most 47)"
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


def _redis_host(raw: object) -> str | None:
    value = _optional_text(raw)
    if value is None:
        return None
    match = _HOST_PORT.fullmatch(value.strip())
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise _Rejected("host:port with a port from 1 to 65535, e.g. localhost:6379")
    return value.strip()


def _items(raw: object, expected: str) -> list[str]:
    """A comma-separated string (flags, environment) or a YAML list of strings."""
    if isinstance(raw, str):
        parts: list[object] = list(raw.split(","))
    elif isinstance(raw, (list, tuple)):
        parts = list(raw)
    else:
        raise _Rejected(expected)
    texts = [part.strip() for part in parts if isinstance(part, str)]
    if len(texts) != len(parts):
        raise _Rejected(expected)
    return [text for text in texts if text]


_ALGORITHMS = {name.upper(): name for name in HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS}


def _algorithms(raw: object) -> tuple[str, ...]:
    expected = f"a comma-separated list of {', '.join(_ALGORITHMS.values())}"
    values = tuple(_ALGORITHMS.get(item.upper(), "") for item in _items(raw, expected))
    if not values or not all(values):
        raise _Rejected(expected)
    return values


_PEM_BEGIN = "-----BEGIN "


def _public_key(raw: object) -> str | None:
    """PEM text as given, or the PEM text of the file it names (read once, at start-up)."""
    value = _optional_text(raw)
    if value is None or value.lstrip().startswith(_PEM_BEGIN):
        return value
    try:
        with open(value, encoding="ascii") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError):
        raise _Rejected("PEM text or the path of a readable PEM file") from None
    if _PEM_BEGIN not in text:
        raise _Rejected("PEM text or the path of a PEM file (no '-----BEGIN' in the file)")
    return text


def _url(raw: object) -> str | None:
    value = _optional_text(raw)
    if value is not None and re.fullmatch(r"https?://[^\s/]+(/\S*)?", value) is None:
        raise _Rejected("an http:// or https:// URL")
    return value


_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s]+")


def _origins(raw: object) -> tuple[str, ...]:
    expected = "comma-separated origins like https://app.example.com (scheme://host[:port], no path)"
    values = tuple(_items(raw, expected))
    if any(_ORIGIN.fullmatch(value) is None for value in values):
        raise _Rejected(expected)
    return values


_SECONDS = _number()

_PARSERS: dict[str, Parser] = {
    "port": _integer(1, 65535),
    "workers": _integer(1, 256),
    "prefix": _matching(r"[A-Za-z0-9_.:-]+", "a non-empty string of letters, digits and _.:-"),
    "auth_timeout_s": _SECONDS,
    "idle_timeout_s": _SECONDS,
    "typing_ttl_s": _SECONDS,
    "presence_ttl_s": _SECONDS,
    "presence_grace_s": _number(allow_zero=True),
    "resume_window_s": _SECONDS,
    "max_frame_bytes": _integer(1),
    "max_subscriptions": _integer(1),
    "rate_limit_per_s": _SECONDS,
    "rate_limit_burst": _integer(1),
    "outbound_buffer_bytes": _integer(1),
    "replay_max_events": _integer(1),
    "presence_batch_ms": _SECONDS,
    "presence_list_max": _integer(0),
    "presence_count_interval_s": _SECONDS,
    "shutdown_timeout_s": _SECONDS,
    "jwt_algorithms": _algorithms,
    "jwt_leeway_s": _number(allow_zero=True),
    "jwt_secret": _optional_text,
    "jwt_public_key": _public_key,
    "jwt_jwks_url": _url,
    "jwt_audience": _optional_text,
    "jwt_issuer": _optional_text,
    "max_connections_per_user": _integer(0),
    "authorization": _choice("members", "none"),
    "outbox_table": _matching(TABLE_NAME.pattern, TABLE_NAME_EXPECTED),
    "members_table": _matching(TABLE_NAME.pattern, TABLE_NAME_EXPECTED),
    "allowed_origins": _origins,
    "redis_host": _redis_host,
    "redis_password": _optional_text,
    "redis_database": _integer(0),
    "postgres_dsn": _optional_text,
    "publish_api_key": _optional_text,
    "mode": _choice("development", "production"),
    "logger_level": _choice(
        "debug", "info", "warning", "error", "critical", aliases={"warn": "warning", "fatal": "critical"}
    ),
    "logger_encoding": _choice("console", "json"),
    "tick_interval_s": _SECONDS,
    "memory_log_events": _integer(1),
    "membership_cache_s": _number(allow_zero=True),
    "probe_interval_s": _SECONDS,
    "probe_timeout_s": _SECONDS,
    "jwks_refetch_interval_s": _SECONDS,
    "relay_batch_size": _integer(1),
    "relay_poll_interval_s": _SECONDS,
    "outbox_retention_s": _SECONDS,
}

_SECRETS = frozenset({"jwt_secret", "redis_password", "postgres_dsn", "publish_api_key"})

# CONTRACT §1: the seed's environment names, used when WSGATEWAY_<NAME> is absent.
_SEED_ALIASES = {
    "redis_host": "REDIS_HOST",
    "redis_password": "REDIS_PASSWORD",
    "redis_database": "REDIS_DATABASE",
    "postgres_dsn": "POSTGRES_DSN",
    "jwt_secret": "JWT_SECRET",
    "logger_level": "LOGGER_LEVEL",
    "logger_encoding": "LOGGER_ENCODING",
    "mode": "MODE",
    "publish_api_key": "PUBLISH_API_KEY",
    "jwt_public_key": "JWT_PUBLIC_KEY",
    "jwt_jwks_url": "JWT_JWKS_URL",
}

Sourced = dict[str, tuple[object, str]]  # name -> (raw value, "from <where>")


def setting_names() -> tuple[str, ...]:
    """Every setting name, in declaration order (for help texts and the YAML file)."""
    return tuple(_PARSERS)


def load_settings(
    options: Mapping[str, str], environ: Mapping[str, str], config_path: str | None
) -> Settings:
    """Build the Settings of this process (CONTRACT §1).

    Args:
        options: flag values by name (dashes or underscores), not yet parsed.
        environ: usually ``os.environ``.
        config_path: a YAML file; None means ``config/gateway.yaml`` if it exists in the cwd.

    Raises:
        SettingsError: one line naming the bad, unknown or missing setting.
    """
    raw: Sourced = {}
    raw.update(_from_yaml(_config_file(config_path)))
    raw.update(_from_environ(environ))
    raw.update(_from_options(options))
    values = {name: _parse(name, value, source) for name, (value, source) in raw.items()}
    _check_token_keys(values, {name: source for name, (_, source) in raw.items()})
    return _resolve(values)


def _parse(name: str, raw: object, source: str) -> Any:
    try:
        return _PARSERS[name](raw)
    except _Rejected as exc:
        shown = f"a value of type {type(raw).__name__}" if name in _SECRETS else _shown(raw)
        raise SettingsError(name, f"expected {exc}, got {shown} ({source})") from None


def _shown(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown(name: str, source: str) -> SettingsError:
    close = difflib.get_close_matches(name, _PARSERS, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return SettingsError(name, f"no such setting ({source}){hint}")


def _config_file(config_path: str | None) -> str | None:
    if config_path is None:
        return DEFAULT_CONFIG_PATH if os.path.isfile(DEFAULT_CONFIG_PATH) else None
    if not os.path.isfile(config_path):
        raise SettingsError("config", f"no such file {config_path!r}")
    return config_path


def _from_yaml(path: str | None) -> Sourced:
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as stream:
            document = yaml.safe_load(stream)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SettingsError("config", f"cannot read {path}: {' '.join(str(exc).split())}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise SettingsError("config", f"{path} must be a mapping of setting: value")
    for key in document:
        if key not in _PARSERS:
            raise _unknown(str(key), f"in {path}")
    return {key: (value, f"from {path}") for key, value in document.items()}


def _from_environ(environ: Mapping[str, str]) -> Sourced:
    found: Sourced = {}
    for name in _PARSERS:
        for variable in (f"WSGATEWAY_{name.upper()}", _SEED_ALIASES.get(name)):
            if variable and environ.get(variable, "") != "":
                found[name] = (environ[variable], f"from {variable}")
                break
    return found


def _from_options(options: Mapping[str, str]) -> Sourced:
    found: Sourced = {}
    for key, value in options.items():
        name = key.replace("-", "_")
        if name not in _PARSERS:
            raise _unknown(name, f"flag --{key}")
        found[name] = (value, f"from flag --{name}")
    return found


def _resolve(values: dict[str, Any]) -> Settings:
    """Derived values and the cross-setting rules 2 to 4 of the module docstring."""
    explicit_authorization = "authorization" in values
    has_postgres = values.get("postgres_dsn") is not None
    production = values.get("mode") == "production"
    if not explicit_authorization:
        values["authorization"] = "members" if has_postgres else "none"
    elif values["authorization"] == "members" and not has_postgres:
        raise SettingsError("authorization", "members needs postgres_dsn (POSTGRES_DSN) for members_table")
    if values.get("workers", 1) > 1 and values.get("redis_host") is None:
        raise SettingsError("workers", "more than one worker needs redis_host (REDIS_HOST) to share clients' "
                                       "subscriptions, presence and sessions")
    secret = values.get("jwt_secret")
    hmac_tokens = values.get("jwt_public_key") is None and values.get("jwt_jwks_url") is None
    if production and hmac_tokens and secret is None:
        raise SettingsError("jwt_secret", "required in production mode (set JWT_SECRET)")
    if production and secret == DEVELOPMENT_JWT_SECRET:
        raise SettingsError("jwt_secret", "the public development secret cannot be used in production mode")
    if production and hmac_tokens and secret is not None \
            and len(secret.encode()) < MIN_PRODUCTION_SECRET_BYTES:
        raise SettingsError("jwt_secret", f"must be at least {MIN_PRODUCTION_SECRET_BYTES} bytes in "
                            "production mode: a shorter HS* secret can be brute-forced from one token")
    if production and not explicit_authorization and not has_postgres:
        raise SettingsError(
            "authorization",
            "production mode needs a membership source: set postgres_dsn (POSTGRES_DSN), "
            "or set authorization to none explicitly to let any user subscribe to any conversation",
        )
    if secret is None and hmac_tokens:
        values["jwt_secret"] = DEVELOPMENT_JWT_SECRET
    return Settings(**values)


def _check_token_keys(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """Rule 4 of the module docstring: one kind of key checks every token."""
    algorithms = values.get("jwt_algorithms", DEFAULT_JWT_ALGORITHMS)
    public = [name for name in algorithms if name in PUBLIC_KEY_ALGORITHMS]
    keys = [name for name in ("jwt_public_key", "jwt_jwks_url") if values.get(name) is not None]
    where = f"got {','.join(algorithms)!r} ({sources.get('jwt_algorithms', 'by default')})"
    if public and len(public) < len(algorithms):
        raise SettingsError("jwt_algorithms", "HS* and public-key algorithms cannot be mixed: HS* tokens are "
                            f"checked with the shared jwt_secret, the others with a public key; {where}")
    if public and not keys:
        raise SettingsError("jwt_algorithms",
                            f"public-key algorithms need jwt_public_key or jwt_jwks_url; {where}")
    if keys and not public:
        raise SettingsError("jwt_algorithms", f"with {keys[0]} set, list public-key algorithms "
                            f"({', '.join(PUBLIC_KEY_ALGORITHMS)}), not HS*; {where}")
    if len(keys) == 2:
        raise SettingsError("jwt_jwks_url", "set jwt_public_key or jwt_jwks_url, not both")
