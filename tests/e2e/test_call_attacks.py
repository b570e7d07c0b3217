"""Attacks on a real `qphone` process from a hostile peer (real aiortc, real keyserver pair).

The attacker is this test: it speaks WebRTC and the handshake through the library, and sends
what an honest peer never would. The `qphone` process must end with a clean failure: an abort
to the other side when it is the one failing, the `--json` summary with `error`, exit code 1,
and nothing on its terminal that the attacker chose to put there.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from qphone.config.profile import load_profile
from qphone.core.abort import Abort, AbortKind, decode_abort, is_abort
from qphone.core.callparams import CallParams
from qphone.core.handshake import ClientHello, Initiator
from qphone.core.identity import Identity
from qphone.endpoint.keysupply import retry_out_of_keys
from qphone.kmeclient import KmeClient
from qphone.transport.calltransport import CallTransport
from qphone.transport.config import LOOPBACK_ADDRESSES, TransportConfig
from tests.support.keyserverdemo import private_profile
from tests.support.qphoneprocess import answering, finish, qphone

pytestmark = pytest.mark.slow
HOST = "127.0.0.1"
LOOP = ["--ice-host", HOST]
CONFIG = TransportConfig(host_addresses=LOOPBACK_ADDRESSES, connect_timeout=10)
ESC = "\x1b"


async def low_order_caller(port: int, profile: Path) -> bytes:
    """Call like alice, with real QKD key IDs, but an all-zero X25519 public key."""
    transport = CallTransport(CONFIG)
    try:
        await transport.connect_as_caller(HOST, port)
        async with KmeClient.from_profile(load_profile(profile)) as kme:
            # the module's KME pair is shared: wait out an empty pool like qphone does
            keys = await retry_out_of_keys(lambda: kme.enc_keys("bob", 1, 256), 60)
        hello = Initiator(Identity.generate(), CallParams(), keys, transport.channel_binding())
        forged = replace(ClientHello.decode(hello.start()), x25519=bytes(32))
        transport.send_control(forged.encode())
        return await transport.recv_control(timeout=30)
    finally:
        await transport.close()


def test_a_low_order_x25519_key_is_refused_and_the_answerer_waits_on(
    keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """A caller's invalid key share is refused with an abort naming it; `qphone answer` says
    in one line that the call was not taken and listens again (a bad caller cannot end it)."""
    port = free_port()
    bob, _ = answering(
        "--listen",
        f"{HOST}:{port}",
        "--profile",
        str(private_profile(keyserver_pair, "bob", tmp_path)),
        "--json",
        *LOOP,
    )
    try:
        alice = private_profile(keyserver_pair, "alice", tmp_path)
        reply = asyncio.run(asyncio.wait_for(low_order_caller(port, alice), 60))
        assert bob.stderr is not None
        lines: list[str] = []
        while not any("waiting for a call" in x for x in lines[1:]):
            line = bob.stderr.readline().decode()
            assert line, f"qphone answer ended: {''.join(lines)}"
            if lines or "not taken" in line:
                lines.append(line)
        assert bob.poll() is None  # still listening
        bob.send_signal(signal.SIGINT)
        rc, _, err = finish(bob)
    finally:
        bob.kill()
    assert is_abort(reply), reply[:80]
    abort = decode_abort(reply)
    assert abort.kind is AbortKind.FAILED and "X25519" in abort.reason, abort
    assert "not taken" in lines[0] and "invalid X25519 public key" in lines[0], lines
    assert rc == 130, err  # ended by the interrupt, not by the caller
    assert "Traceback" not in "".join(lines) + err


async def forging_answerer(port: int, listening: asyncio.Event) -> bytes:
    """Answer the call, read its ClientHello, answer with an abort full of identity words and
    terminal escapes."""
    transport = CallTransport(CONFIG)
    try:
        await transport.accept_as_answerer(
            HOST, port, on_listening=lambda _: listening.set(), accept_timeout=60
        )
        hello = await transport.recv_control(timeout=30)
        forged = Abort(
            AbortKind.IDENTITY_REFUSED,
            f"{ESC}[2J{ESC}[1;31m!!! the peer refused this terminal's identity: it has another "
            "key pinned for alice. Re-run with --trust-new-identity now"
            f"{ESC}]0;qphone: trusted{ESC}\\\r\n",
        )
        transport.send_control(forged.encode())
        await asyncio.sleep(1.0)
        return hello
    finally:
        await transport.close()


def test_a_forged_abort_with_identity_words_is_shown_neutrally(
    keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    port = free_port()
    profile = private_profile(keyserver_pair, "alice", tmp_path)

    async def attack() -> tuple[bytes, tuple[int, dict[str, object], str]]:
        listening = asyncio.Event()
        answerer = asyncio.ensure_future(forging_answerer(port, listening))
        await asyncio.wait_for(listening.wait(), 30)
        alice = qphone("call", f"{HOST}:{port}", "--profile", str(profile), "--json", *LOOP)
        try:
            result = await asyncio.to_thread(finish, alice)
        finally:
            alice.kill()
        return await answerer, result

    hello, (rc, summary, err) = asyncio.run(asyncio.wait_for(attack(), 120))
    assert ClientHello.decode(hello)  # the caller did send its ClientHello
    assert rc == 1, err
    error = str(summary["error"])
    assert error.startswith("the handshake was ended by an unauthenticated abort message"), error
    assert "nothing in it is verified" in error and "claims 'identity not accepted'" in error
    # nothing the attacker wrote reaches the terminal as control characters
    assert ESC not in err and "\r" not in err and "\x07" not in err
    # and no advice: this side has no evidence that its identity was refused
    assert "peer must verify" not in err and "IDENTITY OF" not in err
    known_peers = load_profile(profile).known_peers
    assert not known_peers.exists() or "bob" not in known_peers.read_text()
