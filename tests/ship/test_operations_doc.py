"""docs/operations.md's settings table against the real Settings (issue 14).

Names and defaults come from ``tornado_gw/settings.py``, so a setting added
there fails here until the table lists it with its default.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from tornado_gw.settings import Settings, setting_names

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")


def _table() -> dict[str, str]:
    """setting -> its default column, from the ``## Settings`` section."""
    section = DOC.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([a-z0-9_]+)` \| ([^|]+?) \|", section, re.M))


def _shown(value: object) -> str:
    """A default as the table writes it."""
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return ", ".join(f"`{item}`" for item in value) or "empty"
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def test_the_table_lists_every_setting_once() -> None:
    rows = re.findall(r"^\| `([a-z0-9_]+)` \|", DOC.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0], re.M)
    assert sorted(rows) == sorted(setting_names()) == sorted(f.name for f in dataclasses.fields(Settings))


def test_each_default_in_the_table_is_the_real_default() -> None:
    defaults = Settings()
    wrong = {name: (shown, _shown(getattr(defaults, name))) for name, shown in _table().items()
             if shown != _shown(getattr(defaults, name))}
    assert wrong == {}
