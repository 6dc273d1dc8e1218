"""Files of the project's shared/ directory, which lies beside the checkout (CI: ../shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def shared_file(*parts: str) -> Path:
    """``shared/<parts>`` beside the checkout, or beside one of its parents (worktrees); fails if absent."""
    relative = Path("shared", *parts)
    for parent in ROOT.parents:
        if (parent / relative).is_file():
            return parent / relative
    pytest.fail(f"no {relative} beside {ROOT} or its parents (CI lays shared/ beside the clone)")
