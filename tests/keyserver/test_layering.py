"""The keyserver's layers (docs/architecture.md, keyserver half), checked on every import.

From the bottom: small utilities (JSON log, core dumps, the console script's path, the config
files' error and TOML loader, listening ports, stopping tasks), the PKI, the ETSI 014 service,
the topology model; the QKD layer (modules); the key management layer (KMS nodes), which talks
to modules only over ETSI 014 and so never imports ``qkd``; the network launcher above both;
the command line on top. Nothing in keyserver imports qphone.
"""

from __future__ import annotations

import pytest

from tests.support.layering import Rules, package_modules, violations
from tests.support.paths import ROOT

UTIL = frozenset(
    {
        "keyserver.jsonlog",
        "keyserver.coredumps",
        "keyserver.consolescript",
        "keyserver.configfile",
        "keyserver.ports",
        "keyserver.tasks",
    }
)
BASE = UTIL | {"keyserver.pki", "keyserver.etsi014", "keyserver.topology"}
RULES = Rules(
    package="keyserver",
    allowed={
        "keyserver.jsonlog": frozenset(),
        "keyserver.coredumps": frozenset(),
        "keyserver.consolescript": frozenset(),
        "keyserver.configfile": frozenset(),
        "keyserver.ports": frozenset(),
        "keyserver.tasks": frozenset(),
        "keyserver.pki": UTIL,
        "keyserver.etsi014": UTIL | {"keyserver.pki"},
        "keyserver.topology": UTIL | {"keyserver.etsi014"},  # SAE ID syntax
        "keyserver.qkd": BASE,
        "keyserver.kms": BASE,
        "keyserver.network": BASE | {"keyserver.qkd", "keyserver.kms"},
    },
    foreign=frozenset({"qphone"}),
)
MODULES = package_modules(ROOT, "keyserver")


@pytest.mark.parametrize("layer", sorted(RULES.allowed))
def test_imports_stay_within_the_layer(layer: str) -> None:
    mine = [m for m in MODULES if RULES.layer(m[0]) == layer]
    assert mine, f"no module in {layer}"
    assert violations(RULES, mine) == []


def test_every_module_is_in_a_layer() -> None:
    """keyserver/__init__.py and the command line (which registers every layer) aside."""
    assert [m for m, _, _ in MODULES if RULES.layer(m) is None] == ["keyserver", "keyserver.cli"]


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("keyserver.kms.node", "from keyserver.network.topology import LinkSpec"),
        ("keyserver.kms.node", "from ..network import commands"),
        ("keyserver.kms.node", "import keyserver.qkd.module"),
        ("keyserver.qkd.module", "from keyserver.kms import relay"),
        ("keyserver.topology", "from keyserver.pki import tls"),
        ("keyserver.etsi014.server", "def f():\n    import keyserver.kms.node\n"),
        ("keyserver.network.launcher", "from qphone.core import session"),
    ],
)
def test_the_checker_sees_every_kind_of_violation(module: str, source: str) -> None:
    assert violations(RULES, [(module, source, False)]) != []
