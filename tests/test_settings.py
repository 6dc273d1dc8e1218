"""Settings as an operator meets them: precedence, aliases, one-line errors (CONTRACT §1)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from tornado_gw.settings import (
    DEVELOPMENT_JWT_SECRET,
    Settings,
    SettingsError,
    load_settings,
    setting_names,
)

SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config" / "gateway.yaml"


def _yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _error(options: dict[str, str], environ: dict[str, str], config: str | None = None) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        load_settings(options, environ, config)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"invalid setting {caught.value.setting}: ")
    return caught.value


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without config/gateway.yaml."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_without_any_source(empty_cwd: Path) -> None:
    settings = load_settings({}, {}, None)
    assert settings == Settings(jwt_secret=DEVELOPMENT_JWT_SECRET)
    assert settings.authorization == "none"
    assert settings.uses_development_secret
    assert not settings.require_exp


def test_shipped_config_changes_nothing(empty_cwd: Path) -> None:
    assert load_settings({}, {}, str(SHIPPED_CONFIG)) == load_settings({}, {}, None)


def test_shipped_config_lists_every_setting() -> None:
    text = SHIPPED_CONFIG.read_text(encoding="utf-8")
    listed = set(re.findall(r"^#? ?([a-z_0-9]+):", text, flags=re.MULTILINE))
    assert listed == set(setting_names()) == {f.name for f in dataclasses.fields(Settings)}


def test_shipped_config_does_not_set_authorization_explicitly() -> None:
    with_postgres = load_settings({}, {"POSTGRES_DSN": "postgresql://db/x"}, str(SHIPPED_CONFIG))
    assert with_postgres.authorization == "members"
    production = {"MODE": "production", "JWT_SECRET": "s" * 32}
    assert _error({}, production, str(SHIPPED_CONFIG)).setting == "authorization"


def test_default_config_file_is_read_from_cwd(empty_cwd: Path) -> None:
    (empty_cwd / "config").mkdir()
    (empty_cwd / "config" / "gateway.yaml").write_text("idle_timeout_s: 7\n", encoding="utf-8")
    assert load_settings({}, {}, None).idle_timeout_s == 7.0


@pytest.mark.parametrize(
    ("name", "yaml_value", "env_value", "flag_value", "parsed"),
    [
        ("idle_timeout_s", "5", "6", "7", (5.0, 6.0, 7.0)),
        ("port", "9001", "9002", "9003", (9001, 9002, 9003)),
        ("prefix", '"a:"', "b:", "c:", ("a:", "b:", "c:")),
        ("jwt_algorithms", "[HS384]", "HS512", "HS256,HS384", (("HS384",), ("HS512",), ("HS256", "HS384"))),
        ("logger_level", "debug", "error", "warning", ("debug", "error", "warning")),
    ],
)
def test_flags_beat_environment_beat_yaml_beat_defaults(
    tmp_path: Path, name: str, yaml_value: str, env_value: str, flag_value: str, parsed: tuple[object, ...]
) -> None:
    config = _yaml(tmp_path, f"{name}: {yaml_value}\n")
    environ = {f"WSGATEWAY_{name.upper()}": env_value}
    assert getattr(load_settings({}, {}, config), name) == parsed[0]
    assert getattr(load_settings({}, environ, config), name) == parsed[1]
    assert getattr(load_settings({name: flag_value}, environ, config), name) == parsed[2]


def test_flags_accept_dashes(empty_cwd: Path) -> None:
    assert load_settings({"idle-timeout-s": "2"}, {}, None).idle_timeout_s == 2.0


@pytest.mark.parametrize(
    ("variable", "value", "name", "parsed"),
    [
        ("WSGATEWAY_PORT", "9100", "port", 9100),
        ("REDIS_HOST", "redis.local:6380", "redis_host", "redis.local:6380"),
        ("REDIS_PASSWORD", "pw", "redis_password", "pw"),
        ("REDIS_DATABASE", "3", "redis_database", 3),
        ("POSTGRES_DSN", "postgresql://u@db/x", "postgres_dsn", "postgresql://u@db/x"),
        ("JWT_SECRET", "k" * 40, "jwt_secret", "k" * 40),
        ("LOGGER_LEVEL", "DEBUG", "logger_level", "debug"),
        ("LOGGER_LEVEL", "warn", "logger_level", "warning"),
        ("LOGGER_ENCODING", "json", "logger_encoding", "json"),
        ("MODE", "development", "mode", "development"),
        ("PUBLISH_API_KEY", "key", "publish_api_key", "key"),
        ("WSGATEWAY_ALLOWED_ORIGINS", "https://a.example, http://b.example:8080", "allowed_origins",
         ("https://a.example", "http://b.example:8080")),
    ],
)
def test_seed_environment_names(
    empty_cwd: Path, variable: str, value: str, name: str, parsed: object
) -> None:
    assert getattr(load_settings({}, {variable: value}, None), name) == parsed


def test_wsgateway_name_beats_seed_alias(empty_cwd: Path) -> None:
    environ = {"REDIS_HOST": "alias:1", "WSGATEWAY_REDIS_HOST": "canonical:2"}
    assert load_settings({}, environ, None).redis_host == "canonical:2"


def test_empty_environment_variable_means_unset(empty_cwd: Path) -> None:
    settings = load_settings({}, {"REDIS_HOST": "", "JWT_SECRET": "", "WSGATEWAY_PORT": ""}, None)
    assert (settings.redis_host, settings.port, settings.uses_development_secret) == (None, 8081, True)


def test_lists_from_yaml(tmp_path: Path) -> None:
    config = _yaml(tmp_path, "allowed_origins: [https://a.example]\njwt_algorithms: [HS256, HS512]\n")
    settings = load_settings({}, {}, config)
    assert settings.allowed_origins == ("https://a.example",)
    assert settings.jwt_algorithms == ("HS256", "HS512")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("port", "0"), ("port", "65536"), ("port", "http"), ("prefix", ""), ("prefix", "ws*"),
        ("idle_timeout_s", "abc"), ("idle_timeout_s", "0"), ("auth_timeout_s", "-1"),
        ("typing_ttl_s", "nan"), ("resume_window_s", "inf"), ("jwt_leeway_s", "-0.5"),
        ("max_frame_bytes", "1.5"), ("max_subscriptions", "0"), ("redis_database", "-1"),
        ("mode", "prod"), ("logger_encoding", "xml"), ("logger_level", "loud"),
        ("jwt_algorithms", "RS256"), ("jwt_algorithms", "none"), ("jwt_algorithms", ""),
        ("outbox_table", "1outbox"), ("outbox_table", "outbox;drop"), ("members_table", "a-b"),
        ("outbox_table", "o" * 48), ("members_table", "m" * 50),  # derived index names must fit in 63
        ("redis_host", "localhost"), ("redis_host", "localhost:0"), ("redis_host", "localhost:70000"),
        ("authorization", "everyone"), ("allowed_origins", "example.com"),
    ],
)
def test_bad_flag_value_names_the_setting(empty_cwd: Path, name: str, value: str) -> None:
    error = _error({name: value}, {})
    assert error.setting == name
    assert f"got {value!r}" in str(error)
    assert f"flag --{name}" in str(error)


def test_bad_environment_value_names_setting_and_variable(empty_cwd: Path) -> None:
    error = _error({}, {"WSGATEWAY_IDLE_TIMEOUT_S": "abc"})
    assert str(error) == (
        "invalid setting idle_timeout_s: expected a positive number, got 'abc' "
        "(from WSGATEWAY_IDLE_TIMEOUT_S)"
    )


def test_hmac_only_error_says_why(empty_cwd: Path) -> None:
    assert "shared jwt_secret" in str(_error({}, {"WSGATEWAY_JWT_ALGORITHMS": "HS256,RS256"}))


@pytest.mark.parametrize(
    ("text", "name"),
    [("port: true\n", "port"), ("idle_timeout_s: abc\n", "idle_timeout_s"), ("port: 80.5\n", "port"),
     ("jwt_algorithms: [256]\n", "jwt_algorithms"), ("allowed_origins: 5\n", "allowed_origins")],
)
def test_bad_yaml_value_names_the_setting(tmp_path: Path, text: str, name: str) -> None:
    config = _yaml(tmp_path, text)
    error = _error({}, {}, config)
    assert error.setting == name and config in str(error)


def test_secret_values_are_not_echoed(tmp_path: Path) -> None:
    error = _error({}, {}, _yaml(tmp_path, "jwt_secret: 123456789\n"))
    assert error.setting == "jwt_secret" and "123456789" not in str(error)


def test_unknown_yaml_key_is_named(tmp_path: Path) -> None:
    error = _error({}, {}, _yaml(tmp_path, "idle_timeout: 5\n"))
    assert error.setting == "idle_timeout" and "did you mean idle_timeout_s" in str(error)


def test_unknown_flag_is_named(empty_cwd: Path) -> None:
    error = _error({"no-such-thing": "1"}, {})
    assert error.setting == "no_such_thing" and "--no-such-thing" in str(error)


@pytest.mark.parametrize("text", ["[1, 2]\n", "port: [\n", "\tport: 1\n"])
def test_unreadable_yaml_is_one_line_naming_config(tmp_path: Path, text: str) -> None:
    assert _error({}, {}, _yaml(tmp_path, text)).setting == "config"


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    error = _error({}, {}, str(tmp_path / "absent.yaml"))
    assert error.setting == "config" and "absent.yaml" in str(error)


def test_authorization_resolves_from_postgres(empty_cwd: Path) -> None:
    dsn = {"POSTGRES_DSN": "postgresql://u@db/x"}
    assert load_settings({}, dsn, None).authorization == "members"
    assert load_settings({"authorization": "none"}, dsn, None).authorization == "none"


def test_members_without_postgres_is_an_error(empty_cwd: Path) -> None:
    error = _error({"authorization": "members"}, {})
    assert error.setting == "authorization" and "postgres_dsn" in str(error)


def test_production_refuses_without_jwt_secret(empty_cwd: Path) -> None:
    error = _error({"authorization": "none"}, {"MODE": "production"})
    assert error.setting == "jwt_secret"


def test_production_refuses_the_development_secret(empty_cwd: Path) -> None:
    environ = {"MODE": "production", "JWT_SECRET": DEVELOPMENT_JWT_SECRET}
    assert _error({"authorization": "none"}, environ).setting == "jwt_secret"


def test_production_refuses_implicit_open_authorization(empty_cwd: Path) -> None:
    environ = {"MODE": "production", "JWT_SECRET": "s" * 32}
    assert _error({}, environ).setting == "authorization"
    assert load_settings({}, {**environ, "WSGATEWAY_AUTHORIZATION": "none"}, None).authorization == "none"


def test_production_with_postgres_requires_exp(empty_cwd: Path) -> None:
    environ = {"MODE": "production", "JWT_SECRET": "s" * 32, "POSTGRES_DSN": "postgresql://u@db/x"}
    settings = load_settings({}, environ, None)
    assert (settings.authorization, settings.require_exp, settings.uses_development_secret) == (
        "members", True, False
    )


def test_development_uses_given_secret(empty_cwd: Path) -> None:
    settings = load_settings({}, {"JWT_SECRET": "mine"}, None)
    assert settings.jwt_secret == "mine" and not settings.uses_development_secret


def test_settings_are_frozen_with_keyword_overrides() -> None:
    settings = Settings(idle_timeout_s=2.0, prefix="t1:")
    assert (settings.idle_timeout_s, settings.prefix, settings.port) == (2.0, "t1:", 8081)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(("value", "address"), [
    ("localhost:6379", ("localhost", 6379)), ("10.0.0.7:7000", ("10.0.0.7", 7000)),
    ("[::1]:6379", ("::1", 6379)), ("[fe80::1:2]:6380", ("fe80::1:2", 6380)),
])
def test_redis_address_is_parsed_once_for_every_client(empty_cwd: Path, value: str,
                                                       address: tuple[str, int]) -> None:
    assert load_settings({"redis_host": value}, {}, None).redis_address == address


def test_longest_table_name_is_accepted(empty_cwd: Path) -> None:
    assert load_settings({"outbox_table": "o" * 47}, {}, None).outbox_table == "o" * 47
