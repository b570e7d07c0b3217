"""Sites in namespaces: the sans-I/O layout and delay lines, and one delay line between two
real namespaces (needs CAP_NET_ADMIN; CI runs as root)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyserver.network.linkdelay import DelayLine, dump_forwards, load_forwards
from keyserver.network.netns import (
    DELAY_S_PER_KM,
    DelayMethod,
    Forward,
    NetnsError,
    batches,
    choose_subnet,
    fibre_delay_s,
    forwards,
    line_commands,
    missing_capabilities,
    netem_commands,
    plan_layout,
    prefix_for,
    setup_commands,
    teardown_commands,
)
from keyserver.network.netnslauncher import check_rights, netem_available, remove, subnets_in_use
from keyserver.topology import Topology
from tests.support.node_fixtures import topology

LINE = """
[[nodes]]
id = "a"
[[nodes]]
id = "b"
[[nodes]]
id = "c"
[[links]]
a = "a"
b = "b"
distance_km = 100
[[links]]
a = "c"
b = "b"
distance_km = 50
"""

SUBNET = ipaddress.IPv4Network("10.200.16.0/20")


def _can_make_namespaces() -> str | None:
    try:
        check_rights()
    except NetnsError as e:
        return str(e)
    return None


def line3() -> Topology:
    return topology(LINE)


def test_layout_gives_each_site_its_own_address_and_namespace() -> None:
    lay = plan_layout(line3(), "qkabc123", SUBNET, DelayMethod.FORWARDER)
    addrs = [s.address for s in lay.sites.values()]
    assert len(set(addrs)) == 3 and all(ipaddress.ip_address(a) in SUBNET for a in addrs)
    assert "127.0.0.1" not in addrs and lay.root_address not in addrs
    assert [s.ns for s in lay.sites.values()] == ["qkabc123-a", "qkabc123-b", "qkabc123-c"]
    assert lay.exec_prefix("b") == ["ip", "netns", "exec", "qkabc123-b"]
    assert len(lay.root_if) <= 15  # an interface name's limit


def test_prefix_differs_per_directory(tmp_path: Path) -> None:
    assert prefix_for(tmp_path / "x") != prefix_for(tmp_path / "y")
    assert prefix_for(tmp_path / "x") == prefix_for(tmp_path / "x")


def test_choose_subnet_skips_networks_in_use() -> None:
    first = choose_subnet([])
    assert first == ipaddress.IPv4Network("10.200.0.0/20")
    taken = [ipaddress.IPv4Network("10.200.3.0/24"), ipaddress.IPv4Network("0.0.0.0/32")]
    assert choose_subnet(taken) == ipaddress.IPv4Network("10.200.16.0/20")
    with pytest.raises(NetnsError, match="in use"):
        choose_subnet([ipaddress.IPv4Network("10.200.0.0/16")])


def test_too_small_subnet_and_bad_loss_are_refused() -> None:
    with pytest.raises(NetnsError, match="larger"):
        plan_layout(line3(), "qk1", ipaddress.IPv4Network("10.0.0.0/30"), DelayMethod.NETEM)
    with pytest.raises(NetnsError, match="loss"):
        plan_layout(line3(), "qk1", SUBNET, DelayMethod.NETEM, loss=1.5)


def test_delay_lines_cover_both_channels_and_both_node_directions_of_every_fibre() -> None:
    topo = line3()
    lay = plan_layout(topo, "qk1", SUBNET, DelayMethod.FORWARDER, loss=0.01)
    ports = {"a": 1001, "b": 1002, "c": 1003}
    lines = forwards(
        lay, topo, ports, {"a-b": (2001, 2002), "c-b": (2003, 2004)}, {"a-b": 100.0, "c-b": 50.0}
    )
    assert len(lines) == 4 * len(topo.links)
    a, b, c = (lay.sites[x] for x in "abc")
    by = {(f.ns, f.listen): f for f in lines}
    # transparent: a line listens, inside the dialling site, on the far end's own address
    assert all(f.listen == f.target for f in lines)
    # the transmitter's site dials the receiver's channels through its line, from its address
    q = by[(a.ns, (b.address, 2001))]
    assert q.source == a.address and q.delay_s == pytest.approx(100 * DELAY_S_PER_KM)
    # each node reaches a fibre neighbour's node API through a line in its own site
    assert by[(b.ns, (c.address, 1003))].source == b.address
    assert by[(c.ns, (b.address, 1002))].delay_s == pytest.approx(fibre_delay_s(50))
    assert not [f for f in lines if f.ns == a.ns and f.target[0] == c.address]  # no fibre a-c
    assert all(f.loss == 0.01 for f in lines)
    # the far ends' addresses are local in the dialling site (lo), only for fibre neighbours
    aliases = {(c[2], c[5]) for c in line_commands(lay, topo) if c[3:5] == ["addr", "add"]}
    assert aliases == {
        (a.ns, f"{b.address}/32"),
        (b.ns, f"{a.address}/32"),
        (b.ns, f"{c.address}/32"),
        (c.ns, f"{b.address}/32"),
    }


def test_netem_mode_has_no_delay_lines_and_a_netem_class_per_neighbour() -> None:
    topo = line3()
    lay = plan_layout(topo, "qk1", SUBNET, DelayMethod.NETEM, loss=0.02)
    km = {"a-b": 100.0, "c-b": 50.0}
    assert forwards(lay, topo, {}, {}, km) == [] and line_commands(lay, topo) == []
    cmds = netem_commands(lay, topo, km)
    netems = [c for c in cmds if "netem" in c]
    assert len(netems) == 2 * len(topo.links)
    assert netems[0][-5:] == ["netem", "delay", "490us", "loss", "2%"]
    filters = [c for c in cmds if "filter" in c]
    assert any(f"{lay.sites['b'].address}/32" in c for c in filters)
    assert netem_commands(plan_layout(topo, "qk1", SUBNET, DelayMethod.FORWARDER), topo, km) == []


def test_setup_and_teardown_commands_name_every_namespace() -> None:
    lay = plan_layout(line3(), "qk1", SUBNET, DelayMethod.FORWARDER)
    made = {c[3] for c in setup_commands(lay) if c[:3] == ["ip", "netns", "add"]}
    removed = {c[3] for c in teardown_commands(lay) if c[:3] == ["ip", "netns", "del"]}
    assert made == removed == set(lay.namespaces())


def test_missing_capabilities() -> None:
    assert missing_capabilities("000001ffffffffff") == []
    assert missing_capabilities("0000000000000000") == ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
    assert missing_capabilities(hex(1 << 12)[2:]) == ["CAP_SYS_ADMIN"]


@given(st.lists(st.floats(0, 10), min_size=1, max_size=50), st.floats(0, 0.1), st.floats(0, 1))
def test_delay_line_keeps_order_and_never_delivers_early(
    gaps: list[float], delay: float, loss: float
) -> None:
    draws = iter([i / 50 for i in range(50)])
    line = DelayLine(delay, loss, draw=lambda: next(draws))
    now, last = 0.0, 0.0
    for g in gaps:
        now += g
        t = line.release_at(now)
        assert t >= now + delay and t >= last
        last = t


def test_delay_line_loss_costs_one_retransmission_timeout() -> None:
    line = DelayLine(0.001, 0.5, rto_s=0.2, draw=iter([0.1, 0.9]).__next__)
    assert line.release_at(10.0) == pytest.approx(10.201)
    assert line.release_at(10.0) == pytest.approx(10.201)  # held behind the lost chunk


def test_forwards_file_round_trip(tmp_path: Path) -> None:
    f = [Forward("a-b", "quantum", "qk1-a", ("10.0.0.2", 5), ("10.0.0.2", 5), 0.1, 0.0, "10.0.0.1")]
    dump_forwards(f, tmp_path / "l.json")
    assert load_forwards(tmp_path / "l.json") == f


_ECHO = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); print("up", flush=True)
c, _ = s.accept()
while (d := c.recv(4096)):
    c.sendall(d)
"""

_PING = """
import json, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtts = []
for _ in range(5):
    t = time.monotonic(); s.sendall(b"x" * 100); got = b""
    while len(got) < 100:
        got += s.recv(4096)
    rtts.append(time.monotonic() - t)
# a bulk stream through the line, echoed: every byte back, in order
import hashlib, os, threading
blob = os.urandom(8 << 20)
threading.Thread(target=s.sendall, args=(blob,), daemon=True).start()
back = bytearray()
while len(back) < len(blob):
    back += s.recv(1 << 16)
same = hashlib.sha256(back).digest() == hashlib.sha256(blob).digest()
print(json.dumps({"min": min(rtts), "peer": s.getpeername()[0], "me": s.getsockname()[0],
                  "bulk_intact": same}))
"""


def _tx_bytes(ns: str, dev: str = "eth0") -> int:
    out = subprocess.run(
        ["ip", "-n", ns, "-j", "-s", "link", "show", dev],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["bytes"])


@pytest.mark.timeout(60)
def test_a_delay_line_between_two_namespaces_holds_each_way_for_the_fibre(tmp_path: Path) -> None:
    reason = _can_make_namespaces()
    if reason is not None:
        pytest.skip(f"needs the right to make network namespaces: {reason}")
    topo = line3()
    lay = plan_layout(
        topo, prefix_for(tmp_path), choose_subnet(subnets_in_use()), DelayMethod.FORWARDER
    )
    a, b = lay.sites["a"], lay.sites["b"]
    delay = 0.02  # 4,000 km of fibre: well above the machine's scheduling noise
    lines = [
        Forward("a-b", "test", a.ns, (b.address, 7100), (b.address, 7100), delay, 0.0, a.address)
    ]
    dump_forwards(lines, tmp_path / "lines.json")
    procs: list[subprocess.Popen[str]] = []
    try:
        remove(lay)
        for cmd in setup_commands(lay) + line_commands(lay, topo):
            subprocess.run(cmd, check=True, capture_output=True)
        echo = subprocess.Popen(
            ["ip", "netns", "exec", b.ns, sys.executable, "-c", _ECHO, b.address, "7100"],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(echo)
        assert echo.stdout is not None and echo.stdout.readline().strip() == "up"
        dl = subprocess.Popen(
            [sys.executable, "-m", "keyserver.network.linkdelay", str(tmp_path / "lines.json")],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(dl)
        assert dl.stdout is not None and "delay_lines_ready" in dl.stdout.readline()
        before = _tx_bytes(a.ns)
        out = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                a.ns,
                sys.executable,
                "-c",
                textwrap.dedent(_PING),
                b.address,
                "7100",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        got = json.loads(out)
        # the fibre's delay each way (a lower bound: the line never delivers early)
        assert got["min"] >= 2 * delay
        assert got["bulk_intact"]  # 8 MiB through the line and back, every byte in order
        assert got["peer"] == b.address  # the site dials the far end's own address...
        assert _tx_bytes(a.ns) > before  # ...and the line sends on out of its interface
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        remove(lay)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lay.prefix not in listed


@pytest.mark.timeout(60)
def test_netem_layout_is_accepted_by_tc(tmp_path: Path) -> None:
    """The HTB classes and destination filters of netem mode, on real namespaces (with pfifo
    standing in for netem where the kernel has none, as on the development machine)."""
    reason = _can_make_namespaces()
    if reason is not None:
        pytest.skip(f"needs the right to make network namespaces: {reason}")
    topo = line3()
    lay = plan_layout(
        topo, prefix_for(tmp_path), choose_subnet(subnets_in_use()), DelayMethod.NETEM, loss=0.01
    )
    have_netem = netem_available(lay.prefix)
    try:
        remove(lay)
        for cmd in setup_commands(lay):
            subprocess.run(cmd, check=True, capture_output=True)
        for cmd in netem_commands(lay, topo, {"a-b": 100.0, "c-b": 50.0}):
            if "netem" in cmd and not have_netem:
                cmd = [*cmd[: cmd.index("netem")], "pfifo"]
            subprocess.run(cmd, check=True, capture_output=True)
        b = lay.sites["b"].ns
        filters = subprocess.run(
            ["tc", "-n", b, "filter", "show", "dev", "eth0"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        # one class per fibre neighbour of b (a and c), chosen by destination address
        for site in (lay.sites["a"], lay.sites["c"]):
            assert ipaddress.ip_address(site.address).packed.hex() in filters
        assert filters.count("flowid") == 2
    finally:
        remove(lay)


def test_batches_keep_every_command_in_order_in_few_processes() -> None:
    topo = line3()
    lay = plan_layout(topo, "qk1", SUBNET, DelayMethod.FORWARDER)
    cmds = setup_commands(lay) + line_commands(lay, topo)
    runs = batches(cmds)
    assert len(runs) < len(cmds) / 3
    again = []  # each batch line is the command without its `ip [-n NS]`
    for argv, lines in runs:
        if not lines:
            again.append(argv)
            continue
        head = argv[: argv.index("-batch")]
        again += [[*head, *line.split()] for line in lines]
    assert again == cmds
    assert all(argv[:3] == ["ip", "netns", "exec"] for argv, lines in runs if not lines)
