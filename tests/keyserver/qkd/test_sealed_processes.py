"""Real module pairs on loopback with a recorder on the quantum channel: the emulated pair agrees
on keys it never sent in the clear, and in both fidelities a modified or replayed quantum frame
is refused (the session closes, one log line) and the link recovers."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from tests.keyserver.qkd.modulesupport import (
    Pair,
    RecordingProxy,
    find_key_windows,
    free_port,
    make_pair,
)


def _link(s: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = s["status_extension"]["qkd_link"]
    return out


def _recorded(tmp_path: Path, **kw: Any) -> tuple[Pair, RecordingProxy]:
    qport = free_port()
    proxy = RecordingProxy(qport)
    pair = make_pair(tmp_path, quantum_port=qport, quantum_connect_port=proxy.port, **kw)
    pair.start("receiver")
    pair.start("transmitter")
    return pair, proxy


def _blocks(pair: Pair, n: int, timeout: float = 120.0) -> int:
    st = pair.wait_status("transmitter", lambda s: _link(s)["blocks_ok"] >= n, timeout)
    return int(_link(st)["blocks_ok"])


def _keys(pair: Pair, number: int) -> list[bytes]:
    """Keys from the transmitter's enc_keys, checked against the receiver's dec_keys."""
    with pair.client("nodeA") as c:
        r = c.post(f"{pair.url('transmitter')}/api/v1/keys/nodeB/enc_keys", json={"number": number})
    assert r.status_code == 200, r.text
    keys = r.json()["keys"]
    with pair.client("nodeB") as c:
        r = c.post(
            f"{pair.url('receiver')}/api/v1/keys/nodeA/dec_keys",
            json={"key_IDs": [{"key_ID": k["key_ID"]} for k in keys]},
        )
    assert r.status_code == 200, r.text
    assert r.json()["keys"] == keys
    return [base64.b64decode(k["key"]) for k in keys]


def _refused(pair: Pair, count: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pair.logs["receiver"].read_text().count('"quantum_frame_refused"') >= count:
            return
        time.sleep(0.2)
    raise AssertionError("the receiver did not refuse the frame\n" + pair.logs_text())


def test_emulated_pair_keys_never_cross_in_the_clear_and_tampering_is_refused(
    tmp_path: Path,
) -> None:
    pair, proxy = _recorded(
        tmp_path,
        fidelity="emulated",
        block_pulses=1_000_000_000,
        max_key_count=1_000_000,
        seed=None,
        testing=False,
    )
    try:
        done = _blocks(pair, 2)
        keys = _keys(pair, 64)
        st = pair.status("transmitter")
        assert _link(st)["fidelity"] == "emulated" and _link(st)["eavesdropper_alarm"] is False
        # a modified frame, then a replayed one (from the previous connection): both refused
        proxy.tamper_next_tx = True
        _refused(pair, 1)
        done = _blocks(pair, done + 1)
        old = next(f for who, f in proxy.frames if who == "tx")
        proxy.inject_to_receiver(old)
        _refused(pair, 2)
        _blocks(pair, done + 1)
        keys += _keys(pair, 64)  # the link recovered and both ends still agree
        log = pair.logs["receiver"].read_text()
        assert "sealed quantum-channel frame does not open" in log
        record = b"".join(proxy.raw)
        assert len(record) > 2 * sum(len(k) for k in keys)  # the key material did cross here
        assert find_key_windows(record, keys) == 0
        assert b"QEK1" not in record  # not even the frames' plaintext structure
    finally:
        pair.stop()
        proxy.close()


def test_physics_quantum_channel_is_sealed_too(tmp_path: Path) -> None:
    pair, proxy = _recorded(tmp_path, block_pulses=300_000_000, max_key_count=1_000_000)
    try:
        _blocks(pair, 1, 180)
        record = b"".join(proxy.raw)
        assert len(record) > 100_000
        assert b"QCF1" not in record  # the photon records' frames are not readable
        proxy.tamper_next_tx = True
        _refused(pair, 1, 120)
        assert _link(pair.status("receiver"))["fidelity"] == "physics"
    finally:
        pair.stop()
        proxy.close()


def test_emulated_pair_shows_eve_within_a_block_while_its_stock_is_full(tmp_path: Path) -> None:
    pair = make_pair(tmp_path, fidelity="emulated", block_pulses=1_000_000_000, max_key_count=64)
    pair.start("receiver")
    pair.start("transmitter")
    try:
        # the first block fills the stock (a block already started may add to it); from then
        # on only test blocks run
        _blocks(pair, 2)
        assert pair.status("receiver")["stored_key_count"] >= 64
        with pair.client("admin") as c:
            r = c.post(f"{pair.url('transmitter')}/admin/v1/eve", json={"fraction": 0.5})
            assert r.status_code == 200
        st = pair.wait_status("receiver", lambda s: _link(s)["eavesdropper_alarm"] is True, 60)
        assert _link(st)["last_abort_reason"] == "qber_above_threshold"
        aborted = _link(st)["blocks_aborted"]
        after = pair.wait_status("receiver", lambda s: _link(s)["blocks_aborted"] > aborted, 60)
        assert after["stored_key_count"] == st["stored_key_count"]  # no key from her blocks
        with pair.client("admin") as c:
            c.post(f"{pair.url('transmitter')}/admin/v1/eve", json={"fraction": 0.0})
        pair.wait_status("receiver", lambda s: _link(s)["eavesdropper_alarm"] is False, 60)
    finally:
        pair.stop()
