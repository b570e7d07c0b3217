"""A new user's mistakes, each found before anything happens and said in one line.

Every bad value, file, device or profile makes a real `qphone call` / `qphone answer` exit 2
with one line on stderr naming the option and the fix, print the ``--json`` summary with that
``error``, open no connection to the other terminal, and take no key: each test's profile talks
to the real KME through a recording proxy (tests/support/recordingkme.py), which shows that only
ETSI 014 ``status`` requests (for the profile check) reached it, or none at all for mistakes
found locally.  Then the mistakes only a call reveals: calling with the peer's profile, calling
yourself, a busy answerer, the other mode: each is said as such, before the handshake (so no
impersonation alarm) and before any key is taken.
"""

from __future__ import annotations

import signal
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.keyserverdemo import private_profile
from tests.support.paths import SAMPLES
from tests.support.qphoneprocess import Running
from tests.support.recordingkme import KmeLog, recording_kme

pytestmark = pytest.mark.slow
HOST = "127.0.0.1"
LOOP = ["--ice-host", HOST]


def _alaw_wav(path: Path) -> Path:
    """An A-law WAV (format tag 6): a WAV, but not PCM."""
    data = bytes(100)
    fmt = struct.pack("<HHIIHH", 6, 1, 8000, 8000, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data"
    body += struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def _truncated_wav(path: Path) -> Path:
    """A header that promises 8 s of 48 kHz audio, and 100 bytes of it."""
    fmt = struct.pack("<HHIIHH", 1, 1, 48000, 96000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data"
    body += struct.pack("<I", 8 * 96000) + bytes(100)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


@pytest.fixture
def alice(keyserver_pair: Path, tmp_path: Path) -> Iterator[tuple[Path, KmeLog]]:
    """alice's profile (own identity) talking to KME A through the recording proxy."""
    with recording_kme(private_profile(keyserver_pair, "alice", tmp_path), tmp_path / "a") as p:
        yield p


@pytest.fixture
def target() -> Iterator[socket.socket]:
    """Where the bad calls are pointed: a listening socket that must never see a connection."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen(4)
        s.setblocking(False)
        yield s


def _nobody_called(s: socket.socket) -> bool:
    try:
        conn, _ = s.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def _profile_with(profile: Path, section: str, key: str, value: str) -> Path:
    lines, current = [], ""
    for line in profile.read_text().splitlines():
        if line.startswith("["):
            current = line.strip("[] ")
        elif current == section and line.split("=")[0].strip() == key:
            line = f'{key} = "{value}"'
        lines.append(line)
    out = profile.with_name(f"{section}-{key}-{value}.toml")
    out.write_text("\n".join(lines) + "\n")
    return out


LOCAL_MISTAKES = [
    (["--duration", "-1"], "argument --duration: -1 is out of range: give a positive number"),
    (["--rotate-frames", "0"], "argument --rotate-frames: 0 is out of range"),
    (["--bitrate", "1000"], "argument --bitrate: 1000 is out of range"),
    (["--loss", "1.5"], "argument --loss: 1.5 is out of range: give a probability"),
    (["--connect-timeout", "0"], "argument --connect-timeout: 0 is out of range"),
    (["--pad-lookahead", "x"], "argument --pad-lookahead: 'x' is not seconds of talk"),
    (["--input", "{corrupt}"], "--input {corrupt}: not a WAV file"),
    (["--input", "{alaw}"], "--input {alaw}: A-law WAV is not supported: convert it"),
    (["--input", "{cut}"], "--input {cut}: truncated WAV file: its header says 8.00 s"),
    (["--input", "{text}"], "--input {text}: not a WAV file"),
    (["--input", "{missing}"], "--input {missing}: no such file"),
    (["--output", "{nodir}"], "--output {nodir}: directory"),
    (["--output", "{dir}"], "--output {dir}: is a directory"),
]


@pytest.mark.parametrize(("args", "message"), LOCAL_MISTAKES, ids=lambda v: str(v)[:40])
def test_a_local_mistake_is_one_line_before_any_network_activity(
    alice: tuple[Path, KmeLog],
    target: socket.socket,
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    files = {
        "corrupt": tmp_path / "corrupt.wav",
        "alaw": _alaw_wav(tmp_path / "alaw.wav"),
        "cut": _truncated_wav(tmp_path / "cut.wav"),
        "text": tmp_path / "notes.txt",
        "missing": tmp_path / "missing.wav",
        "nodir": tmp_path / "no" / "such" / "dir" / "heard.wav",
        "dir": tmp_path,
    }
    files["corrupt"].write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    files["text"].write_text("hello, this is not a sound device\n")
    args = [a.format(**files) for a in args]
    message = message.format(**files)
    profile, log = alice
    port = target.getsockname()[1]
    rc, summary, err = Running(
        "call", f"{HOST}:{port}", "--profile", str(profile), "--json", *args
    ).finish()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"qphone call: {message}"), err
    assert message.removeprefix("argument ") in summary["error"], summary
    assert summary["qkd_bits_drawn"] == 0 and summary["frames_sent"] == 0
    assert _nobody_called(target)
    assert log.calls() == []  # not even the KME was asked
    assert not (tmp_path / "alice.identity").exists()  # no state changed


def test_a_missing_sound_device_names_qphone_devices(
    alice: tuple[Path, KmeLog], target: socket.socket
) -> None:
    profile, log = alice
    rc, summary, err = Running(
        "call",
        f"{HOST}:{target.getsockname()[1]}",
        "--profile",
        str(profile),
        "--input",
        "no-such-sound-device",
        "--json",
    ).finish()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("qphone call: --input no-such-sound-device: ")
    assert "`qphone devices`" in err and "--input FILE.wav" in err
    assert _nobody_called(target) and log.calls() == []
    assert summary["error"] == err.removeprefix("qphone call: ").strip()


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("peer", "sae_id", "carol", "[peer] sae_id = 'carol', but the KME at"),
        ("sae", "id", "carol", "[sae] id = 'carol', but the KME knows this terminal's certificate"),
    ],
)
def test_a_profile_that_does_not_fit_its_kme(
    alice: tuple[Path, KmeLog],
    target: socket.socket,
    section: str,
    key: str,
    value: str,
    message: str,
) -> None:
    profile, log = alice
    wrong = _profile_with(profile, section, key, value)
    rc, summary, err = Running(
        "call", f"{HOST}:{target.getsockname()[1]}", "--profile", str(wrong), "--json"
    ).finish()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and message in err, err
    assert message in summary["error"]
    assert _nobody_called(target)
    assert log.calls() == ["status"] and log.keys_taken == 0


def test_answer_checks_before_it_listens(
    keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    port = free_port()
    rc, _, err = Running(
        "answer",
        "--listen",
        f"{HOST}:{port}",
        "--profile",
        str(private_profile(keyserver_pair, "bob", tmp_path)),
        "--output",
        str(tmp_path / "missing" / "heard.wav"),
    ).finish()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "--output" in err and "does not exist" in err
    with socket.socket() as s:  # it never listened
        assert s.connect_ex((HOST, port)) != 0


def test_port_in_use_is_one_line_and_a_summary(keyserver_pair: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        rc, summary, err = Running(
            "answer",
            "--listen",
            f"{HOST}:{port}",
            "--profile",
            str(private_profile(keyserver_pair, "bob", tmp_path)),
            "--json",
        ).finish()
    assert rc == 1, err
    assert "port is in use" in summary["error"] and "pick another --listen port" in summary["error"]
    assert [line for line in err.splitlines() if "in use" in line] == [
        f"call failed: {summary['error']}"
    ]
    assert "Traceback" not in err


# ------------------------------------------------------------------ mistakes a call reveals
def _own(demo: Path, name: str, directory: Path) -> Path:
    """The demo's profile of ``name`` with an identity of its own in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    return private_profile(demo, name, directory)


def _answerer(profile: Path, port: int, *extra: str) -> Running:
    bob = Running("answer", "--listen", f"{HOST}:{port}", "--profile", str(profile), *LOOP, *extra)
    bob.wait_for("waiting for a call")
    return bob


def _stop(proc: Running) -> str:
    """Ctrl-C for an answerer still waiting: it ends with 130."""
    alive = proc.proc.poll() is None
    proc.signal(signal.SIGINT)
    rc, _, err = proc.finish(timeout=15)
    assert rc == 130 or not alive, err
    return err


def test_calling_with_the_peers_profile(
    keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """alice's terminal uses bob's profile by mistake and calls bob."""
    port = free_port()
    bob = _answerer(_own(keyserver_pair, "bob", tmp_path / "b"), port)
    with recording_kme(_own(keyserver_pair, "bob", tmp_path / "wrong"), tmp_path / "proxy") as (
        wrong,
        log,
    ):
        try:
            rc, summary, err = Running(
                "call", f"{HOST}:{port}", "--profile", str(wrong), "--json", *LOOP
            ).finish()
            note = bob.wait_for("refused a")
        finally:
            bob_err = _stop(bob)
    assert rc == 1, err
    assert summary["error"].startswith(
        "this profile is bob's, and you are calling bob: you are calling yourself"
    ), summary
    assert "profile of alice" in summary["error"]
    assert "IDENTITY" not in err + bob_err and "trust-new-identity" not in err
    assert "uses this terminal's own profile (bob)" in note and "still waiting" in note
    assert log.keys_taken == 0 and summary["qkd_bits_drawn"] == 0  # refused before any key


def test_calling_yourself(
    keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """Both terminals run alice's profile."""
    port = free_port()
    me = _answerer(_own(keyserver_pair, "alice", tmp_path / "b"), port)
    try:
        rc, summary, err = Running(
            "call",
            f"{HOST}:{port}",
            "--profile",
            str(_own(keyserver_pair, "alice", tmp_path / "a")),
            "--json",
            *LOOP,
        ).finish()
        me.wait_for("refused a")
    finally:
        _stop(me)
    assert rc == 1 and "you are calling yourself" in summary["error"], err
    assert summary["error"].startswith("this profile is alice's, and you are calling alice")
    assert "IDENTITY" not in err


def test_a_busy_answerer_says_busy(
    keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    port = free_port()
    bob = _answerer(
        _own(keyserver_pair, "bob", tmp_path / "b"),
        port,
        "--input",
        str(SAMPLES / "speech_b_48k.wav"),
        "--loop",
    )
    first = Running(
        "call",
        f"{HOST}:{port}",
        "--profile",
        str(_own(keyserver_pair, "alice", tmp_path / "a1")),
        *LOOP,
    )
    try:
        first.wait_for("SAS:")
        with recording_kme(_own(keyserver_pair, "alice", tmp_path / "a2"), tmp_path / "proxy") as (
            second_profile,
            log,
        ):
            rc, summary, err = Running(
                "call", f"{HOST}:{port}", "--profile", str(second_profile), "--json", *LOOP
            ).finish()
        first.signal(signal.SIGINT)
        rc_first, _, err_first = first.finish(timeout=15)
        rc_bob, _, err_bob = bob.finish(timeout=15)
    finally:
        first.kill()
        bob.kill()
    assert rc == 1, err
    assert summary["error"] == "bob is busy (in another call): try again later", summary
    assert summary["ended_by"] == "peer" and "nobody is listening" not in err
    assert log.keys_taken == 0
    assert rc_first == 0 and rc_bob == 0, err_first + err_bob  # the first call went on


def test_the_other_mode_says_which_mode_the_answerer_accepts(
    keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    port = free_port()
    bob = _answerer(_own(keyserver_pair, "bob", tmp_path / "b"), port, "--mode", "otp")
    try:
        with recording_kme(_own(keyserver_pair, "alice", tmp_path / "a"), tmp_path / "proxy") as (
            profile,
            log,
        ):
            rc, summary, err = Running(
                "call", f"{HOST}:{port}", "--profile", str(profile), "--json", *LOOP
            ).finish()
        note = bob.wait_for("refused a")
    finally:
        _stop(bob)
    assert rc == 1, err
    assert summary["error"] == (
        "bob refused the call: it accepts only otp calls (it answers with --mode otp): "
        "call with --mode otp"
    ), summary
    assert "refused an aes call from alice: this terminal accepts only otp" in note
    assert log.keys_taken == 0


def test_the_answerer_keeps_waiting_after_a_callers_mistake(
    keyserver_pair: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """32-bit OTP tags against the default policy: the caller is told the option to change
    (as the unauthenticated text it is), the answerer says why it did not take the call and
    takes the next one."""
    port = free_port()
    bob = _answerer(_own(keyserver_pair, "bob", tmp_path / "b"), port, "--json")
    alice = _own(keyserver_pair, "alice", tmp_path / "a")
    try:
        rc, summary, err = Running(
            "call",
            f"{HOST}:{port}",
            "--profile",
            str(alice),
            "--mode",
            "otp",
            "--tag-bits",
            "32",
            "--json",
            *LOOP,
        ).finish(timeout=60)
        refused = bob.wait_for("not taken")
        bob.wait_for("waiting for a call")  # listening again
        assert bob.proc.poll() is None
        rc_ok, ok, err_ok = Running(
            "call",
            f"{HOST}:{port}",
            "--profile",
            str(alice),
            "--duration",
            "2",
            "--json",
            *LOOP,
        ).finish(timeout=60)
        rc_bob, bob_summary, bob_err = bob.finish(timeout=30)
    finally:
        bob.kill()
    assert rc == 1, err
    error = summary["error"]
    assert error.startswith("the handshake was ended by an unauthenticated abort message"), error
    assert "nothing in it is verified" in error and "call with --tag-bits 64" in error
    assert "call from alice not taken: caller proposes 32-bit OTP tags" in refused
    assert "[policy] min_otp_tag_bits" in refused
    assert rc_ok == 0 and ok["frames_received"] > 0, err_ok
    assert rc_bob == 0 and bob_summary["sas"] == ok["sas"], bob_err
    assert bob_summary["ended_by"] == "peer" and "error" not in bob_summary


def test_the_answerers_identity_alarm_advises_the_answerer() -> None:
    from qphone.endpoint.outcome import identity_changed

    answerer = str(identity_changed("alice", "aaaa", "bbbb", answering=True))
    caller = str(identity_changed("bob", "aaaa", "bbbb"))
    assert "then answer the next call with --trust-new-identity" in answerer
    assert "call again" not in answerer
    assert "then call again with --trust-new-identity" in caller
