"""Import rules between the layers of a package, checked on the source with :mod:`ast`.

A *layer* is a dotted prefix (``qphone.core``, ``keyserver.kms``); each rule names the layers a
layer may import besides itself. Every import counts: at module level or inside a function,
``import x`` and ``from x import y``, absolute or relative (``from ..core import session`` is
resolved against the importing module's package). Imports of another top-level package that the
rules name as foreign (qphone importing keyserver) are violations too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rules:
    """The layers of one top-level package and whom each may import."""

    package: str
    allowed: Mapping[str, frozenset[str]]
    foreign: frozenset[str] = frozenset()  # other top-level packages nobody here may import
    forbidden: Mapping[str, frozenset[str]] | None = None  # extra prefixes a layer may not use

    def layer(self, module: str) -> str | None:
        """The longest layer name that is `module` or a dotted prefix of it."""
        best = None
        for name in self.allowed:
            if (module == name or module.startswith(name + ".")) and (
                best is None or len(name) > len(best)
            ):
                best = name
        return best


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def imports(module: str, source: str, *, is_package: bool = False) -> set[str]:
    """Every module name `source` imports (relative imports resolved, names imported from a
    module counted both as the module and as ``module.name``)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                up = node.level - 1
                if up > len(parts):
                    found.add("<relative import above the top package>")
                    continue
                anchor = ".".join(parts[: len(parts) - up])
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def violations(rules: Rules, modules: Iterable[tuple[str, str, bool]]) -> list[str]:
    """`modules` yields (dotted name, source, is_package); the answer lists each bad import."""
    wrong: list[str] = []
    for module, source, is_package in modules:
        layer = rules.layer(module)
        if layer is None:
            continue
        allowed = rules.allowed[layer] | {layer}
        extra = (rules.forbidden or {}).get(layer, frozenset())
        for imported in sorted(imports(module, source, is_package=is_package)):
            top = imported.split(".")[0]
            if top in rules.foreign or imported.startswith("<"):
                wrong.append(f"{module} imports {imported}")
                continue
            if top != rules.package:
                continue
            target = rules.layer(imported)
            if (target is not None and target not in allowed) or any(
                imported == bad or imported.startswith(bad + ".") for bad in extra
            ):
                wrong.append(f"{module} imports {imported}")
    return wrong


def package_modules(root: Path, package: str) -> list[tuple[str, str, bool]]:
    out = []
    for path in sorted((root / package).rglob("*.py")):
        out.append((module_name(root, path), path.read_text(), path.name == "__init__.py"))
    return out
