"""Every state change in the core goes through ``events.evolve`` (issue 10): no other
module of ``tornado_gw/core`` assigns to an attribute, to an item of an attribute
(``conn.delivered[ch] = ...``), deletes one, or calls a mutating method on an
attribute or on a name bound to one (``subs = state.subscribers.get(ch)``,
``subs.add(...)``). Locals the deciding code builds (``out``, ``targets``) are free.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "tornado_gw" / "core"
EVOLVE = {"events.py"}  # the one module that changes state
MUTATORS = {"add", "discard", "pop", "popitem", "append", "appendleft", "popleft", "clear", "update",
            "setdefault", "extend", "remove", "insert", "difference_update", "intersection_update",
            "symmetric_difference_update", "sort", "reverse"}


def _reaches_state(node: ast.expr, tainted: set[str]) -> bool:
    """An attribute (``conn.queued``), an item or a ``.get`` of one, or a name bound to those."""
    while isinstance(node, (ast.Subscript, ast.Call)):
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Attribute) and node.func.attr in {"get", "setdefault"}):
                return False
            node = node.func.value
        else:
            node = node.value
    if isinstance(node, ast.Attribute):
        return True
    return isinstance(node, ast.Name) and node.id in tainted


def _constructing(func: ast.FunctionDef | ast.AsyncFunctionDef, target: ast.expr) -> bool:
    """``self.x = ...`` in ``__init__``: a new object (an error), not the state."""
    return (func.name == "__init__" and isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name) and target.value.id == "self")


def violations(source: str, filename: str) -> list[str]:
    found: list[str] = []
    for func in ast.walk(ast.parse(source)):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        tainted: set[str] = set()
        for node in ast.walk(func):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name) and _reaches_state(node.value, tainted):
                tainted.add(node.targets[0].id)
        for node in ast.walk(func):
            where = f"{filename}:{getattr(node, 'lineno', '?')} in {func.name}"
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            elif isinstance(node, ast.Delete):
                targets = node.targets
            for target in targets:
                elements = target.elts if isinstance(target, ast.Tuple) else [target]
                for element in elements:
                    if _constructing(func, element):
                        continue
                    if isinstance(element, ast.Attribute) or (
                            isinstance(element, ast.Subscript) and _reaches_state(element.value, tainted)):
                        found.append(f"{where}: assigns {ast.unparse(element)}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in MUTATORS and _reaches_state(node.func.value, tainted):
                found.append(f"{where}: calls {ast.unparse(node.func)}")
    return found


def test_no_core_module_but_events_changes_state() -> None:
    found = [v for path in sorted(CORE.glob("*.py")) if path.name not in EVOLVE
             for v in violations(path.read_text(), path.name)]
    assert found == []


@pytest.mark.parametrize("code", [
    "def f(conn):\n    conn.phase = 1\n",
    "def f(state, ch):\n    state.subscribers[ch] = set()\n",
    "def f(conn):\n    conn.tokens -= 1\n",
    "def f(state, c):\n    del state.rooms[c]\n",
    "def f(conn, cmd):\n    conn.queued.append(cmd)\n",
    "def f(state, c, u):\n    state.typing.setdefault(c, set()).add(u)\n",
    "def f(state, ch, i):\n    subs = state.subscribers.get(ch)\n    subs.discard(i)\n",
    "def f(state, ch):\n    room = state.rooms[ch]\n    room.pending.extend([])\n",
    "def f(conn, a, b):\n    conn.x, conn.y = a, b\n",
])
def test_the_check_finds_each_kind_of_change(code: str) -> None:
    assert violations(code, "m.py")


def test_the_check_leaves_locals_alone() -> None:
    code = ("def f(state, ch):\n    out = []\n    targets = []\n    seen = {}\n"
            "    for i in state.subscribers.get(ch, ()):\n        targets.append(i)\n        seen[i] = 1\n"
            "    out.append(targets)\n    return out\n")
    assert violations(code, "m.py") == []
