"""``qphone demo``: a real encrypted call on this machine with nothing to set up.

Starts the keyserver demo pair (two ETSI 014 KMEs and the simulated BB84 link, with their PKI),
then places calls between two qphone endpoints on loopback: alice (the caller) calls bob (the
answerer), each plays one of the bundled speech samples to the other and records what it hears.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from qphone.demo.keyserverprocess import free_port, running_keyserver
from qphone.endpoint.console import TextOut
from qphone.endpoint.summary import CallSummary

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def run_call_demo(
    seconds: float, modes: list[str], directory: Path | None, kme_args: list[str]
) -> dict[str, Any]:
    from qphone.core.callparams import Mode
    from qphone.endpoint.endpoint import CallEndpoint
    from qphone.endpoint.options import CallOptions
    from qphone.profile import load_profile
    from qphone.transport.config import LOOPBACK_ADDRESSES, TransportConfig

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
            caller = CallEndpoint(
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
            answerer = CallEndpoint(
                bob,
                CallOptions(
                    input=str(SAMPLES / "speech_b_48k.wav"),
                    output=str(heard_by_bob),
                    transport=transport,
                    status=False,
                ),
                out=_Prefixed("  [bob] "),
            )

            async def both(
                caller: CallEndpoint = caller, answerer: CallEndpoint = answerer, port: int = port
            ) -> tuple[CallSummary, CallSummary]:
                answer = asyncio.ensure_future(
                    answerer.answer("127.0.0.1", port, accept_timeout=30)
                )
                await asyncio.sleep(0.3)
                return await asyncio.gather(caller.call("127.0.0.1", port), answer)

            sa, sb = asyncio.run(both())
            results[mode] = {
                "alice": sa.to_json(),
                "bob": sb.to_json(),
                "alice_heard": str(heard_by_alice),
                "bob_heard": str(heard_by_bob),
            }
            _print_summary(sa, sb)
            print(
                f"  recordings: {heard_by_alice} (alice heard bob), "
                f"{heard_by_bob} (bob heard alice)"
            )
    return results


class _Prefixed(TextOut):
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


def _print_summary(sa: CallSummary, sb: CallSummary) -> None:
    print(
        f"SAS on both screens: alice '{sa.sas}', bob '{sb.sas}' -> "
        f"{'MATCH' if sa.sas == sb.sas else 'MISMATCH'}"
    )
    for who, s in (("alice", sa), ("bob", sb)):
        print(
            f"  {who:5}: sent {s.frames_sent}, received {s.frames_received}, "
            f"lost {s.frames_lost}, concealed {s.frames_concealed}, epochs {s.epochs}, "
            f"handshake {s.handshake_ms} ms, QKD bits {json.dumps(s.qkd_bits)}"
        )
