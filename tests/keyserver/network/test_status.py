"""`network status`: every node asked at once (bounded), and the rendering (pure functions).

The table's columns stay aligned whatever the values (rates under 1000, long IDs, missing
figures), and the reasons a link is down appear in full (wrapped at the width, never cut).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyserver.network.status import (
    collect,
    column_groups,
    kbit_text,
    qber_text,
    rate_text,
    render,
    summarise,
    wrapped,
)
from keyserver.topology import load_topology

HEADER = ["link", "km", "state", "rate", "stock a>b", "b>a (kbit)", "QBER"]
RIGHT = {"km", "rate", "stock a>b", "b>a (kbit)", "QBER"}

ids = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,40}", fullmatch=True)
reason_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=300
).filter(lambda s: s.strip() != "")
maybe_number = st.none() | st.floats(min_value=0, max_value=5e7, allow_nan=False)


@st.composite
def link_summaries(draw: st.DrawFn) -> dict[str, Any]:
    a, b = draw(ids), draw(ids)
    up = draw(st.booleans())
    reasons = [] if up else draw(st.lists(reason_text, min_size=1, max_size=3))
    stock = draw(st.none() | st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)))
    return {
        "a": a,
        "b": b,
        "distance_km": draw(st.floats(min_value=0, max_value=500)),
        "up": up,
        "reasons": reasons,
        "alarm": (not up) and draw(st.booleans()),
        "key_rate_bps": draw(maybe_number),
        "qber": draw(st.none() | st.floats(min_value=0, max_value=0.5)),
        "stock_bits": {} if stock is None else {a: stock[0], b: stock[1]},
    }


summaries = st.builds(
    lambda links, nodes: {"topology": "t", "links": links, "nodes": nodes, "pairs": {}},
    st.dictionaries(ids, link_summaries(), min_size=1, max_size=12),
    st.dictionaries(ids, st.builds(lambda up: {"up": up}, st.booleans()), max_size=5),
)


def tables(lines: list[str], rows: int) -> list[list[str]]:
    """Each table the rendering printed: a header and `rows` rows, then, when the table was
    split to fit the width, a blank line and the next one."""
    i = next(i for i, line in enumerate(lines) if line.startswith("link "))
    found = []
    while True:
        found.append(lines[i : i + 1 + rows])
        i += 1 + rows
        if i >= len(lines) or lines[i] != "":
            return found
        i += 1


def cell(label: str, lid: str, v: dict[str, Any]) -> str:
    return {
        "link": lid,
        "km": f"{float(v['distance_km']):g}",
        "state": "up" if v["up"] else ("EAVESDROPPER" if v["alarm"] else "down"),
        "rate": rate_text(v["key_rate_bps"]),
        "stock a>b": kbit_text(v["stock_bits"].get(v["a"])),
        "b>a (kbit)": kbit_text(v["stock_bits"].get(v["b"])),
        "QBER": qber_text(v["qber"]),
        "fidelity": str(v.get("fidelity", "-")),
    }[label]


def labels_in(header: str) -> list[str]:
    return [x for x in [*HEADER, "fidelity"] if x in header]


def assert_aligned(found: list[list[str]], links: dict[str, Any]) -> None:
    """Every cell of every table under its label: right-aligned ones end where the label ends,
    left-aligned ones start where it starts; every column in one table, the link in each."""
    labels = []
    for rows in found:
        header = rows[0]
        assert header.startswith("link ") or header == "link"
        for label in labels_in(header):
            labels.append(label)
            begin = header.index(label)
            end = begin + len(label)
            for row, (lid, v) in zip(rows[1:], links.items(), strict=True):
                text = cell(label, lid, v)
                if label in RIGHT:  # right-aligned: the cell ends where its label ends
                    assert row[:end].endswith(text), (label, row)
                    assert row[end : end + 2].strip() == ""
                else:  # left-aligned: the cell starts where its label starts
                    assert row[begin:].startswith(text), (label, row)
                    assert begin == 0 or row[begin - 2 : begin] == "  "
    fidelity = any("fidelity" in v for v in links.values())
    assert sorted(labels) == sorted(
        [*HEADER, *(["fidelity"] if fidelity else [])] + ["link"] * (len(found) - 1)
    )


@settings(max_examples=80, deadline=None)
@given(summaries, st.none() | st.integers(min_value=40, max_value=200))
def test_columns_stay_aligned_whatever_the_values(
    summary: dict[str, Any], width: int | None
) -> None:
    lines = render(summary, width)
    found = tables(lines, len(summary["links"]))
    assert_aligned(found, summary["links"])
    if width is None:
        assert len(found) == 1
        rows = found[0]
        # the last column is right-aligned: every line of the table is as long as the header
        assert all(len(r) == len(rows[0]) for r in rows)
    else:  # each table fits, unless the link and one column alone do not
        for rows in found:
            assert all(len(r) <= width for r in rows) or len(labels_in(rows[0])) == 2


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


@settings(max_examples=80, deadline=None)
@given(summaries, st.none() | st.integers(min_value=40, max_value=200))
def test_reasons_are_shown_in_full_and_wrapped_at_the_width(
    summary: dict[str, Any], width: int | None
) -> None:
    lines = render(summary, width)
    table = {line for rows in tables(lines, len(summary["links"])) for line in rows}
    rest = [line for line in lines if line not in table]
    text = squeeze("".join(rest))
    for lid, v in summary["links"].items():
        if not v["up"]:
            assert squeeze(f"{lid}: {'; '.join(v['reasons'])}") in text
    if width is not None:
        assert all(len(line) <= width for line in rest)


def test_units_keep_rates_short_and_readable() -> None:
    assert rate_text(0) == "0 b/s"
    assert rate_text(950.4) == "950 b/s"
    assert rate_text(41_000) == "41.0 kb/s"
    assert rate_text(2_310_000) == "2.31 Mb/s"
    assert rate_text(None) == rate_text(float("nan")) == rate_text(True) == "-"
    assert qber_text(0.034) == "3.4%" and qber_text(None) == "-"
    assert kbit_text(131072) == "131.1" and kbit_text(None) == "-"


def test_a_long_word_is_broken_not_lost() -> None:
    word = "x" * 150
    lines = wrapped(f"l: {word}", 60, "  ")
    assert all(len(line) <= 60 for line in lines)
    assert squeeze("".join(lines)) == f"l:{word}"


def node_state(node: str, links: dict[str, Any]) -> dict[str, Any]:
    return {
        "node": node,
        "links": links,
        "held_keys": 0,
        "pairs": {},
        "counters": {
            "relays_delivered": 0,
            "relays_failed": 0,
            "hops_forwarded": 0,
            "desyncs_repaired": 0,
        },
    }


def test_summary_names_every_reason_and_unanswering_node() -> None:
    info = {
        "topology": "t",
        "links": {"a-b": {"a": "a", "b": "b", "distance_km": 5}},
        "nodes": {
            "a": {"node_url": "https://127.0.0.1:1"},
            "b": {"node_url": "https://127.0.0.1:2"},
        },
    }
    local = {
        "report": {"up": False, "alarm": False, "reason": "module_unreachable"},
        "module": {"error": "refused"},
        "stock_bits": {"a": 8192, "b": 0},
        "bits_spent_payload": 0,
        "bits_spent_auth": 0,
    }
    summary = summarise(info, {"a": node_state("a", {"a-b": local}), "b": None})
    link = summary["links"]["a-b"]
    assert link["reasons"] == ["a: module_unreachable", "b: node not answering"]
    assert not link["up"] and summary["nodes"]["b"] == {"up": False}
    out = "\n".join(render(summary, 80))
    assert "a-b: a: module_unreachable; b: node not answering" in out
    assert "nodes not answering: b" in out


class SlowNodes:
    """A state source that answers after a while and counts the requests in flight."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0

    def get(self, node_url: str) -> dict[str, Any] | None:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(self.delay)
        with self.lock:
            self.in_flight -= 1
        port = int(node_url.rsplit(":", 1)[1])
        return None if port % 7 == 0 else {"port": port}


def test_collect_asks_many_nodes_at_once_within_its_bound() -> None:
    info = {"nodes": {f"n{i}": {"node_url": f"https://127.0.0.1:{10000 + i}"} for i in range(167)}}
    source = SlowNodes(0.02)
    states = collect(info, source, parallel=16)
    assert list(states) == list(info["nodes"])  # every node, in order
    for i in range(167):
        port = 10000 + i
        assert states[f"n{i}"] == (None if port % 7 == 0 else {"port": port})
    assert 2 <= source.most <= 16


def big_summary() -> dict[str, Any]:
    """hefei-metro-full's 167 sites and 171 links, some down (an eavesdropper, long reasons)
    and a fidelity column: the widest table the command prints."""
    topo = load_topology("hefei-metro-full")
    links: dict[str, Any] = {}
    for i, x in enumerate(topo.links):
        up = i % 9 != 0
        links[x.id] = {
            "a": x.a,
            "b": x.b,
            "distance_km": x.distance_km,
            "up": up,
            "reasons": []
            if up
            else [
                f"{x.a}: module_unreachable: the QKD module of link {x.id} refused the "
                "connection (is its process running? see the module's log) " * (1 + i % 3),
                f"{x.b}: node not answering",
            ],
            "alarm": i % 18 == 0,
            "key_rate_bps": None if not up else 950.4 + 1000 * i,
            "qber": 0.11 if i % 18 == 0 else 0.021,
            "stock_bits": {x.a: 131072 * i, x.b: 8192},
            "fidelity": "physics" if i % 2 else "emulated",
        }
    nodes = {n: {"up": i % 40 != 0} for i, n in enumerate(topo.node_ids())}
    return {"topology": topo.name, "links": links, "nodes": nodes, "pairs": {}, "age_s": 1.23}


@pytest.mark.parametrize("width", [80, 200])
def test_167_sites_fit_the_terminal_aligned_and_reasons_whole(width: int) -> None:
    summary = big_summary()
    links = summary["links"]
    lines = render(summary, width)
    assert all(len(line) <= width for line in lines)  # the terminal wraps nothing
    assert "(asof1.2sago)" in squeeze(" ".join(lines[:2]))  # the headline, maybe wrapped
    found = tables(lines, len(links))
    assert len(found) == (1 if width == 200 else 2)  # 80 columns: split, not cut
    assert_aligned(found, links)
    text = squeeze("".join(lines))
    for lid, v in links.items():
        if not v["up"]:
            assert squeeze(f"{lid}: {'; '.join(v['reasons'])}") in text
    gone = [n for n, v in summary["nodes"].items() if not v["up"]]
    assert squeeze(f"nodes not answering: {', '.join(gone)}") in text


def test_a_table_wider_than_the_terminal_splits_by_columns_led_by_the_first() -> None:
    widths = [18, 4, 12, 10, 9, 10, 5, 8]
    assert column_groups(widths, None) == [list(range(8))]
    assert column_groups(widths, 200) == [list(range(8))]
    groups = column_groups(widths, 80)
    assert [g[0] for g in groups] == [0] * len(groups)
    assert sorted(i for g in groups for i in g[1:]) == list(range(1, 8))  # each column once
    assert all(sum(widths[i] for i in g) + 2 * (len(g) - 1) <= 80 for g in groups)
    assert column_groups([30, 60], 40) == [[0, 1]]  # too wide even alone: shown whole
