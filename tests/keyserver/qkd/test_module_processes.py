"""Real QKD module processes over loopback: a transmitter and a receiver, ETSI 014 clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.keyserver.qkd.modulesupport import Pair, make_pair

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    p = make_pair(tmp_path, block_pulses=300_000_000, max_key_count=48)
    p.start("receiver")
    p.start("transmitter")
    yield p
    p.stop()


def _enc(pair: Pair, number: int) -> list[dict[str, str]]:
    with pair.client("nodeA") as c:
        r = c.post(f"{pair.url('transmitter')}/api/v1/keys/nodeB/enc_keys", json={"number": number})
    assert r.status_code == 200, r.text
    keys: list[dict[str, str]] = r.json()["keys"]
    return keys


def _dec(pair: Pair, ids: list[str]) -> tuple[int, dict[str, object]]:
    with pair.client("nodeB") as c:
        r = c.post(f"{pair.url('receiver')}/api/v1/keys/nodeA/dec_keys",
                   json={"key_IDs": [{"key_ID": k} for k in ids]})
    return r.status_code, r.json()


def test_pair_delivers_identical_keys_under_identical_ids(pair: Pair) -> None:
    st = pair.wait_status("transmitter", lambda s: s["stored_key_count"] >= 8, 120)
    ext = st["status_extension"]["qkd_link"]
    assert ext["role"] == "transmitter" and ext["state"] == "running"
    assert ext["seeded_source"] is True and ext["blocks_ok"] >= 1
    assert st["key_size"] == st["min_key_size"] == st["max_key_size"] == 256
    keys = _enc(pair, 8)
    status, body = _dec(pair, [k["key_ID"] for k in keys])
    assert status == 200, body
    assert body["keys"] == keys
    # a key leaves the store when delivered: the second time it is unknown (all or none)
    status, body = _dec(pair, [keys[0]["key_ID"]])
    assert status == 400
    rx = pair.status("receiver")["status_extension"]["qkd_link"]
    assert rx["role"] == "receiver" and rx["auth_bits_consumed"] > 0


def test_only_the_local_node_may_call_and_roles_are_enforced(pair: Pair) -> None:
    pair.wait_status("transmitter", lambda s: s["stored_key_count"] >= 1, 120)
    with pair.client("intruder") as c:
        r = c.post(f"{pair.url('transmitter')}/api/v1/keys/nodeB/enc_keys", json={"number": 1})
    assert r.status_code == 401
    with pair.client("nodeA") as c:
        r = c.post(f"{pair.url('transmitter')}/api/v1/keys/nodeB/dec_keys",
                   json={"key_IDs": [{"key_ID": "00000000-0000-0000-0000-000000000000"}]})
        assert r.status_code == 400
        r = c.post(f"{pair.url('transmitter')}/api/v1/keys/nodeB/enc_keys",
                   json={"number": 1, "size": 512})
        assert r.status_code == 400
        r = c.post(f"{pair.url('transmitter')}/admin/v1/eve", json={"fraction": 0.5})
        assert r.status_code == 401
    with pair.client("admin") as c:
        r = c.post(f"{pair.url('transmitter')}/admin/v1/eve", json={"fraction": 0.0})
        assert r.status_code == 200 and r.json() == {"eve_fraction": 0.0}
        r = c.post(f"{pair.url('receiver')}/admin/v1/eve", json={"fraction": 0.0})
        assert r.status_code == 400
