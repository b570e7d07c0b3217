"""``qphone demo``: a real encrypted call on this machine with nothing to set up.

Starts the keyserver demo pair (two ETSI 014 KMEs and the simulated BB84 link, with their PKI),
or with ``--network NAME`` a whole network of trusted nodes (``qkd-keyserver network``: alice
at one end, bob at the other, every key relayed hop by hop), then places calls between two
qphone endpoints on loopback: alice (the caller) calls bob (the answerer), each plays one of
the bundled speech samples to the other (repeated for as long as the call lasts) and records
what it hears.  alice hangs up after ``seconds``.  On a terminal both endpoints share one
:class:`~qphone.endpoint.console.StatusBoard`: their messages scroll with a ``[alice]`` /
``[bob]`` prefix and each keeps one live status line below them.  The summary says, per side
and for the call, the frames and the QKD key drawn, used and wasted, and the key route: nodes,
hops, time per relayed key request and the link key every link spent.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from qphone.demo.keyserverprocess import free_port, running_keyserver, running_network
from qphone.endpoint.console import Console, StatusBoard
from qphone.endpoint.outcome import EndCause
from qphone.endpoint.summary import CallSummary

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def run_call_demo(
    seconds: float,
    modes: list[str],
    directory: Path | None,
    kme_args: list[str],
    network: str | None = None,
    out: TextIO | None = None,
) -> dict[str, Any]:
    """The demo's calls; with ``network`` (a topology name), over that network of trusted
    nodes (``qkd-keyserver network``) from alice's site to bob's, instead of the KME pair.
    Its progress and summaries go to ``out`` (default: stdout; ``--json`` passes stderr, so
    that stdout holds the JSON object alone)."""
    from qphone.config.profile import load_profile
    from qphone.core.callparams import Mode
    from qphone.endpoint.endpoint import CallEndpoint
    from qphone.endpoint.options import CallOptions
    from qphone.transport.config import LOOPBACK_ADDRESSES, TransportConfig

    work = directory or Path(tempfile.mkdtemp(prefix="qphone-demo-"))
    text = sys.stdout if out is None else out

    def say(line: str) -> None:
        print(line, file=text, flush=True)

    results: dict[str, Any] = {}
    board = StatusBoard(sys.stderr, sys.stderr.isatty())
    if network is None:
        say(f"qphone demo: starting the keyserver pair (KME A, KME B, BB84 link) in {work} ...")
        waiting = "waiting for the QKD link's first key (a fresh link needs a while) ..."
        keyserver = running_keyserver(work / "kme", kme_args, on_wait=lambda: say(waiting))
    else:
        say(
            f"qphone demo: starting the {network} network (a QKD module pair on every link, a "
            f"KMS node per site) in {work / 'network'} ..."
        )
        waiting = (
            "waiting until every link on the route holds key (a fresh network needs minutes) ..."
        )
        keyserver = running_network(
            network, work / "network", kme_args, on_wait=lambda: say(waiting)
        )
    with keyserver as kme:
        say(f"keyserver ready: profiles in {kme}")
        alice, bob = load_profile(kme / "alice.toml"), load_profile(kme / "bob.toml")
        for mode in modes:
            port = free_port()
            transport = TransportConfig(host_addresses=LOOPBACK_ADDRESSES)
            heard_by_alice = work / f"alice_hears_{mode}.wav"
            heard_by_bob = work / f"bob_hears_{mode}.wav"
            say(f"\n=== {mode.upper()} call: alice -> bob on 127.0.0.1:{port}, {seconds:g} s ===")
            caller = CallEndpoint(
                alice,
                CallOptions(
                    mode=Mode[mode.upper()],
                    input=str(SAMPLES / "speech_a_48k.wav"),
                    output=str(heard_by_alice),
                    loop_input=True,
                    duration=seconds,
                    rotate_seconds=2.0,
                    transport=transport,
                ),
                console=Console(sys.stderr, True, prefix="[alice] ", board=board),
            )
            answerer = CallEndpoint(
                bob,
                CallOptions(
                    input=str(SAMPLES / "speech_b_48k.wav"),
                    output=str(heard_by_bob),
                    loop_input=True,
                    transport=transport,
                ),
                console=Console(sys.stderr, True, prefix="[bob]   ", board=board),
            )

            async def both(
                caller: CallEndpoint = caller, answerer: CallEndpoint = answerer, port: int = port
            ) -> tuple[CallSummary, CallSummary]:
                listening = asyncio.Event()
                answer = asyncio.ensure_future(
                    answerer.answer("127.0.0.1", port, lambda _: listening.set(), accept_timeout=30)
                )
                await asyncio.wait(
                    {answer, asyncio.ensure_future(listening.wait())},
                    return_when=asyncio.FIRST_COMPLETED,
                )
                return await asyncio.gather(caller.call("127.0.0.1", port), answer)

            sa, sb = asyncio.run(both())
            if interrupted(sa, sb):  # SIGINT/SIGTERM hung up this call: no further call
                raise KeyboardInterrupt
            results[mode] = {
                "alice": sa.to_json(),
                "bob": sb.to_json(),
                "total": call_totals(sa, sb),
                "alice_heard": str(heard_by_alice),
                "bob_heard": str(heard_by_bob),
            }
            if sa.route is not None:
                results[mode]["route"] = sa.route.to_json()
            say(format_summary(sa, sb))
            say(
                f"  recordings: {heard_by_alice} (alice heard bob), "
                f"{heard_by_bob} (bob heard alice)"
            )
    return results


def interrupted(*summaries: CallSummary) -> bool:
    """A side was hung up by SIGINT/SIGTERM (the command stops rather than go on)."""
    return any(s.end is not None and s.end.cause is EndCause.INTERRUPTED for s in summaries)


def call_totals(caller: CallSummary, answerer: CallSummary) -> dict[str, Any]:
    """The call's QKD key: every key is drawn first by the caller (the ETSI 014 master SAE) and
    the same key again by the answerer, so the call drew what the caller drew; it used the
    handshake and epoch keys once and each side's sending pad and MAC."""
    acc_a, acc_b = caller.qkd_bits, answerer.qkd_bits
    used = (
        acc_a.get("handshake", 0)
        + acc_a.get("epoch", 0)
        + acc_a.get("pad", 0)
        + acc_a.get("mac", 0)
        + acc_b.get("pad", 0)
        + acc_b.get("mac", 0)
    )
    drawn = caller.keys.drawn
    return {
        "qkd_bits_drawn": drawn,
        "qkd_bits_used": used,
        "qkd_bits_wasted": drawn - used,
        "drawn_over_used": round(drawn / used, 4) if used else None,
    }


def _frames(who: str, s: CallSummary, peer: str, peer_sent: int) -> str:
    missing = peer_sent - (s.frames_received - s.frames_late + s.frames_lost)
    # received counts late frames too (their slot was concealed, so lost counts them as well)
    tail = f", {missing} not received (in flight when the call ended)" if missing > 0 else ""
    return (
        f"  {who:5}: sent {s.frames_sent}; of {peer}'s {peer_sent}: received "
        f"{s.frames_received} ({s.frames_late} too late to play), lost {s.frames_lost}{tail}; "
        f"concealed {s.frames_concealed}, epochs {s.epochs}, handshake {s.handshake_ms} ms"
    )


def _who(ended_by: str | None) -> str:
    """alice's ``ended_by`` as a name."""
    return {"this side": "alice", "peer": "bob"}.get(ended_by or "", "the network")


def format_summary(sa: CallSummary, sb: CallSummary) -> str:
    """What ``qphone demo`` prints after a call."""
    total = call_totals(sa, sb)
    lines = [
        f"SAS on both screens: alice '{sa.sas}', bob '{sb.sas}' -> "
        f"{'MATCH' if sa.sas == sb.sas else 'MISMATCH'}",
        f"  ended by {_who(sa.ended_by)} (alice: {sa.end_reason}; bob: {sb.end_reason})",
        _frames("alice", sa, "bob", sb.frames_sent),
        _frames("bob", sb, "alice", sa.frames_sent),
    ]
    for who, s in (("alice", sa), ("bob", sb)):
        lines.append(
            f"  {who:5}: QKD bits drawn {s.keys.drawn}, used {s.keys.used}, wasted {s.keys.wasted}"
        )
    lines.append(
        f"  call : QKD bits drawn {total['qkd_bits_drawn']}, used {total['qkd_bits_used']}, "
        f"wasted {total['qkd_bits_wasted']} (drawn/used {total['drawn_over_used']}; the same "
        "keys reach both ends)"
    )
    if sa.route is not None:
        lines.append(f"  {sa.route.describe()}")
        lines.extend(f"    route {line}" for line in sa.route.describe_routes())
        # the node picks a route per request: a link carried every key the call drew (plus the
        # relays' one-time MAC keys) or, if routes changed, some of them
        for link, bits in sa.route.link_bits.items():
            share = f"{bits / sa.keys.drawn:.3f}" if sa.keys.drawn else "-"
            lines.append(f"    link {link}: {bits} link bits ({share} per end-to-end bit)")
    return "\n".join(lines)
