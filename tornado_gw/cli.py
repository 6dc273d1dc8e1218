"""``python -m tornado_gw [serve|relay|migrate|token|emit|unsubscribe|disconnect] [flags]`` (CONTRACT §1).

Parses the command line, loads Settings and hands over; the work lives in
``server``, ``relay.worker``, ``migrate`` and ``adapters.pg_outbox``, imported
only when their command runs. Exit codes: 0 done, 1 the command failed at run
time (e.g. the gateway is unreachable), 2 bad command line or settings.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tornado_gw.core.ids import conv_channel, is_valid_id, user_channel
from tornado_gw.ports import DependencyUnavailable
from tornado_gw.settings import Settings, SettingsError, load_settings, setting_names

COMMANDS = ("serve", "relay", "migrate", "token", "emit", "unsubscribe", "disconnect")
# Flags of a command that are not settings; every command also takes every setting.
_COMMAND_FLAGS: dict[str, tuple[str, ...]] = {
    "token": ("user", "ttl"),
    "emit": ("conversation", "user", "type", "payload", "url"),
    "unsubscribe": ("user", "conversation", "url"),
    "disconnect": ("user", "reason", "url"),
}
EMIT_TIMEOUT_S = 10.0

USAGE = """\
usage: python -m tornado_gw [COMMAND] [--config PATH] [--SETTING=VALUE ...]

commands:
  serve                          run the gateway (the default)
  relay                          run the outbox relay (Postgres -> Redis)
  migrate                        create the default tables (idempotent)
  token --user U [--ttl S]       print a JWT for U signed with the configured secret
  emit (--conversation C | --user U) --type T [--payload JSON] [--url URL]
                                 publish an event (outbox row with Postgres, else POST /publish)
  unsubscribe --user U --conversation C[,C...] [--url URL]
                                 POST /unsubscribe: U's connections leave those conversations
  disconnect --user U [--reason R] [--url URL]
                                 POST /disconnect: U's connections close with 4010, no resume

Flags take --name=value or --name value; dashes and underscores are the same.
Every setting is also WSGATEWAY_<NAME> in the environment and a key of config/gateway.yaml.
settings: """


class UsageError(Exception):
    """A bad command line; the message is one line."""


@dataclass
class Invocation:
    command: str = "serve"
    flags: dict[str, str] = field(default_factory=dict)
    help: bool = False


def parse_argv(argv: Sequence[str]) -> Invocation:
    """Split ``argv`` into the command and its ``--name=value`` / ``--name value`` flags."""
    args = list(argv)
    invocation = Invocation()
    if args and not args[0].startswith("-"):
        invocation.command = args.pop(0)
        if invocation.command not in COMMANDS:
            expected = ", ".join(COMMANDS)
            raise UsageError(f"unknown command {invocation.command!r} (expected one of {expected})")
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            invocation.help = True
            continue
        if not arg.startswith("--") or arg == "--":
            raise UsageError(f"unexpected argument {arg!r} (flags look like --name=value)")
        name, has_value, value = arg[2:].partition("=")
        name = name.replace("-", "_")
        if not has_value:
            if not args or args[0].startswith("--"):
                raise UsageError(f"flag --{name} needs a value")
            value = args.pop(0)
        if name in invocation.flags:
            raise UsageError(f"flag --{name} given twice")
        invocation.flags[name] = value
    return invocation


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    try:
        invocation = parse_argv(sys.argv[1:] if argv is None else argv)
        if invocation.help:
            print(USAGE + ", ".join(setting_names()))
            return 0
        flags = dict(invocation.flags)
        own = {name: flags.pop(name) for name in _COMMAND_FLAGS.get(invocation.command, ()) if name in flags}
        config_path = flags.pop("config", None)
        settings = load_settings(flags, os.environ if environ is None else environ, config_path)
        return _RUNNERS[invocation.command](settings, own)
    except (UsageError, SettingsError) as exc:
        print(f"tornado_gw: {exc}", file=sys.stderr)
        return 2


def _run_service(module: str) -> Callable[[Settings, Mapping[str, str]], int]:
    """serve, relay and migrate: configure logging, then hand over to ``module.run``."""

    def run(settings: Settings, _flags: Mapping[str, str]) -> int:
        import importlib

        from tornado_gw.logs import configure_logging

        configure_logging(settings)
        result: int = importlib.import_module(module).run(settings)
        return result

    return run


def _token(settings: Settings, flags: Mapping[str, str]) -> int:
    """Print a JWT for ``--user`` (CONTRACT §1), valid ``--ttl`` seconds (default 3600)."""
    from tornado_gw.web.auth import mint_token

    if settings.uses_public_keys:
        raise UsageError("token signs with jwt_secret (HS*); with jwt_public_key or jwt_jwks_url set, "
                         "tokens come from the identity provider that holds the private key")
    user_id = _valid_id(flags, "user")
    ttl_s = _positive(flags.get("ttl", "3600"), "ttl")
    assert settings.jwt_secret is not None  # load_settings resolves it for HS* tokens
    print(mint_token(settings.jwt_secret, user_id, ttl_s, time.time(), settings.jwt_algorithms[0]))
    return 0


def _valid_id(flags: Mapping[str, str], name: str) -> str:
    value = flags.get(name)
    if value is None:
        raise UsageError(f"--{name} is required")
    if not is_valid_id(value):
        raise UsageError(f"--{name}: expected an id of 1-128 letters, digits or -_.:@, got {value!r}")
    return value


def _positive(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UsageError(f"--{name}: expected a positive number of seconds, got {text!r}")
    return value


@dataclass(frozen=True)
class _Emission:
    channel: str
    event_type: str
    payload: dict[str, object]


def _emission(flags: Mapping[str, str]) -> _Emission:
    """Validate emit's flags before anything is written or sent."""
    if ("conversation" in flags) == ("user" in flags):
        raise UsageError("emit needs exactly one of --conversation C or --user U")
    if "conversation" in flags:
        channel = conv_channel(_valid_id(flags, "conversation"))
    else:
        channel = user_channel(_valid_id(flags, "user"))
    event_type = flags.get("type", "")
    if not is_valid_id(event_type):
        raise UsageError(f"--type: expected an event type like message.new, got {event_type!r}")
    try:
        payload = json.loads(flags.get("payload", "{}"))
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"--payload: invalid JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(payload, dict):
        raise UsageError("--payload: expected a JSON object")
    return _Emission(channel, event_type, payload)


def _emit(settings: Settings, flags: Mapping[str, str]) -> int:
    """Append an outbox row (with Postgres) or POST /publish to a running gateway."""
    emission = _emission(flags)
    url = _gateway_url(settings, flags)
    if settings.postgres_dsn is not None:
        return _append_to_outbox(settings, emission)
    body = {"channel": emission.channel, "type": emission.event_type, "payload": emission.payload}
    return _post(settings, url + "/publish", body)


def _unsubscribe(settings: Settings, flags: Mapping[str, str]) -> int:
    """CONTRACT §2 ``POST /unsubscribe`` through the running gateway (it reaches every instance)."""
    user_id = _valid_id(flags, "user")
    conversation_ids = [cid.strip() for cid in flags.get("conversation", "").split(",") if cid.strip()]
    if not conversation_ids:
        raise UsageError("--conversation is required (one id, or several separated by commas)")
    for cid in conversation_ids:
        if not is_valid_id(cid):
            raise UsageError(f"--conversation: expected ids of 1-128 letters, digits or -_.:@, got {cid!r}")
    url = _gateway_url(settings, flags)
    return _post(settings, url + "/unsubscribe", {"user_id": user_id, "conversation_ids": conversation_ids})


def _disconnect(settings: Settings, flags: Mapping[str, str]) -> int:
    """CONTRACT §2 ``POST /disconnect`` through the running gateway (it reaches every instance)."""
    user_id = _valid_id(flags, "user")
    url = _gateway_url(settings, flags)
    return _post(settings, url + "/disconnect", {"user_id": user_id, "reason": flags.get("reason", "")})


def _gateway_url(settings: Settings, flags: Mapping[str, str]) -> str:
    url = flags.get("url", f"http://127.0.0.1:{settings.port}").rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url: expected http://host:port, got {url!r}")
    return url


def _append_to_outbox(settings: Settings, emission: _Emission) -> int:
    from tornado_gw.adapters.pg_outbox import append_event

    try:
        row_id = append_event(settings, emission.channel, emission.event_type, emission.payload)
    except DependencyUnavailable as exc:
        print(f"tornado_gw: cannot append to the outbox: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(json.dumps({"id": row_id}))
    return 0


def _post(settings: Settings, url: str, body: Mapping[str, object]) -> int:
    """POST ``body`` to the server API with the configured key; prints the answer."""
    headers = {"Content-Type": "application/json"}
    if settings.publish_api_key:
        headers["Authorization"] = f"Bearer {settings.publish_api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=EMIT_TIMEOUT_S) as response:
            print(response.read().decode("utf-8", "replace"))
            return 0
    except urllib.error.HTTPError as exc:
        answer = " ".join(exc.read().decode("utf-8", "replace").split())
        print(f"tornado_gw: POST {url} answered {exc.code}: {answer}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"tornado_gw: cannot reach the gateway at {url}: {reason} (is it running?)", file=sys.stderr)
    return 1


_RUNNERS: dict[str, Callable[[Settings, Mapping[str, str]], int]] = {
    "serve": _run_service("tornado_gw.server"),
    "relay": _run_service("tornado_gw.relay.worker"),
    "migrate": _run_service("tornado_gw.migrate"),
    "token": _token,
    "emit": _emit,
    "unsubscribe": _unsubscribe,
    "disconnect": _disconnect,
}
