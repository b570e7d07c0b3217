"""In a terminal, a call uses the system's default sound devices; without one, it says so first.

The PulseAudio fixture (tests/conftest.py) is the system here: a private daemon whose null sink
is the default output and whose monitor is the default input.  `qphone call` runs with a
pseudo-terminal as its stdin (a user's terminal) and no --input/--output: what bob says must
come out of the default sink, recorded from its monitor with `parec`.  With no sound server,
the same command stops before any network activity with one line naming `qphone devices`.
"""

from __future__ import annotations

import os
import pty
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from qphone.audio.opus import OpusConfig
from tests.support.audiocompare import reference_decode, speech_windows
from tests.support.keyserverdemo import private_profile
from tests.support.paths import BIN, SAMPLES
from tests.support.pulseaudio import PulseServer
from tests.support.qphoneprocess import Running

pytestmark = [pytest.mark.slow, pytest.mark.sound]
HOST = "127.0.0.1"
LOOP = ["--ice-host", HOST]


def test_a_call_in_a_terminal_plays_on_the_default_output(
    pulse_server: PulseServer, keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    if shutil.which("parec") is None:
        pytest.skip("parec is not installed (Debian package 'pulseaudio-utils'; `make setup`)")
    port = free_port()
    bob = Running(
        "answer",
        "--listen",
        f"{HOST}:{port}",
        "--profile",
        str(private_profile(keyserver_pair, "bob", tmp_path)),
        "--input",
        str(SAMPLES / "speech_b_48k.wav"),
        "--output",
        "discard",
        *LOOP,
    )
    bob.wait_for("waiting for a call")
    recording = tmp_path / "monitor.raw"
    with recording.open("wb") as sink:  # a file, not a pipe: a full pipe would stall parec
        recorder = subprocess.Popen(
            ["parec", f"--device={pulse_server.monitor}", "--format=s16le", "--rate=48000",
             "--channels=1", "--raw"],
            stdout=sink,
            env={**os.environ, **pulse_server.env},
        )  # fmt: skip
    terminal, user = pty.openpty()
    try:
        alice = Running(
            "call",
            f"{HOST}:{port}",
            "--profile",
            str(private_profile(keyserver_pair, "alice", tmp_path)),
            "--duration",
            "6",
            "--json",
            *LOOP,
            stdin=user,
        )
        rc, summary, err = alice.finish(timeout=60)
        rc_b, _, err_b = bob.finish(timeout=30)
    finally:
        os.close(user)
        os.close(terminal)
        recorder.terminate()
        bob.kill()
    recorder.wait(timeout=10)
    recorded = recording.read_bytes()
    assert rc == 0 and rc_b == 0, err + err_b
    assert summary["frames_received"] > 200 and summary["frames_sent"] > 200, summary
    got = np.frombuffer(recorded, dtype="<i2").astype(np.float64)
    assert np.sqrt(np.mean(got**2)) > 300, "nothing reached the default output"
    scores = speech_windows(got, reference_decode(SAMPLES / "speech_b_48k.wav", OpusConfig()))
    assert len(scores) >= 4 and np.median(scores) > 0.8, scores


def _qphone_devices(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "qphone"), "devices"], env=env, capture_output=True, text=True, check=False
    )


def test_without_a_sound_device_the_call_stops_first_and_names_the_fix(
    keyserver_pair: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PULSE_SERVER": f"unix:{tmp_path / 'no-such-socket'}"}
    for key in ("PULSE_CLIENTCONFIG", "PULSE_COOKIE"):
        env.pop(key, None)
    listing = _qphone_devices(env)
    if not listing.stdout.startswith("no sound devices found"):
        pytest.skip("this machine has sound devices even without a PulseAudio server")
    assert listing.returncode == 0 and "--input FILE.wav" in listing.stdout
    terminal, user = pty.openpty()
    with socket.socket() as target:
        target.bind((HOST, 0))
        target.listen(1)
        target.setblocking(False)
        try:
            rc, summary, err = Running(
                "call",
                f"{HOST}:{target.getsockname()[1]}",
                "--profile",
                str(private_profile(keyserver_pair, "alice", tmp_path)),
                "--json",
                stdin=user,
                env=env,
            ).finish(timeout=30)
        finally:
            os.close(user)
            os.close(terminal)
        with pytest.raises(BlockingIOError):
            target.accept()  # nobody was called
    assert rc == 2, err
    assert err.splitlines() == [
        "qphone call: --input default: the default sound input device cannot be used: no sound "
        "input device found; `qphone devices` lists the sound devices; use --input FILE.wav / "
        "--output FILE.wav, or --input silence / --output discard"
    ], err
    assert summary["error"].startswith("--input default: the default sound input device")
