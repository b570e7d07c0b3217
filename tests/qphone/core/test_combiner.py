"""The CatKDF combiner: pinned vectors, and each of the three secrets matters."""

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from qphone.core.combiner import combine

VECTORS = Path(__file__).parent / "vectors" / "combiner.json"


def _run(v: dict[str, str]) -> str:
    return combine(
        qkd=bytes.fromhex(v["qkd"]),
        mlkem=bytes.fromhex(v["mlkem"]),
        x25519=bytes.fromhex(v["x25519"]),
        context=bytes.fromhex(v["context"]),
        ma=bytes.fromhex(v["ma"]),
        mb=bytes.fromhex(v["mb"]),
    ).hex()


def test_pinned_vectors() -> None:
    vectors = json.loads(VECTORS.read_text())
    assert len(vectors) >= 3
    for v in vectors:
        assert _run(v) == v["key"], v["name"]


b32 = st.binary(min_size=32, max_size=32)


@settings(max_examples=50)
@given(b32, b32, b32, b32, st.sampled_from(["qkd", "mlkem", "x25519"]))
def test_changing_any_one_secret_changes_the_key(
    qkd: bytes, mlkem: bytes, x: bytes, other: bytes, which: str
) -> None:
    base = {"qkd": qkd, "mlkem": mlkem, "x25519": x}
    changed = dict(base, **{which: other})
    common = {"context": b"ctx", "ma": b"A", "mb": b"B"}
    k1 = combine(**base, **common)
    k2 = combine(**changed, **common)
    assert (k1 == k2) == (base[which] == other)
    assert combine(**base, **common) == k1  # deterministic


def test_context_and_messages_bind() -> None:
    s = {"qkd": b"q" * 32, "mlkem": b"m" * 32, "x25519": b"x" * 32}
    k = combine(**s, context=b"c", ma=b"A", mb=b"B")
    assert k != combine(**s, context=b"d", ma=b"A", mb=b"B")
    assert k != combine(**s, context=b"c", ma=b"A2", mb=b"B")
    assert k != combine(**s, context=b"c", ma=b"A", mb=b"B2")
    # length prefixes: moving a byte between MA and MB changes the key
    assert k != combine(**s, context=b"c", ma=b"AB", mb=b"")
