"""STYLE §1: the core imports the standard library and itself, nothing else.

Not even ``tornado_gw.ports``: the ports depend on the core (its records live in
``core/records.py``), never the other way round (issue 9 §14)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "tornado_gw" / "core"
ALLOWED_PACKAGES = ("tornado_gw.core",)


def imported_modules(path: Path, package: str = "tornado_gw.core") -> list[str]:
    """Absolute names of everything ``path`` (a module of ``package``) imports, ``from``
    imports down to the name (``from tornado_gw import ports`` is ``tornado_gw.ports``;
    relative ones resolved)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            names.extend(f"{base}.{alias.name}" for alias in node.names)
    return names


def forbidden(name: str) -> bool:
    top = name.split(".")[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return False
    return not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED_PACKAGES)


def test_core_modules_exist() -> None:
    assert len(list(CORE.glob("*.py"))) >= 10


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_imports_only_stdlib_and_core(path: Path) -> None:
    bad = [name for name in imported_modules(path) if forbidden(name)]
    assert not bad, f"{path.name} imports {bad}: the core must stay free of I/O libraries (STYLE §1)"


@pytest.mark.parametrize(("name", "bad"), [
    ("tornado", True), ("tornado_gw.web.app", True), ("tornado_gw.adapters.memory", True), ("ujson", True),
    ("tornado_gw", True), ("tornado_gw.portsx", True), ("tornado_gw.core.ids", False),
    ("tornado_gw.ports", True), ("tornado_gw.ports.LoggedEvent", True), ("tornado_gw.core.records", False),
    ("json", False),
    ("collections.abc", False), ("__future__", False),
])
def test_core_import_rule_tells_allowed_from_forbidden(name: str, bad: bool) -> None:
    assert forbidden(name) is bad


def test_core_import_rule_resolves_relative_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from . import ids\nfrom .. import web, ports\n"
                      "from ..ports import Broker\nimport os.path\n")
    assert imported_modules(module) == ["tornado_gw.core.ids", "tornado_gw.web", "tornado_gw.ports",
                                        "tornado_gw.ports.Broker", "os.path"]


PACKAGE = CORE.parent


@pytest.mark.parametrize(("layer", "never"), [
    ("adapters", ("tornado_gw.relay", "tornado_gw.web", "tornado_gw.runtime")),
    ("ports.py", ("tornado_gw.adapters", "tornado_gw.relay", "tornado_gw.web", "tornado_gw.runtime")),
    ("runtime", ("tornado_gw.adapters", "tornado_gw.relay", "tornado_gw.web")),
])
def test_outer_layers_point_inwards(layer: str, never: tuple[str, ...]) -> None:
    """STYLE §1 / issue 9 §14: e.g. the gateway's Postgres adapter used to import the relay."""
    root = PACKAGE / layer
    composition = {"wiring.py"}  # adapters/wiring.py wires everything (docs/architecture.md)
    paths = sorted(p for p in root.glob("*.py") if p.name not in composition) if root.is_dir() else [root]
    package = f"tornado_gw.{layer}" if root.is_dir() else "tornado_gw"
    bad = {path.name: names for path in paths
           if (names := [n for n in imported_modules(path, package) if n.startswith(never)])}
    assert not bad, f"{layer} imports {bad}"
