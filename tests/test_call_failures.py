"""Calls that must fail (or degrade) with a clear message on both sides, keys erased."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path

import pytest

from qphone.call import CallEndpoint, CallFailed, CallOptions
from qphone.core.identity import Identity
from qphone.kmeclient import KmeClient
from qphone.knownpeers import KnownPeers
from qphone.mediatransport import LOOPBACK_ADDRESSES, CallTransport, TransportConfig
from qphone.profile import Profile, load_profile
from qphone.signaling import SignalingListener
from tests.support.callsupport import (
    SAMPLES,
    answering,
    finish,
    free_port,
    keyserver_demo,
    private_profile,
    qphone,
    wav_array,
)

pytestmark = pytest.mark.slow
HOST = "127.0.0.1"
LOOP = ["--ice-host", HOST]


def opts(**kw: object) -> CallOptions:
    base: dict[str, object] = {
        "transport": TransportConfig(host_addresses=LOOPBACK_ADDRESSES, connect_timeout=5),
        "status": False,
        "duration": 2.0,
    }
    base.update(kw)
    return CallOptions(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    with keyserver_demo(tmp_path_factory.mktemp("kme") / "demo") as d:
        yield d


def profiles(demo: Path, tmp: Path) -> tuple[Profile, Profile]:
    """Fresh identities and pins per test, same KMEs."""
    a, b = load_profile(demo / "alice.toml"), load_profile(demo / "bob.toml")
    from dataclasses import replace

    return (
        replace(a, identity_file=tmp / "a.id", known_peers=tmp / "a.peers.json"),
        replace(b, identity_file=tmp / "b.id", known_peers=tmp / "b.peers.json"),
    )


async def pair(a: CallEndpoint, b: CallEndpoint) -> tuple[object, object]:
    port = free_port()
    answer = asyncio.ensure_future(b.answer(HOST, port, accept_timeout=20))
    await asyncio.sleep(0.3)
    results = await asyncio.gather(a.call(HOST, port), answer, return_exceptions=True)
    return results[0], results[1]


async def test_kme_unreachable_fails_closed_or_runs_pqc_only(demo: Path, tmp_path: Path) -> None:
    pa, pb = profiles(demo, tmp_path)
    from dataclasses import replace

    dead = replace(pa, kme_url=f"https://127.0.0.1:{free_port()}")
    with pytest.raises(CallFailed, match=r"unreachable.*--allow-pqc-only"):
        await CallEndpoint(dead, opts()).call(HOST, free_port())
    a = CallEndpoint(dead, opts(allow_pqc_only=True))
    b = CallEndpoint(pb, opts(allow_pqc_only=True, duration=None))
    ra, rb = await pair(a, b)
    assert isinstance(ra, dict) and isinstance(rb, dict), (ra, rb)
    assert ra["pqc_only"] and rb["pqc_only"] and ra["sas"] == rb["sas"]
    assert ra["qkd_bits_consumed"] == 0 and ra["frames_received"] > 50
    assert any("PQC-only" in w for w in ra["warnings"])
    # without --allow-pqc-only the answering side refuses a PQC-only caller
    a = CallEndpoint(dead, opts(allow_pqc_only=True))
    b = CallEndpoint(pb, opts(duration=None))
    ra, rb = await pair(a, b)
    assert isinstance(rb, CallFailed) and "allow-pqc-only" in str(rb)
    assert isinstance(ra, CallFailed) and "peer aborted" in str(ra)


async def test_wrong_peer_identity_refused(demo: Path, tmp_path: Path) -> None:
    pa, pb = profiles(demo, tmp_path)
    KnownPeers(pa.known_peers).repin("bob", Identity.generate().public)  # a different bob
    a, b = CallEndpoint(pa, opts()), CallEndpoint(pb, opts(duration=None))
    ra, rb = await pair(a, b)
    assert isinstance(ra, CallFailed) and "IDENTITY OF bob CHANGED" in str(ra)
    assert isinstance(rb, CallFailed) and "peer aborted" in str(rb)
    assert a.session is None and b.session is None  # no key was ever put to use
    # after verifying out of band, the user re-pins explicitly
    a = CallEndpoint(pa, opts(trust_new_identity=True))
    b = CallEndpoint(pb, opts(duration=None))
    ra, rb = await pair(a, b)
    assert isinstance(ra, dict) and ra["frames_received"] > 0
    assert KnownPeers(pa.known_peers).pinned("bob") == b.identity.public
    # the live status line shows the call's state
    line = a.status_line()
    for part in (ra["sas"], "epoch tx", "QKD", "RTT", "loss", "jb", "dBFS"):
        assert part in line, line


async def test_man_in_the_middle_relay_detected(demo: Path, tmp_path: Path) -> None:
    """A relay terminating DTLS on both legs and forwarding everything: the handshake fails."""
    pa, pb = profiles(demo, tmp_path)
    a, b = CallEndpoint(pa, opts()), CallEndpoint(pb, opts(duration=None))
    real, fake = free_port(), free_port()
    cfg = TransportConfig(host_addresses=LOOPBACK_ADDRESSES, connect_timeout=5)
    relay_in, relay_out = CallTransport(cfg), CallTransport(cfg)

    async def relay() -> None:
        async with await SignalingListener.open(HOST, fake) as listener:
            await asyncio.sleep(0.3)
            await relay_out.connect_as_caller(HOST, real)
            await relay_in.answer_on(await listener.accept(timeout=10))

        async def pump(src: CallTransport, dst: CallTransport) -> None:
            while True:
                dst.send_control(await src.recv_control())

        await asyncio.gather(pump(relay_in, relay_out), pump(relay_out, relay_in))

    answer = asyncio.ensure_future(b.answer(HOST, real, accept_timeout=20))
    mitm = asyncio.ensure_future(relay())
    try:
        await asyncio.sleep(0.2)
        ra = await asyncio.gather(a.call(HOST, fake), return_exceptions=True)
        rb = await asyncio.wait_for(asyncio.gather(answer, return_exceptions=True), 20)
    finally:
        mitm.cancel()
        await relay_in.close()
        await relay_out.close()
    assert isinstance(ra[0], CallFailed) and "man in the middle" in str(ra[0])
    assert isinstance(rb[0], CallFailed)
    assert a.session is None and b.session is None


async def test_peer_vanishes_mid_call(demo: Path, tmp_path: Path) -> None:
    pa, _ = profiles(demo, tmp_path)
    port = free_port()
    bob, _ = answering(
        "--listen",
        f"{HOST}:{port}",
        "--profile",
        str(private_profile(demo, "bob", tmp_path)),
        *LOOP,
    )
    try:
        a = CallEndpoint(pa, opts(duration=30))
        call = asyncio.ensure_future(a.call(HOST, port))
        for _ in range(100):
            if a.state.frames_received > 25:
                break
            await asyncio.sleep(0.1)
        bob.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(CallFailed, match="connection lost"):
            await asyncio.wait_for(call, 20)
        assert time.monotonic() - t0 < 12
        assert a.session is not None and a.session.closed  # keys erased
    finally:
        bob.kill()
        bob.wait()


def test_ten_percent_loss_call_continues(demo: Path, tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "alice.wav"
    bob, _ = answering(
        "--listen",
        f"{HOST}:{port}",
        "--profile",
        str(private_profile(demo, "bob", tmp_path)),
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
        str(private_profile(demo, "alice", tmp_path)),
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


def test_eavesdropper_reported_and_out_of_key(tmp_path: Path) -> None:
    """Intercept-resend on 80% of pulses: no key is delivered and the call refuses to start."""
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
    # a KME whose pool holds too little key for the call's pad blocks: out of key, fail closed
    with keyserver_demo(tmp_path / "small", "--max-key-count", "4") as d:
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


async def test_otp_warns_before_the_pad_runs_out(demo: Path, tmp_path: Path) -> None:
    from qphone.core.callparams import CallParams, Mode
    from qphone.inmemorycall import InMemoryCall, MemoryKmePair, handshake

    pa, _ = profiles(demo, tmp_path)
    endpoint = CallEndpoint(pa, opts())
    kme = MemoryKmePair()
    ini, res = handshake(
        Identity.generate(),
        Identity.generate(),
        CallParams(mode=Mode.OTP, pad_block_bits=8192, lookahead=1),
        kme,
    )
    call = InMemoryCall(ini, res, kme)
    call.pump()
    endpoint.state.frames_sent, endpoint.state.payload_bytes_sent = 100, 6000  # 60 B/frame
    endpoint._check_pad(call.initiator)  # 1 KiB of pad = 0.3 s of talk at 60+8 B/frame
    assert any("one-time pad for only" in w for w in endpoint.state.warnings)
    await endpoint.kme.aclose()
