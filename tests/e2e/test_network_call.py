"""Calls across a network of trusted nodes: real QKD module and KMS node processes, real calls.

The network is a diamond of four sites on loopback, two node-disjoint routes from alice (at a)
to bob (at d)::

    a --- b
    |     |
    c --- d
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qphone.config.profile import load_profile
from qphone.core.callparams import Mode
from qphone.demo.keyserverprocess import free_port
from qphone.endpoint.console import Console
from qphone.endpoint.endpoint import CallEndpoint
from qphone.endpoint.options import CallOptions
from qphone.endpoint.state import CallPhase
from qphone.transport.config import LOOPBACK_ADDRESSES, TransportConfig
from tests.keyserver.network.test_network import DIAMOND, DemandLoop, link_between
from tests.support.network_fixtures import running_network, stocked
from tests.support.node_fixtures import topology

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
ROUTES = {("a", "b", "d"), ("a", "c", "d")}


def route_links(nodes: list[str]) -> set[str]:
    return {link_between(u, v) for u, v in itertools.pairwise(nodes)}


def test_demo_calls_across_the_network_and_reports_the_route(tmp_path: Path) -> None:
    """`qphone demo --network FILE`: an AES and an OTP call from a to d, each summary with
    the route, the key requests relayed and the link key every link of the route spent.
    Emulated links (the product's own fidelity: same modules' API, key IDs and accounting, a
    node cannot tell): this test is about the demo, its calls and its report; the per-pulse
    physics on this diamond is the eavesdropper test's below, and its first default-size
    blocks on four links took most of this test's 79 s."""
    topo = tmp_path / "diamond.toml"
    topo.write_text('name = "diamond"\nfidelity = "emulated"\n' + DIAMOND)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "qphone.cli",
            "demo",
            "--network",
            str(topo),
            "--seconds",
            "4",
            "--dir",
            str(tmp_path / "demo"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert set(summary) == {"aes", "otp"}
    for mode, call in summary.items():
        alice, bob = call["alice"], call["bob"]
        assert alice["sas"] == bob["sas"] and alice["end_cause"] == "duration", mode
        assert bob["frames_received"] > 100 and alice["frames_received"] > 100, mode
        route = call["route"]
        assert tuple(route["nodes"]) in ROUTES and route["hops"] == 2 and route["legs"] == 1
        assert route["distance_km"] in (40.0, 50.0)
        assert route["key_requests"] >= 1 and route["failed_requests"] == 0
        assert route["relay_ms_mean"] > 0
        # every key crossed one whole route (the node picks a route per request, by stock):
        # each link of it spent the key bits plus the relay's one-time MAC keys
        bits, drawn = route["link_bits"], alice["qkd_bits_drawn"]
        assert set(bits) <= {"a-b", "b-d", "a-c", "c-d"}, bits
        assert bits.get("a-b") == bits.get("b-d") and bits.get("a-c") == bits.get("c-d"), bits
        assert bits.get("a-b", 0) + bits.get("a-c", 0) > drawn, (mode, bits, drawn)
        # the route reported is one the relays took (its links spent key), with their count
        assert route_links(route["nodes"]) <= set(bits), (route, bits)
        used = route["routes_used"]
        assert sum(r["relays"] for r in used) == route["key_requests"], route
        assert used[0]["nodes"] == route["nodes"], route
        assert "route" not in bob  # only the caller's node relays
    # with --json stdout is the JSON object alone: the human summary went to stderr
    assert "key route a -> " in out.stderr and "2 hops" in out.stderr


async def test_a_call_goes_on_when_an_eavesdropper_takes_its_route(tmp_path: Path) -> None:
    """Eve on a link of the call's route during an OTP call: the link aborts, its alarm shows,
    the relays move to the other route, and the call ends by its duration, not by a failure.
    The call's key report shows both routes' links spent key: the first before, the other
    after the alarm."""
    with running_network(tmp_path / "net", topology(DIAMOND)) as net:
        net.wait(lambda: stocked(net), timeout=120, what="link keys on every link")
        net.wait(lambda: net.route("alice", "bob") is not None, what="a route (link states)")
        first = net.route("alice", "bob")
        assert first is not None and tuple(first) in ROUTES
        eve_link = link_between(first[1], first[2])
        alice = load_profile(net.directory / "saes" / "alice.toml")
        bob = load_profile(net.directory / "saes" / "bob.toml")
        transport = TransportConfig(host_addresses=LOOPBACK_ADDRESSES)
        port = free_port()
        caller = CallEndpoint(
            alice,
            CallOptions(
                mode=Mode.OTP,
                input=str(SAMPLES / "speech_a_48k.wav"),
                output=str(tmp_path / "a.wav"),
                loop_input=True,
                duration=30.0,
                transport=transport,
                bitrate=12_000,
            ),
            console=Console(io.StringIO(), False),
        )
        answerer = CallEndpoint(
            bob,
            CallOptions(
                input=str(SAMPLES / "speech_b_48k.wav"),
                output=str(tmp_path / "b.wav"),
                loop_input=True,
                transport=transport,
            ),
            console=Console(io.StringIO(), False),
        )
        listening = asyncio.Event()
        answer = asyncio.ensure_future(
            answerer.answer("127.0.0.1", port, lambda _: listening.set(), accept_timeout=60)
        )
        await asyncio.wait_for(listening.wait(), 60)
        call = asyncio.ensure_future(caller.call("127.0.0.1", port))
        assert await caller.phase.wait_for(CallPhase.IN_CALL) is CallPhase.IN_CALL
        eve = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "keyserver.cli",
            "network",
            "eve",
            "--dir",
            str(net.directory),
            "--link",
            eve_link,
            "--fraction",
            "1.0",
            stdout=asyncio.subprocess.PIPE,
        )
        got, _ = await asyncio.wait_for(eve.communicate(), 30)
        assert json.loads(got)["eve_fraction"] == 1.0
        # the nodes may carry the call over the other route while it holds more key: an SAE at
        # the far end of Eve's link draws on that link alone, so it runs blocks and Eve is seen
        # (until the alarm is out: then it would only compete with the call for the detour)
        local = DemandLoop(net, period=0.05, size=2048, src={"b": "dave", "c": "carol"}[first[1]])
        local.start()

        def alarmed() -> bool:
            with net.sae("alice") as c:
                ext = c.get("/api/v1/keys/bob/status").json()["status_extension"]
            return any(d["link"] == eve_link and d["alarm"] for d in ext["network"]["down_links"])

        def stop_local_at_the_alarm() -> None:
            try:
                net.wait(alarmed, timeout=60, what="the alarm")
            finally:
                local.stop.set()
                local.join()

        watcher = asyncio.ensure_future(asyncio.to_thread(stop_local_at_the_alarm))
        sa, sb = await asyncio.gather(call, answer)
        await watcher
        shown = subprocess.run(
            [
                sys.executable,
                "-m",
                "keyserver.cli",
                "network",
                "status",
                "--dir",
                str(net.directory),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert sa.end is not None and sa.end.cause.value == "duration", sa.end_reason
    assert sb.frames_received > 500
    link = json.loads(shown.stdout)["links"][eve_link]
    assert link["alarm"] is True and not link["up"]  # the alarm shows
    report = sa.route
    assert report is not None and report.route is not None
    assert eve_link not in report.route.links  # the route after the call avoids Eve's link
    other = route_links(list(report.route.nodes))
    assert other != route_links(first)
    # both routes carried the call's keys: the first until the alarm, the other after it
    assert route_links(first) | other <= set(report.link_bits), report
    assert report.failed_requests == 0 or report.key_requests > report.failed_requests
