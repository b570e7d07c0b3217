"""Real QKD module processes over loopback: a transmitter and a receiver, ETSI 014 clients."""

from __future__ import annotations

import base64
import itertools
import time
from pathlib import Path

import pytest

from tests.keyserver.qkd.modulesupport import (
    Pair,
    RecordingProxy,
    find_key_windows,
    frame_intervals,
    free_port,
    make_pair,
)

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
        r = c.post(
            f"{pair.url('receiver')}/api/v1/keys/nodeA/dec_keys",
            json={"key_IDs": [{"key_ID": k} for k in ids]},
        )
    return r.status_code, r.json()


def test_pair_delivers_identical_keys_under_identical_ids(pair: Pair) -> None:
    # the keys are in the store a moment before the block counts in the status (the status is
    # recorded once the store's thread is back): wait for both
    st = pair.wait_status(
        "transmitter",
        lambda s: s["stored_key_count"] >= 8 and s["status_extension"]["qkd_link"]["blocks_ok"],
        120,
    )
    ext = st["status_extension"]["qkd_link"]
    assert ext["role"] == "transmitter" and ext["state"] == "running"
    assert ext["seeded_source"] is True and ext["blocks_ok"] >= 1
    assert st["key_size"] == st["min_key_size"] == st["max_key_size"] == 1024
    keys = _enc(pair, 8)
    status, body = _dec(pair, [k["key_ID"] for k in keys])
    assert status == 200, body
    assert body["keys"] == keys
    # a key leaves the store when delivered: the second time it is unknown (all or none)
    status, body = _dec(pair, [keys[0]["key_ID"]])
    assert status == 400
    rx = pair.status("receiver")["status_extension"]["qkd_link"]
    assert rx["role"] == "receiver" and rx["auth_bits_consumed"] > 0


def test_status_can_be_watched_by_its_node(pair: Pair) -> None:
    """The module's Get status carries a version; ``?after=V&wait=S`` is accepted (answered
    when the version moves on, at most S later), and a bad watch query is one 400."""
    st = pair.wait_status("transmitter", lambda s: s["stored_key_count"] >= 1, 120)
    version = st["status_extension"]["status_version"]
    assert isinstance(version, int) and version >= 1  # the blocks so far moved it
    url = f"{pair.url('transmitter')}/api/v1/keys/nodeB/status"
    with pair.client("nodeA") as c:
        # an old version: answered at once, with a newer one
        r = c.get(url, params={"after": str(version - 1), "wait": "30"})
        assert r.status_code == 200, r.text
        assert r.json()["status_extension"]["status_version"] >= version
        r = c.get(url, params={"after": "x", "wait": "30"})
        assert r.status_code == 400 and "after" in r.json()["message"]
        r = c.get(url, params={"after": "1", "wait": "600"})
        assert r.status_code == 400 and "wait" in r.json()["message"]
        doc = c.get(f"{pair.url('transmitter')}/api/v1/openapi.json").json()
        params = doc["paths"]["/api/v1/keys/{slave_SAE_ID}/status"]["get"]["parameters"]
        assert {p["name"] for p in params} == {"slave_SAE_ID", "after", "wait"}
    with pair.client("intruder") as c:  # refused before any wait
        r = c.get(url, params={"after": str(version), "wait": "30"})
        assert r.status_code == 401


def test_only_the_local_node_may_call_and_roles_are_enforced(pair: Pair) -> None:
    pair.wait_status("transmitter", lambda s: s["stored_key_count"] >= 1, 120)
    with pair.client("intruder") as c:
        r = c.post(f"{pair.url('transmitter')}/api/v1/keys/nodeB/enc_keys", json={"number": 1})
    assert r.status_code == 401
    with pair.client("nodeA") as c:
        r = c.post(
            f"{pair.url('transmitter')}/api/v1/keys/nodeB/dec_keys",
            json={"key_IDs": [{"key_ID": "00000000-0000-0000-0000-000000000000"}]},
        )
        assert r.status_code == 400
        r = c.post(
            f"{pair.url('transmitter')}/api/v1/keys/nodeB/enc_keys",
            json={"number": 1, "size": 512 * 3},
        )
        assert r.status_code == 400
        r = c.post(f"{pair.url('transmitter')}/admin/v1/eve", json={"fraction": 0.5})
        assert r.status_code == 401
    with pair.client("admin") as c:
        r = c.post(f"{pair.url('transmitter')}/admin/v1/eve", json={"fraction": 0.0})
        assert r.status_code == 200 and r.json() == {"eve_fraction": 0.0}
        r = c.post(f"{pair.url('receiver')}/admin/v1/eve", json={"fraction": 0.0})
        assert r.status_code == 400


def _drain(pair: Pair) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    with pair.client("nodeA") as c:
        for number in (64, 1):
            while True:
                r = c.post(
                    f"{pair.url('transmitter')}/api/v1/keys/nodeB/enc_keys", json={"number": number}
                )
                if r.status_code == 503:
                    break
                assert r.status_code == 200, r.text
                out.extend(r.json()["keys"])
    return out


def _recorded_pair(tmp_path: Path) -> tuple[Pair, RecordingProxy]:
    cport = free_port()
    proxy = RecordingProxy(cport)
    p = make_pair(
        tmp_path,
        block_pulses=300_000_000,
        max_key_count=1_000_000,
        classical_port=cport,
        classical_connect_port=proxy.port,
    )
    return p, proxy


def test_classical_channel_carries_no_key_and_refuses_forged_or_replayed_frames(
    tmp_path: Path,
) -> None:
    pair, proxy = _recorded_pair(tmp_path)
    pair.start("receiver")
    pair.start("transmitter")
    try:
        pair.wait_status(
            "transmitter", lambda s: s["status_extension"]["qkd_link"]["blocks_ok"] >= 2, 120
        )
        # replay an old frame, and forge one (a flipped bit in a copy of it)
        old = next(f for who, f in proxy.frames if who == "tx")
        proxy.inject_to_receiver(old)
        # from the transmitter's latest frame (an older one's position + 4096 may be used already)
        forged = bytearray(next(f for who, f in reversed(list(proxy.frames)) if who == "tx"))
        forged[3:11] = (int.from_bytes(forged[3:11], "big") + 4096).to_bytes(8, "big")
        proxy.inject_to_receiver(bytes(forged))  # a fresh position, but no valid tag
        ok_before = pair.status("transmitter")["status_extension"]["qkd_link"]["blocks_ok"]
        pair.wait_status(
            "transmitter",
            lambda s: s["status_extension"]["qkd_link"]["blocks_ok"] >= ok_before + 2,
            120,
        )
        log = pair.logs["receiver"].read_text()
        assert "replay or reordering" in log and "tag does not verify" in log
        keys = _drain(pair)
        assert len(keys) >= 8
        status, body = _dec(pair, [k["key_ID"] for k in keys[:64]])
        assert status == 200 and body["keys"] == keys[:64]
        material = [base64.b64decode(k["key"]) for k in keys]
        assert find_key_windows(b"".join(proxy.raw), material) == 0
    finally:
        pair.stop()
        proxy.close()


def test_sigkill_never_reuses_the_pad_nor_delivers_a_key_to_one_side(tmp_path: Path) -> None:
    pair, proxy = _recorded_pair(tmp_path)
    pair.start("receiver")
    pair.start("transmitter")

    def ok_blocks(n: int) -> None:
        pair.wait_status(
            "transmitter", lambda s: s["status_extension"]["qkd_link"]["blocks_ok"] >= n, 150
        )

    try:
        ok_blocks(2)
        pair.kill("receiver")
        pair.start("receiver")
        done = pair.status("transmitter")["status_extension"]["qkd_link"]["blocks_ok"]
        ok_blocks(done + 2)
        time.sleep(0.4)  # kill the transmitter somewhere inside a block
        pair.kill("transmitter")
        pair.start("transmitter")
        done = pair.wait_status("transmitter", lambda s: True)["status_extension"]["qkd_link"][
            "blocks_ok"
        ]
        ok_blocks(done + 2)
        keys = _drain(pair)
        assert keys
        for i in range(0, len(keys), 64):
            chunk = keys[i : i + 64]
            status, body = _dec(pair, [k["key_ID"] for k in chunk])
            assert status == 200, body
            assert body["keys"] == chunk
    finally:
        pair.stop()
        proxy.close()
    for direction, spans in frame_intervals(proxy.frames).items():
        spans.sort()
        for (_, a1), (b0, _) in itertools.pairwise(spans):
            assert a1 <= b0, f"pad bytes {b0}..{a1} of direction {direction} used twice"


def test_eve_at_run_time_raises_the_alarm_and_clears_when_she_leaves(tmp_path: Path) -> None:
    pair = make_pair(tmp_path, block_pulses=300_000_000, max_key_count=1_000_000)
    pair.start("receiver")
    pair.start("transmitter")
    try:
        _eve_scenario(pair)
    finally:
        pair.stop()


def _eve_scenario(pair: Pair) -> None:
    def link(s: dict[str, object]) -> dict[str, object]:
        ext = s["status_extension"]
        assert isinstance(ext, dict)
        out: dict[str, object] = ext["qkd_link"]
        return out

    pair.wait_status("transmitter", lambda s: link(s)["blocks_ok"] >= 1, 120)
    with pair.client("admin") as c:
        r = c.post(f"{pair.url('transmitter')}/admin/v1/eve", json={"fraction": 0.7})
        assert r.status_code == 200 and r.json() == {"eve_fraction": 0.7}
    st = pair.wait_status("transmitter", lambda s: link(s)["eavesdropper_alarm"] is True, 120)
    assert link(st)["last_abort_reason"] == "qber_above_threshold"
    with pair.client("admin") as c:
        c.post(f"{pair.url('transmitter')}/admin/v1/eve", json={"fraction": 0.0})
    pair.wait_status("transmitter", lambda s: link(s)["eavesdropper_alarm"] is False, 120)
