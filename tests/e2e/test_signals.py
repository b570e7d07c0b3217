"""SIGINT and SIGTERM end a real `qphone answer` / `qphone call` in every phase, cleanly.

Waiting for a call, connecting (to a terminal that never answers), in the handshake (with a
peer that connects and then stays silent) and in a call: each test signals a real process and
checks its exit code (130 before a call was established, 0 for a hang-up in a call), its last
words, its ``--json`` summary, and what the other side heard.  Waits are bounded; no test
asserts how long anything took.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.keyserverdemo import private_profile
from tests.support.paths import ROOT, SAMPLES
from tests.support.qphoneprocess import Running

pytestmark = pytest.mark.slow
HOST = "127.0.0.1"
LOOP = ["--ice-host", HOST]
SIGNALS = [signal.SIGINT, signal.SIGTERM]


def _clean_exit(rc: int, summary: dict, err: str, doing: str) -> None:
    assert rc == 130, err
    assert summary["end_cause"] == "cancelled" and summary["ended_by"] == "this side", summary
    assert summary["end_reason"] == f"interrupted while {doing}", summary
    assert "error" not in summary
    assert f"call ended: interrupted while {doing}" in err
    assert "Traceback" not in err


class SilentPeer:
    """tests/support/silentpeer.py as a process: connects, then never speaks the handshake."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.silentpeer", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def next(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the silent peer exited"
        return json.loads(line)

    def until(self, key: str) -> dict:
        while True:
            event = self.next()
            if key in event:
                return event

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A TCP socket that accepts a caller and never answers (a frozen answerer)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen(4)
        s.settimeout(30)
        yield s


@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_answer_stops_while_waiting_for_a_call(
    keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int], sig: int
) -> None:
    port = free_port()
    bob = Running(
        "answer",
        "--listen",
        f"{HOST}:{port}",
        "--profile",
        str(private_profile(keyserver_pair, "bob", tmp_path)),
        "--json",
    )
    bob.wait_for("waiting for a call")
    bob.signal(sig)
    _clean_exit(*bob.finish(timeout=10), "waiting for a call")
    with socket.socket() as s:  # the port was released
        s.bind((HOST, port))


@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_call_stops_while_connecting_to_a_frozen_answerer(
    keyserver_pair: Path, tmp_path: Path, silent_listener: socket.socket, sig: int
) -> None:
    port = silent_listener.getsockname()[1]
    alice = Running(
        "call",
        f"{HOST}:{port}",
        "--profile",
        str(private_profile(keyserver_pair, "alice", tmp_path)),
        "--json",
    )
    alice.wait_for("calling")
    conn, _ = silent_listener.accept()  # it connected and now waits for an answer
    with conn:
        alice.signal(sig)
        _clean_exit(*alice.finish(timeout=10), "connecting")


def test_connect_timeout_ends_the_wait_with_one_line(
    keyserver_pair: Path, tmp_path: Path, silent_listener: socket.socket
) -> None:
    port = silent_listener.getsockname()[1]
    alice = Running(
        "call",
        f"{HOST}:{port}",
        "--profile",
        str(private_profile(keyserver_pair, "alice", tmp_path)),
        "--connect-timeout",
        "1",
        "--json",
    )
    rc, summary, err = alice.finish(timeout=30)
    assert rc == 1, err
    assert summary["error"].startswith(f"no answer from {HOST}:{port} within 1.0 s"), summary
    assert "give more time with --connect-timeout" in summary["error"]  # the option to change
    assert summary["ended_by"] == "network" and summary["qkd_bits_drawn"] == 0
    failures = [line for line in err.splitlines() if "no answer from" in line]
    assert failures == [f"call failed: {summary['error']}"], err
    assert "Traceback" not in err


def test_call_stops_in_the_handshake_and_tells_the_peer(
    keyserver_pair: Path, tmp_path: Path
) -> None:
    peer = SilentPeer("answer")
    try:
        port = peer.until("port")["port"]
        alice = Running(
            "call",
            f"{HOST}:{port}",
            "--profile",
            str(private_profile(keyserver_pair, "alice", tmp_path)),
            "--json",
            *LOOP,
        )
        alice.wait_for("answered: handshake")
        peer.until("connected")
        alice.signal(signal.SIGINT)
        _clean_exit(*alice.finish(timeout=10), "in the handshake")
        assert peer.until("abort")["abort"] == "the other side hung up during the handshake"
    finally:
        peer.stop()


def test_answer_stops_in_the_handshake_and_tells_the_peer(
    keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    port = free_port()
    bob = Running(
        "answer",
        "--listen",
        f"{HOST}:{port}",
        "--profile",
        str(private_profile(keyserver_pair, "bob", tmp_path)),
        "--json",
        *LOOP,
    )
    bob.wait_for("waiting for a call")
    peer = SilentPeer("call", str(port))
    try:
        bob.wait_for("call from alice: handshake")
        peer.until("connected")
        bob.signal(signal.SIGTERM)
        _clean_exit(*bob.finish(timeout=10), "in the handshake")
        assert peer.until("abort")["abort"] == "the other side hung up during the handshake"
    finally:
        peer.stop()


def test_sigterm_in_a_call_hangs_up_on_both_sides(
    keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    port = free_port()
    bob = Running(
        "answer",
        "--listen",
        f"{HOST}:{port}",
        "--profile",
        str(private_profile(keyserver_pair, "bob", tmp_path)),
        "--input",
        str(SAMPLES / "speech_b_48k.wav"),
        "--loop",
        "--json",
        *LOOP,
    )
    bob.wait_for("waiting for a call")
    alice = Running(
        "call",
        f"{HOST}:{port}",
        "--profile",
        str(private_profile(keyserver_pair, "alice", tmp_path)),
        "--json",
        *LOOP,
    )
    try:
        bob.wait_for("SAS:")
        alice.wait_for("SAS:")
        bob.signal(signal.SIGTERM)
        rc_b, sb, err_b = bob.finish(timeout=15)
        rc_a, sa, err_a = alice.finish(timeout=15)
    finally:
        alice.kill()
        bob.kill()
    assert rc_b == 0 and sb["end_reason"] == "interrupted", err_b
    # each side said at the start what it plays and records, and how the input is converted
    wav = SAMPLES / "speech_b_48k.wav"
    assert f"audio in: WAV file {wav} (48 kHz, mono, 16-bit PCM: repeated); out: discarded" in (
        err_b
    )
    assert "audio in: silence; out: discarded" in err_a
    assert sb["end_cause"] == "interrupted" and sb["ended_by"] == "this side"
    assert rc_a == 0 and sa["end_reason"] == "peer hung up (interrupted)", err_a
    assert sa["ended_by"] == "peer" and sa["end_cause"] == "peer bye"
    assert "Traceback" not in err_a + err_b


def test_an_answerer_outlives_a_caller_that_goes_silent_in_the_handshake(
    keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """The caller connects and never speaks the handshake (frozen, or gone without a word):
    the answerer gives up on that call after its handshake timeout (2 s here, by its
    --handshake-timeout: the default 15 s was most of this test), tells the caller, says
    why, and waits for the next call; Ctrl-C then ends it as usual."""
    port = free_port()
    bob = Running(
        "answer",
        "--listen",
        f"{HOST}:{port}",
        "--profile",
        str(private_profile(keyserver_pair, "bob", tmp_path)),
        "--json",
        "--handshake-timeout",
        "2",
        *LOOP,
    )
    bob.wait_for("waiting for a call")
    peer = SilentPeer("call", str(port))
    try:
        peer.until("connected")
        assert "did not answer the handshake in time" in peer.until("abort")["abort"]
        note = bob.wait_for("not taken", timeout=60)
        bob.wait_for("waiting for a call")
        assert bob.proc.poll() is None  # still there for the next caller
        bob.signal(signal.SIGINT)
        _clean_exit(*bob.finish(timeout=10), "waiting for a call")
    finally:
        peer.stop()
        bob.kill()
    assert note.startswith("call from alice not taken: ")
