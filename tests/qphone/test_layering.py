"""The package boundaries of docs/architecture.md, checked on every import in the source.

Each rule names the qphone packages a layer may import (its own always allowed). Imports inside
functions and relative imports count too, and no qphone module may import ``keyserver`` (qphone
talks to a KME only over ETSI 014). The last tests show the checker failing on each kind of
violation it names.
"""

from __future__ import annotations

import pytest

from tests.support.layering import Rules, package_modules, violations
from tests.support.paths import ROOT

RULES = Rules(
    package="qphone",
    allowed={
        "qphone.core": frozenset(),
        "qphone.kmeclient": frozenset({"qphone.core", "qphone.config"}),
        "qphone.config": frozenset({"qphone.core"}),
        "qphone.audio": frozenset({"qphone.core"}),
        "qphone.transport": frozenset({"qphone.core"}),
        "qphone.endpoint": frozenset(
            {"qphone.core", "qphone.audio", "qphone.config", "qphone.transport", "qphone.kmeclient"}
        ),
        "qphone.demo": frozenset(
            {"qphone.core", "qphone.audio", "qphone.config", "qphone.endpoint", "qphone.transport"}
        ),
        "qphone.measure": frozenset(
            {
                "qphone.core",
                "qphone.audio",
                "qphone.endpoint",
                "qphone.transport",
                "qphone.kmeclient",
                "qphone.config",
                "qphone.demo",
            }
        ),
    },
    foreign=frozenset({"keyserver"}),
    # the transport's receive path must not know the test-only impairment model
    forbidden={"qphone.transport": frozenset({"qphone.core.impairment"})},
)
MODULES = package_modules(ROOT, "qphone")


@pytest.mark.parametrize("layer", sorted(RULES.allowed))
def test_imports_stay_within_the_layer(layer: str) -> None:
    mine = [m for m in MODULES if RULES.layer(m[0]) == layer]
    assert mine, f"no module in {layer}"
    assert violations(RULES, mine) == []


def test_every_module_is_in_a_layer() -> None:
    """qphone/__init__.py and the command line (which may use everything) aside."""
    assert [m for m, _, _ in MODULES if RULES.layer(m) is None] == ["qphone", "qphone.cli"]


@pytest.mark.parametrize(
    ("module", "source", "is_package"),
    [
        ("qphone.core.x", "import qphone.endpoint.endpoint", False),  # upward, absolute
        ("qphone.core.x", "from qphone.audio import opus", False),
        (
            "qphone.core.x",
            "def f():\n    from qphone.transport import frames\n",
            False,
        ),  # in a function
        ("qphone.core.x", "from ..endpoint import keysupply", False),  # relative, upward
        ("qphone.core", "from ..measure import bench", True),  # relative from a package
        ("qphone.audio.x", "import keyserver.kms.node", False),  # the other product
        ("qphone.kmeclient", "from keyserver.etsi014 import messages", False),
        ("qphone.transport.x", "from qphone.core.impairment import Impairment", False),
        ("qphone.transport.x", "from ..core import impairment", False),
        ("qphone.core.x", "from .... import anything", False),  # above the top package
    ],
)
def test_the_checker_sees_every_kind_of_violation(
    module: str, source: str, is_package: bool
) -> None:
    assert violations(RULES, [(module, source, is_package)]) != []


def test_the_checker_allows_what_the_rules_allow() -> None:
    ok = [
        (
            "qphone.endpoint.x",
            "from qphone.core import session\nfrom ..transport import frames",
            False,
        ),
        ("qphone.core.x", "from . import errors\nfrom .otp import PadStream\nimport numpy", False),
    ]
    assert violations(RULES, ok) == []
