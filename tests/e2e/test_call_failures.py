"""Calls between qphone processes that must fail or degrade with a clear message on both sides."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qphone.config.profile import load_profile
from qphone.kmeclient import KmeClient
from tests.support.audiocompare import wav_array
from tests.support.keyserverdemo import keyserver_demo, private_profile
from tests.support.paths import SAMPLES
from tests.support.qphoneprocess import answering, finish, qphone

pytestmark = pytest.mark.slow
HOST = "127.0.0.1"
LOOP = ["--ice-host", HOST]


def test_ten_percent_loss_call_continues(
    keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    port = free_port()
    out = tmp_path / "alice.wav"
    bob, _ = answering(
        "--listen",
        f"{HOST}:{port}",
        "--profile",
        str(private_profile(keyserver_pair, "bob", tmp_path)),
        "--input",
        str(SAMPLES / "speech_b_48k.wav"),
        "--json",
        "--loss",
        "0.1",
        "--seed",
        "3",
        *LOOP,
    )
    alice = qphone(
        "call",
        f"{HOST}:{port}",
        "--profile",
        str(private_profile(keyserver_pair, "alice", tmp_path)),
        "--duration",
        "5",
        "--output",
        str(out),
        "--input",
        str(SAMPLES / "speech_a_48k.wav"),
        "--json",
        "--loss",
        "0.1",
        "--seed",
        "4",
        *LOOP,
    )
    rc_a, sa, err = finish(alice)
    rc_b, sb, _ = finish(bob)
    assert rc_a == 0 and rc_b == 0, err
    for s in (sa, sb):
        assert 0.04 < s["frames_lost"] / (s["frames_received"] + s["frames_lost"]) < 0.2
        assert s["frames_concealed"] + s["frames_fec_recovered"] >= s["frames_lost"] * 0.5
        assert s["end_reason"] in (
            "duration of 5 s reached",
            "peer hung up (duration of 5 s reached)",
        )
    assert (wav_array(out) ** 2).mean() > 300**2


def test_eavesdropper_reported_and_out_of_key(tmp_path: Path, free_port: Callable[[], int]) -> None:
    """Intercept-resend on 80% of pulses: no key is delivered and the call refuses to start."""
    # the second part's pair (too little key) starts beside the first's: a pair's start waits
    # mostly for its first block, not for the CPU. The pool's thread started it (its parent
    # for PR_SET_PDEATHSIG) and lives until the pool is shut down; then the pair is stopped,
    # also when the first part fails
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(max_workers=1) as pool:
        small = pool.submit(
            stack.enter_context, keyserver_demo(tmp_path / "small", "--max-key-count", "4")
        )
        _eavesdropper_reported(tmp_path, free_port)
        _out_of_key(small.result(), free_port)


def _eavesdropper_reported(tmp_path: Path, free_port: Callable[[], int]) -> None:
    with keyserver_demo(tmp_path / "eve", "--eve-fraction", "0.8") as d:
        profile = load_profile(d / "alice.toml")

        async def status_alarm() -> bool:
            async with KmeClient.from_profile(profile) as kme:
                for _ in range(60):
                    st = await kme.status("bob")
                    if st.eavesdropper_alarm:
                        return True
                    await asyncio.sleep(0.5)
            return False

        assert asyncio.run(status_alarm())
        rc, summary, err = finish(
            qphone("call", f"{HOST}:{free_port()}", "--profile", str(d / "alice.toml"), "--json")
        )
        assert rc == 1
        assert re.search(r"eavesdrop", summary["error"], re.I), summary
        assert "eavesdrop" in err.lower()


def _out_of_key(d: Path, free_port: Callable[[], int]) -> None:
    """A KME whose pool holds too little key for the call's pad blocks: out of key, fail
    closed."""
    port = free_port()
    bob, _ = answering(
        "--listen",
        f"{HOST}:{port}",
        "--profile",
        str(d / "bob.toml"),
        "--json",
        *LOOP,
    )
    rc, summary, err = finish(
        qphone(
            "call",
            f"{HOST}:{port}",
            "--profile",
            str(d / "alice.toml"),
            "--mode",
            "otp",
            "--json",
            "--duration",
            "5",
            *LOOP,
        )
    )
    rc_b, sb, err_b = finish(bob)
    assert rc == 1, err
    assert re.search(r"out of key|not enough|no one-time pad", summary["error"], re.I), summary
    assert rc_b == 1 and sb.get("error"), err_b
    assert json.dumps(summary)  # summary still printed for scripts
