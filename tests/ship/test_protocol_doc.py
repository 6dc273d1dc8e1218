"""docs/protocol.md against the code (issue 14).

Expectations come from the code, so a frame type, close code or error code
added to ``core/protocol.py``, or a field added to a builder in
``core/frames.py``, fails here until the reference describes it.
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import re
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from tornado_gw.core import commands, frames
from tornado_gw.core.parse import parse_client_frame
from tornado_gw.core.protocol import CloseCode, ErrorCode, FrameType

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    """The text of one ``## title`` section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", DOC, re.S | re.M)
    assert match is not None, f"docs/protocol.md has no section '## {title}'"
    return match.group(1)


def _frames_of(title: str) -> dict[str, list[dict[str, Any]]]:
    """``### `type``` headings of a section, each with its JSON examples."""
    found: dict[str, list[dict[str, Any]]] = {}
    for match in re.finditer(r"^### `([^`]+)`\n(.*?)(?=^### |\Z)", _section(title), re.S | re.M):
        blocks = re.findall(r"```json\n(.*?)```", match.group(2), re.S)
        found[match.group(1)] = [json.loads(block) for block in blocks]
    return found


def _first_column(title: str) -> set[str]:
    return set(re.findall(r"^\| `?([^`|]+?)`? \|", _section(title), re.M)) - {"code"}


def _client_types() -> set[str]:
    """The frame types the parser accepts from a client."""
    def known(kind: str) -> bool:
        parsed = parse_client_frame("c1", {"type": kind}, 0.0)
        return not (isinstance(parsed, commands.BadFrame) and parsed.code is ErrorCode.UNKNOWN_TYPE)
    return {kind.value for kind in FrameType if known(kind.value)}


CLIENT = _frames_of("Client → server")
SERVER = _frames_of("Server → client")
INTERNAL = _frames_of("Between instances")


def test_every_frame_type_of_the_code_has_its_section_on_the_right_side_and_no_other_type_does() -> None:
    assert set(CLIENT) == _client_types()
    assert set(SERVER) | set(INTERNAL) == {kind.value for kind in FrameType} - _client_types()
    assert not set(SERVER) & set(INTERNAL)


def test_every_frame_section_has_an_example() -> None:
    assert [kind for kind, examples in {**CLIENT, **SERVER, **INTERNAL}.items() if not examples] == []


@pytest.mark.parametrize("kind", sorted(CLIENT))
def test_client_examples_are_accepted_by_the_parser(kind: str) -> None:
    for example in CLIENT[kind]:
        assert example["type"] == kind
        parsed = parse_client_frame("c1", example, 0.0)
        assert not isinstance(parsed, commands.BadFrame), (example, parsed)


def _dummy(hint: Any, flag: bool) -> Any:
    """A value of the annotated type, to call a frame builder with."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if type(None) in args and not flag:  # optional: built once without it
            return None
        return _dummy(next(arg for arg in args if arg is not type(None)), flag)
    if hint is bool:
        return flag
    if hint in (str, int, float):
        return hint(1)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return next(iter(hint))
    if origin in (list, tuple, collections.abc.Iterable, collections.abc.Sequence):
        return [_dummy(typing.get_args(hint)[0], flag)]
    if origin in (dict, collections.abc.Mapping):
        return {}
    raise TypeError(f"extend _dummy in {__file__} for {hint!r}")


def _built_fields() -> dict[str, set[frozenset[str]]]:
    """Frame type -> the payload field sets that the builders of core/frames.py write."""
    built: dict[str, set[frozenset[str]]] = {}
    for name, builder in inspect.getmembers(frames, inspect.isfunction):
        hints = typing.get_type_hints(builder)
        if builder.__module__ != frames.__name__ or name.startswith("_") or name == "frame" \
                or hints.get("return") != frames.Frame:
            continue
        params = inspect.signature(builder).parameters
        for flag in (True, False):
            made = builder(**{p: _dummy(hints[p], flag) for p in params})
            built.setdefault(made["type"], set()).add(frozenset(made["payload"]))
    return built


def test_server_examples_carry_exactly_the_fields_the_code_writes() -> None:
    built = _built_fields()
    assert set(built) <= set(SERVER) | set(INTERNAL)
    for kind, examples in {**SERVER, **INTERNAL}.items():
        for example in examples:
            assert example["type"] == kind and isinstance(example["payload"], dict)
            if kind in built:
                assert frozenset(example["payload"]) in built[kind], (kind, sorted(example["payload"]))
            else:  # outbox events: type, payload as written, seq
                assert set(example) == {"type", "payload", "seq"}


def test_error_codes_are_the_codes_the_code_defines() -> None:
    assert _first_column("Error codes") == {code.value for code in ErrorCode}
    assert {example["payload"]["code"] for example in SERVER["error"]} <= {code.value for code in ErrorCode}


def _literal_close_codes() -> set[int]:
    """Close codes passed as numbers rather than CloseCode members (e.g. 1007 in web/ws_handler.py)."""
    found = set()
    for path in (ROOT / "tornado_gw").rglob("*.py"):
        found |= {int(code) for code in re.findall(r"\bclose\((\d{4})\b", path.read_text(encoding="utf-8"))}
    return found


def test_close_codes_are_the_codes_the_code_sends() -> None:
    documented = {int(code) for code in _first_column("Close codes")}
    assert documented == {code.value for code in CloseCode} | _literal_close_codes()


def test_auth_error_codes_the_code_sends_are_documented() -> None:
    sources = [(ROOT / "tornado_gw" / "web" / "auth.py"), (ROOT / "tornado_gw" / "core" / "reducer.py")]
    text = "\n".join(path.read_text(encoding="utf-8") for path in sources)
    codes = set(re.findall(r'\bcode(?=: str = |=)(?:: str = |=)"([a-z_]+)"', text))
    codes |= set(re.findall(r'_reject_auth\(conn, "([a-z_]+)"', text))
    assert codes >= {"invalid_token", "token_expired"}
    auth_error = re.search(r"^### `auth.error`\n(.*?)^### ", DOC, re.S | re.M)
    assert auth_error is not None
    assert {code for code in codes if f"`{code}`" not in auth_error.group(1)} == set()
