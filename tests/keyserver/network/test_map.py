"""`network map`: what the map shows (pure model), the PNG it writes, and its command line."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from keyserver.network.map import (
    LinkState,
    NodeKind,
    draw,
    map_model,
    place_labels,
    positions,
    topology_of_network,
)
from keyserver.topology import load_topology


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", head[16:24])
    return int(w), int(h)


def test_nodes_are_placed_by_geography() -> None:
    t = load_topology("beijing-hefei")
    pos, k = positions(t)
    assert 0.7 < k < 0.85  # cos of ~36 degrees north
    assert pos["beijing"][1] > pos["jinan"][1] > pos["hefei"][1]  # north above south
    assert pos["xintai"][0] > pos["qufu"][0]  # east to the right


def test_a_topology_without_coordinates_gets_a_layout() -> None:
    pos, k = positions(load_topology("pair"))
    assert k == 0.0 and pos["KME-A"] != pos["KME-B"]


def test_at_167_sites_only_cores_and_sae_sites_are_labelled() -> None:
    t = load_topology("hefei-metro-full")
    model = map_model(t)
    labelled = {n.id for n in model.nodes if n.label}
    saes = {s.node for s in t.saes}
    cores = {n.id for n in model.nodes if n.kind is NodeKind.CORE}
    assert labelled == saes | cores
    assert len(cores) == 8 and len(labelled) <= 8 + len(saes)
    assert all(link.state is LinkState.PLANNED for link in model.links)
    alice = model.node(t.sae_node("alice") or "")
    assert alice.kind is NodeKind.SAE and "(alice)" in (alice.label or "")


def live_summary(t: Any) -> dict[str, Any]:
    links = {
        link.id: {
            "a": link.a,
            "b": link.b,
            "distance_km": link.distance_km,
            "up": True,
            "alarm": False,
            "reasons": [],
            "key_rate_bps": 40_000.0,
            "qber": 0.02,
            "stock_bits": {link.a: 800_000, link.b: 200_000},
        }
        for link in t.links
    }
    links["taian-qufu"].update(up=False, alarm=True, reasons=["qufu: eavesdropper"])
    links["huainan-hefei"].update(up=False, reasons=["hefei: module_unreachable"])
    nodes = {n: {"up": n != "sishui"} for n in t.node_ids()}
    route = ["beijing", "langfang", "tianjin"]
    pairs = {"alice->bob": {"relays": 3, "failures": 0, "routes": [route, ["nowhere", "x"]]}}
    return {"topology": t.name, "links": links, "nodes": nodes, "pairs": pairs}


def test_live_state_colours_links_and_marks_alarms_and_routes() -> None:
    t = load_topology("beijing-hefei")
    model = map_model(t, live_summary(t))
    by = {link.id: link for link in model.links}
    assert by["taian-qufu"].state is LinkState.ALARM
    assert by["huainan-hefei"].state is LinkState.DOWN
    assert by["beijing-langfang"].state is LinkState.UP
    assert by["beijing-langfang"].stock_kbit == 200.0  # the smaller direction
    assert by["beijing-langfang"].rate_bps == 40_000.0
    assert model.node("sishui").up is False and model.node("beijing").up is True
    assert model.routes == (("beijing", "langfang", "tianjin"),)  # unknown nodes dropped
    assert "1 alarmed" in model.title and "1 down" in model.title


def test_labels_never_overlap_and_stay_inside() -> None:
    model = map_model(load_topology("china-backbone"))

    def to_pixels(p: tuple[float, float]) -> tuple[float, float]:
        return (p[0] * 40.0, p[1] * 40.0)

    placed = place_labels(model, to_pixels, 7.0, 1.0)
    boxes = []
    for n, (dx, dy), ha in placed:
        x, y = to_pixels((n.x, n.y))
        w = 0.56 * 7.0 * len(n.label or "")
        left = x + dx - (w if ha == "right" else 0.0)
        boxes.append((left, y + dy - 0.2 * 8.75, left + w, y + dy + 0.8 * 8.75))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    sae_sites = {n.id for n in model.nodes if n.kind is NodeKind.SAE}
    assert sae_sites <= {n.id for n, _, _ in placed}  # SAE sites are placed first


def test_draw_writes_a_png_of_a_live_network(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    t = load_topology("beijing-hefei")
    out = tmp_path / "bh.png"
    draw(map_model(t, live_summary(t)), out)
    w, h = png_size(out)
    assert w > 400 and h > 600  # a tall network gets a tall picture


def test_the_network_json_gives_the_topology_and_the_file_its_coordinates() -> None:
    t = load_topology("hefei-metro")
    info = {
        "topology": "hefei-metro",
        "nodes": {n.id: {"city": n.city} for n in t.nodes},
        "links": {x.id: {"a": x.a, "b": x.b, "distance_km": x.distance_km} for x in t.links},
        "saes": {s.id: {"node": s.node} for s in t.saes},
    }
    live = topology_of_network(info, t)
    assert [(n.id, n.lat, n.lon) for n in live.nodes] == [(n.id, n.lat, n.lon) for n in t.nodes]
    assert live.links == tuple(x.__class__(x.id, x.a, x.b, x.distance_km) for x in t.links)
    assert topology_of_network(info, None).nodes[0].lat is None


def test_the_command_draws_a_plan_and_refuses_bad_outputs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "plan.png"
    cmd = [sys.executable, "-m", "keyserver.cli", "network", "map"]
    r = subprocess.run(
        [*cmd, "--topology", "hefei-metro", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "map": str(out),
        "topology": "hefei-metro",
        "nodes": 8,
        "links": 10,
        "live": False,
    }
    assert png_size(out)[0] > 400
    bad = subprocess.run(
        [*cmd, "--topology", "pair", "--out", str(tmp_path / "no" / "m.png")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "existing directory" in bad.stderr
    assert not (tmp_path / "no").exists()


def test_importing_the_map_does_not_import_matplotlib() -> None:
    code = (
        "import sys, keyserver.network.map, keyserver.network.commands; "
        "print('matplotlib' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr
