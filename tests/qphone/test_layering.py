"""The package boundaries of docs/architecture.md, checked on every import in the source.

Each rule names the qphone packages a layer may import (its own always allowed).  Imports inside
functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import ROOT

QPHONE = ROOT / "qphone"
ALLOWED: dict[str, set[str]] = {
    "qphone.core": set(),
    "qphone.kmeclient": {"qphone.core", "qphone.config"},
    "qphone.config": {"qphone.core"},
    "qphone.audio": {"qphone.core"},
    "qphone.transport": {"qphone.core"},
    "qphone.endpoint": {
        "qphone.core",
        "qphone.audio",
        "qphone.config",
        "qphone.transport",
        "qphone.kmeclient",
    },
    "qphone.demo": {
        "qphone.core",
        "qphone.audio",
        "qphone.config",
        "qphone.endpoint",
        "qphone.transport",
    },
    "qphone.measure": {
        "qphone.core",
        "qphone.audio",
        "qphone.endpoint",
        "qphone.transport",
        "qphone.kmeclient",
        "qphone.config",
        "qphone.demo",
    },
}
# the transport's receive path must not know the test-only impairment model
FORBIDDEN = {"qphone.transport": {"qphone.core.impairment"}}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    name = ".".join(parts[:2])
    return name if name in ALLOWED else None


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m == "qphone" or m.startswith("qphone.")}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(QPHONE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        out.append((".".join(rel.parts).removesuffix(".__init__"), path))
    return out


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_stay_within_the_layer(layer: str) -> None:
    allowed = ALLOWED[layer] | {layer}
    wrong = []
    for module, path in _modules():
        if _layer(module) != layer:
            continue
        for imported in sorted(_imports(path)):
            target = _layer(imported)
            forbidden = any(imported.startswith(bad) for bad in FORBIDDEN.get(layer, ()))
            if (target is not None and target not in allowed) or forbidden:
                wrong.append(f"{module} imports {imported}")
    assert wrong == []


def test_every_module_is_in_a_layer() -> None:
    """qphone/__init__.py and the command line (which may use everything) aside."""
    assert [m for m, _ in _modules() if _layer(m) is None] == ["qphone", "qphone.cli"]
