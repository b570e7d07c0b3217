"""The reading order docs/architecture.md gives for a relayed key through kms/: each module it
names imports only modules named before it, so a reader never goes back to a file already left."""

from __future__ import annotations

import ast
import re

from tests.support.paths import ROOT

_INTRO = "To follow one relayed key through the key management layer"


def _order() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    start = text.index(_INTRO)
    para = text[start : text.index("\n\n", start)]
    return re.findall(r"`kms/(\w+)\.py`", para)


def _kms_imports(module: str) -> set[str]:
    tree = ast.parse((ROOT / "keyserver" / "kms" / f"{module}.py").read_text())
    out: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module == "keyserver.kms":
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and (n.module or "").startswith("keyserver.kms."):
            out.add((n.module or "").split(".")[2])
        elif isinstance(n, ast.Import):
            out |= {a.name.split(".")[2] for a in n.names if a.name.startswith("keyserver.kms.")}
    return out


def test_the_order_names_the_node_and_its_agents() -> None:
    order = _order()
    assert len(order) == len(set(order))
    agents = {"linkstate", "linkmanager", "relaymachine", "relayinitiator", "relayreceiver"}
    assert agents | {"saeservice", "node"} <= set(order)
    assert order[-1] == "node"


def test_each_module_imports_only_modules_read_before_it() -> None:
    order = _order()
    late = {
        m: sorted(d for d in _kms_imports(m) if d in order and order.index(d) > i)
        for i, m in enumerate(order)
    }
    assert {m: d for m, d in late.items() if d} == {}
