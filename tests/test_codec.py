"""The one JSON codec of the wire (tornado_gw/codec.py): strict both ways (issue 9 §10, §13)."""

from __future__ import annotations

import json

import pytest

from tornado_gw import codec


def test_encode_frame_is_the_client_frame() -> None:
    payload = {"text": "héllo </b>", "n": [1, 2]}
    frame = codec.encode_frame("message.new", payload, 42)
    assert json.loads(frame) == {"type": "message.new", "payload": payload, "seq": 42}
    assert "héllo </b>".encode() in frame  # UTF-8 and slashes as written, not escaped
    assert json.loads(codec.encode_frame("x", {})) == {"type": "x", "payload": {}}


@pytest.mark.parametrize("text", [
    '{"n": NaN}', '[Infinity]', '[-Infinity]', '{"n": 1e400}', '{"n": -1E+999}', "[" + "9" * 400 + ".5]",
    '{"type": "\\ud800"}', '{"\\udfff": 1}', '["ok", {"deep": ["\\uDBFF"]}]',
])
def test_decode_refuses_what_strict_json_has_no_form_for(text: str) -> None:
    for given in (text, text.encode()):
        with pytest.raises(codec.DecodeError):
            codec.decode(given)


@pytest.mark.parametrize("text", [
    '{"n": 1e300}', '{"s": "NaN Infinity 1e999"}', '"\\ud83d\\ude00"', '{"n": 12345678901234567890123}',
    '{"e": "\\u00e9"}',
])
def test_decode_keeps_strict_values_that_merely_look_suspect(text: str) -> None:
    assert codec.decode(text) == json.loads(text)


@pytest.mark.parametrize("value", [
    float("nan"), float("inf"), {"a": [float("-inf")]}, "\ud800", {"\udc00": 1},
])
def test_encode_refuses_values_without_a_strict_form(value: object) -> None:
    with pytest.raises(codec.EncodeError):
        codec.encode(value)
