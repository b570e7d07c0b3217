"""``qphone demo``: a real encrypted call on this machine with nothing to set up.

Starts the keyserver demo pair (two ETSI 014 KMEs and the simulated BB84 link, with their PKI),
then places calls between two qphone endpoints on loopback: alice calls, bob answers, each
plays one of the bundled speech samples to the other and records what it hears.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


@contextlib.contextmanager
def running_keyserver(directory: Path, extra: list[str], timeout: float = 120.0) -> Iterator[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "demo.json").unlink(missing_ok=True)
    log = open(directory / "keyserver-demo.log", "wb")  # noqa: SIM115 - closed below
    cmd = [
        _bin("qkd-keyserver"),
        "demo",
        "--dir",
        str(directory),
        "--port-a",
        str(free_port()),
        "--port-b",
        str(free_port()),
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not (directory / "demo.json").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "the keyserver demo did not start; see " + str(directory / "keyserver-demo.log")
                )
            time.sleep(0.2)
        yield directory
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def run_call_demo(
    seconds: float, modes: list[str], directory: Path | None, kme_args: list[str]
) -> dict[str, Any]:
    from qphone.call import CallEndpoint, CallOptions
    from qphone.core.callparams import Mode
    from qphone.mediatransport import LOOPBACK_ADDRESSES, TransportConfig
    from qphone.profile import load_profile

    work = directory or Path(tempfile.mkdtemp(prefix="qphone-demo-"))
    print(f"qphone demo: starting the keyserver pair (KME A, KME B, BB84 link) in {work} ...")
    results: dict[str, Any] = {}
    with running_keyserver(work / "kme", kme_args) as kme:
        print(f"keyserver ready: {kme / 'demo.json'}")
        alice, bob = load_profile(kme / "alice.toml"), load_profile(kme / "bob.toml")
        for mode in modes:
            port = free_port()
            transport = TransportConfig(host_addresses=LOOPBACK_ADDRESSES)
            heard_by_alice = work / f"alice_hears_{mode}.wav"
            heard_by_bob = work / f"bob_hears_{mode}.wav"
            print(f"\n=== {mode.upper()} call: alice -> bob on 127.0.0.1:{port}, {seconds:g} s ===")
            a = CallEndpoint(
                alice,
                CallOptions(
                    mode=Mode[mode.upper()],
                    input=str(SAMPLES / "speech_a_48k.wav"),
                    output=str(heard_by_alice),
                    duration=seconds,
                    rotate_seconds=2.0,
                    transport=transport,
                    status=None,  # live status line on a terminal
                ),
            )
            b = CallEndpoint(
                bob,
                CallOptions(
                    input=str(SAMPLES / "speech_b_48k.wav"),
                    output=str(heard_by_bob),
                    transport=transport,
                    status=False,
                ),
                out=_Prefixed("  [bob] "),
            )

            async def both(a: CallEndpoint = a, b: CallEndpoint = b, port: int = port) -> Any:
                answer = asyncio.ensure_future(b.answer("127.0.0.1", port, accept_timeout=30))
                await asyncio.sleep(0.3)
                return await asyncio.gather(a.call("127.0.0.1", port), answer)

            sa, sb = asyncio.run(both())
            results[mode] = {
                "alice": sa,
                "bob": sb,
                "alice_heard": str(heard_by_alice),
                "bob_heard": str(heard_by_bob),
            }
            _print_summary(sa, sb)
            print(
                f"  recordings: {heard_by_alice} (alice heard bob), "
                f"{heard_by_bob} (bob heard alice)"
            )
    return results


class _Prefixed:
    """A stderr stand-in that prefixes every line (the answering side's messages)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def write(self, text: str) -> int:
        for line in text.splitlines(keepends=True):
            sys.stderr.write(self.prefix + line if line.strip() else line)
        return len(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return False


def _print_summary(sa: dict[str, Any], sb: dict[str, Any]) -> None:
    print(
        f"SAS on both screens: alice '{sa['sas']}', bob '{sb['sas']}' -> "
        f"{'MATCH' if sa['sas'] == sb['sas'] else 'MISMATCH'}"
    )
    for who, s in (("alice", sa), ("bob", sb)):
        print(
            f"  {who:5}: sent {s['frames_sent']}, received {s['frames_received']}, "
            f"lost {s['frames_lost']}, concealed {s['frames_concealed']}, epochs {s['epochs']}, "
            f"handshake {s['handshake_ms']} ms, QKD bits {json.dumps(s['qkd_bits'])}"
        )
