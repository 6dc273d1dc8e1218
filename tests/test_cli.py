"""``python -m tornado_gw`` as an operator runs it: token, emit, start-up errors, logging."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tornado_gw.cli import UsageError, parse_argv
from tornado_gw.logs import configure_logging
from tornado_gw.settings import DEVELOPMENT_JWT_SECRET, Settings
from tornado_gw.web.auth import verify_token

PYTHON = sys.executable  # the interpreter running the tests, so the code under test is this checkout
TIMEOUT_S = 30.0 * float(os.environ.get("TEST_TIMEOUT_SCALE", "1"))
_OUR_VARIABLES = ("REDIS_", "POSTGRES_DSN", "JWT_SECRET", "LOGGER_", "MODE", "PUBLISH_API_KEY", "WSGATEWAY_")


@dataclass
class Run:
    code: int
    stdout: str
    stderr_lines: list[str]


def _run(tmp_path: Path, *args: str, **environ: str) -> Run:
    """Run the CLI in an empty directory (no config/gateway.yaml) with only ``environ`` of ours."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(_OUR_VARIABLES)}
    env.update(environ)
    done = subprocess.run(
        [PYTHON, "-m", "tornado_gw", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=TIMEOUT_S,
    )
    return Run(done.returncode, done.stdout, done.stderr.splitlines())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Publisher:
    """A real HTTP server standing in for the gateway's POST /publish."""

    status: int = 202
    answer: bytes = b'{"seq": 1}'
    requests: list[tuple[str, str | None, bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def publisher() -> Iterator[Publisher]:
    state = Publisher()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append((self.path, self.headers.get("Authorization"), body))
            self.send_response(state.status)
            self.send_header("Content-Length", str(len(state.answer)))
            self.end_headers()
            self.wfile.write(state.answer)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test asserts on the requests instead."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(TIMEOUT_S)


def test_token_verifies_with_the_development_secret(tmp_path: Path) -> None:
    before = time.time()
    run = _run(tmp_path, "token", "--user", "alice")
    assert run.code == 0, run.stderr_lines
    claims = verify_token(run.stdout.strip(), secret=DEVELOPMENT_JWT_SECRET, algorithms=["HS256"],
                          leeway_s=0, require_exp=True, now=time.time())
    assert claims.user_id == "alice"
    assert claims.expires_at is not None and before + 3600 <= claims.expires_at <= time.time() + 3600


def test_token_uses_configured_secret_algorithm_and_ttl(tmp_path: Path) -> None:
    secret = "s" * 64
    run = _run(tmp_path, "token", "--user=bob", "--ttl=60", "--jwt-algorithms=HS384", JWT_SECRET=secret)
    assert run.code == 0, run.stderr_lines
    claims = verify_token(run.stdout.strip(), secret=secret, algorithms=["HS384"], leeway_s=0,
                          require_exp=True, now=time.time())
    assert claims.user_id == "bob" and claims.expires_at is not None
    assert claims.expires_at <= time.time() + 60


def test_token_with_public_keys_configured_exits_2_saying_who_mints(tmp_path: Path) -> None:
    run = _run(tmp_path, "token", "--user", "alice", "--jwt-algorithms=RS256",
               JWT_JWKS_URL="https://idp.example/jwks.json")
    assert (run.code, run.stdout) == (2, "")
    assert len(run.stderr_lines) == 1 and "identity provider" in run.stderr_lines[0]


def test_production_without_jwt_secret_exits_2_naming_it(tmp_path: Path) -> None:
    run = _run(tmp_path, "token", "--user", "alice", MODE="production")
    assert (run.code, run.stdout) == (2, "")
    assert len(run.stderr_lines) == 1 and "jwt_secret" in run.stderr_lines[0]
    assert run.stderr_lines[0].startswith("tornado_gw: ")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("token", "--user", "alice", "--idle-timeout-s=abc"), "idle_timeout_s"),
        (("token", "--user", "alice", "--port", "70000"), "port"),
        (("token", "--user", "alice", "--bogus=1"), "bogus"),
        (("token", "--user", "a b"), "--user"),
        (("token", "--user", "alice", "--ttl", "soon"), "--ttl"),
        (("token",), "--user"),
        (("launch",), "launch"),
        (("token", "--user"), "--user"),
        (("--config", "missing.yaml"), "missing.yaml"),
    ],
)
def test_bad_command_line_exits_2_with_one_line(tmp_path: Path, args: tuple[str, ...], named: str) -> None:
    run = _run(tmp_path, *args)
    assert run.code == 2
    assert len(run.stderr_lines) == 1 and named in run.stderr_lines[0]


@pytest.mark.parametrize("command", ["serve", "relay", "migrate"])
def test_a_table_name_postgres_cannot_index_exits_2_with_one_line(tmp_path: Path, command: str) -> None:
    """Settings allowed 63 characters, the SQL module 48: serve died with a traceback (issue 9 §10)."""
    run = _run(tmp_path, command, f"--outbox_table={'o' * 48}", JWT_SECRET="s" * 40,
               POSTGRES_DSN="postgresql://root@127.0.0.1:1/none", REDIS_HOST="127.0.0.1:1")
    assert run.code == 2 and len(run.stderr_lines) == 1, run.stderr_lines
    assert "outbox_table" in run.stderr_lines[0] and "at most 47" in run.stderr_lines[0]


def test_environment_value_error_names_the_variable(tmp_path: Path) -> None:
    run = _run(tmp_path, "token", "--user", "alice", WSGATEWAY_IDLE_TIMEOUT_S="0")
    assert run.code == 2 and run.stderr_lines == [
        "tornado_gw: invalid setting idle_timeout_s: expected a positive number, got '0' "
        "(from WSGATEWAY_IDLE_TIMEOUT_S)"
    ]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--conversation", "c1", "--type", "message.new", "--payload", "{not json"), "--payload"),
        (("--conversation", "c1", "--type", "message.new", "--payload", "[1, 2]"), "--payload"),
        (("--conversation", "c1", "--user", "u1", "--type", "message.new"), "exactly one"),
        (("--type", "message.new"), "exactly one"),
        (("--conversation", "conv:*", "--type", "message.new"), "--conversation"),
        (("--conversation", "c1", "--type", ""), "--type"),
        (("--conversation", "c1"), "--type"),
    ],
)
def test_emit_bad_input_exits_2(
    tmp_path: Path, publisher: Publisher, args: tuple[str, ...], named: str
) -> None:
    run = _run(tmp_path, "emit", "--url", publisher.url, *args)
    assert run.code == 2 and len(run.stderr_lines) == 1 and named in run.stderr_lines[0]
    assert publisher.requests == []


def test_emit_bad_url_exits_2(tmp_path: Path) -> None:
    run = _run(tmp_path, "emit", "--user", "u1", "--type", "notice", "--url", "ftp://host")
    assert run.code == 2 and len(run.stderr_lines) == 1 and "--url" in run.stderr_lines[0]


def test_emit_against_nothing_listening_exits_1(tmp_path: Path) -> None:
    port = _free_port()
    run = _run(tmp_path, "emit", "--conversation", "c1", "--type", "message.new", "--payload", "{}",
               WSGATEWAY_PORT=str(port))
    assert run.code == 1 and run.stdout == ""
    assert len(run.stderr_lines) == 1
    assert f"127.0.0.1:{port}" in run.stderr_lines[0] and "refused" in run.stderr_lines[0].lower()


def test_emit_with_unreachable_postgres_exits_1(tmp_path: Path, publisher: Publisher) -> None:
    dsn = f"postgresql://root@127.0.0.1:{_free_port()}/postgres"
    run = _run(tmp_path, "emit", "--user", "u1", "--type", "notice", "--url", publisher.url, POSTGRES_DSN=dsn)
    assert run.code == 1 and run.stdout == "" and len(run.stderr_lines) == 1
    assert "outbox" in run.stderr_lines[0]
    assert publisher.requests == []  # with Postgres, emit writes the outbox, never POST /publish


def test_emit_posts_to_publish(tmp_path: Path, publisher: Publisher) -> None:
    run = _run(tmp_path, "emit", "--conversation", "c1", "--type", "message.new",
               "--payload", '{"message": {"id": "m1"}}', "--url", publisher.url, PUBLISH_API_KEY="k1")
    assert run.code == 0, run.stderr_lines
    assert json.loads(run.stdout) == {"seq": 1}
    path, authorization, body = publisher.requests[0]
    assert (path, authorization) == ("/publish", "Bearer k1")
    assert json.loads(body) == {
        "channel": "conv:c1", "type": "message.new", "payload": {"message": {"id": "m1"}},
    }


def test_emit_to_user_channel_without_key_sends_no_authorization(
    tmp_path: Path, publisher: Publisher
) -> None:
    run = _run(tmp_path, "emit", "--user", "u1", "--type", "notice", "--url", publisher.url + "/")
    assert run.code == 0, run.stderr_lines
    path, authorization, body = publisher.requests[0]
    assert (path, authorization, json.loads(body)["channel"]) == ("/publish", None, "user:u1")


def test_emit_refused_by_gateway_exits_1_with_status(tmp_path: Path, publisher: Publisher) -> None:
    publisher.status, publisher.answer = 403, b'{"error": "forbidden"}'
    run = _run(tmp_path, "emit", "--user", "u1", "--type", "notice", "--url", publisher.url)
    assert run.code == 1 and len(run.stderr_lines) == 1
    assert "403" in run.stderr_lines[0] and "forbidden" in run.stderr_lines[0]


def test_help_lists_commands_and_settings(tmp_path: Path) -> None:
    run = _run(tmp_path, "--help")
    assert run.code == 0
    assert "emit" in run.stdout and "idle_timeout_s" in run.stdout


def test_parse_argv_accepts_both_flag_forms() -> None:
    invocation = parse_argv(["emit", "--type=a.b", "--user", "u1", "--idle-timeout-s", "2"])
    assert invocation.command == "emit"
    assert invocation.flags == {"type": "a.b", "user": "u1", "idle_timeout_s": "2"}
    assert parse_argv(["--port=9000"]).command == "serve"


@pytest.mark.parametrize("argv", [["--port=1", "--port=2"], ["serve", "extra"], ["-p", "1"], ["--port"]])
def test_parse_argv_refuses(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_argv(argv)


@pytest.fixture
def log_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[str]]]:
    """What configure_logging wrote to stderr; the root logger is restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield lambda: capsys.readouterr().err.splitlines()
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


def test_json_logging_is_one_object_per_line_with_extras(log_lines: Callable[[], list[str]]) -> None:
    configure_logging(Settings(logger_encoding="json", logger_level="debug"))
    configure_logging(Settings(logger_encoding="json", logger_level="debug"))
    logging.getLogger("tornado_gw.test").debug("closed", extra={"conn_id": "c7", "user_id": "alice"})
    lines = log_lines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert {key: entry[key] for key in ("level", "logger", "message", "conn_id", "user_id")} == {
        "level": "debug", "logger": "tornado_gw.test", "message": "closed",
        "conn_id": "c7", "user_id": "alice",
    }
    assert entry["ts"].endswith("Z")


def test_console_logging_is_one_readable_line_and_honours_level(log_lines: Callable[[], list[str]]) -> None:
    configure_logging(Settings(logger_level="warning"))
    logger = logging.getLogger("tornado_gw.test")
    logger.info("hidden")
    logger.warning("slow consumer %s", "c7", extra={"conn_id": "c7"})
    lines = log_lines()
    assert len(lines) == 1
    assert lines[0].endswith("WARNING tornado_gw.test: slow consumer c7 conn_id=c7")
