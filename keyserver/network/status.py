"""The live state of a running network, from its nodes' ``/kms/v1/state`` (sans-I/O rendering).

:func:`collect` asks every node at once (a bounded pool of threads: a node's answer costs a TLS
handshake and its state, and asking 167 nodes one after the other took seconds, mostly waiting
on busy node processes); :func:`summarise` turns the answers into one JSON-able summary (per
link: up or why not, key rate, stock each way, QBER, alarm; per node: answering, relays; per
SAE pair: relays, routes, relay time); :func:`render` makes the terminal lines: a headline, a
table whose columns are as wide as their widest cell (so they stay aligned whatever the
values; split into tables that fit when wider than the terminal, never cut or wrapped by it),
and every reason a link is down in full on its own line (wrapped, never cut).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any, Protocol

MAX_PARALLEL = 32  # state requests in flight at once
GAP = "  "  # between table columns


class StateSource(Protocol):
    """Where node states come from (:class:`keyserver.network.stateclient.StateClient`)."""

    def get(self, node_url: str) -> dict[str, Any] | None: ...


def collect(
    info: dict[str, Any], client: StateSource, parallel: int = MAX_PARALLEL
) -> dict[str, dict[str, Any] | None]:
    """Every node's state (None: it did not answer), asking up to `parallel` nodes at once."""
    from concurrent.futures import ThreadPoolExecutor  # here: rendering needs no threads

    nodes = list(info["nodes"].items())
    if not nodes:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(nodes)))) as pool:
        states = list(pool.map(lambda nv: client.get(nv[1]["node_url"]), nodes))
    return {n: st for (n, _), st in zip(nodes, states, strict=True)}


def summarise(info: dict[str, Any], states: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    links: dict[str, Any] = {}
    for lid, spec in info["links"].items():
        ends = {}
        for end in (spec["a"], spec["b"]):
            st = states.get(end)
            local = st["links"].get(lid) if st else None
            ends[end] = local
        reports = {e: (v["report"] if v else None) for e, v in ends.items()}
        reasons = [f"{e}: {r['reason']}" for e, r in reports.items() if r and not r["up"]]
        reasons += [f"{e}: node not answering" for e, r in reports.items() if r is None]
        module: dict[str, Any] = next(
            (v["module"] for v in ends.values() if v and "state" in v["module"]), {}
        )
        tx = ends.get(spec["a"])
        stock = tx["stock_bits"] if tx else {}
        links[lid] = {
            "a": spec["a"],
            "b": spec["b"],
            "distance_km": spec["distance_km"],
            "up": not reasons,
            "reasons": reasons,
            "alarm": any(r and r["alarm"] for r in reports.values()),
            "key_rate_bps": module.get("key_rate_bps"),
            "qber": module.get("qber_ewma", module.get("qber")),
            "module_state": module.get("state", "unreachable" if not module else "running"),
            "stock_bits": stock,
            "bits_spent": sum(
                (v["bits_spent_payload"] + v["bits_spent_auth"]) for v in ends.values() if v
            )
            // 2,
        }
        fidelity = spec.get("fidelity") or module.get("fidelity")  # the module says it too
        if fidelity:
            links[lid]["fidelity"] = fidelity
    pairs: dict[str, Any] = {}
    nodes: dict[str, Any] = {}
    for n, st in states.items():
        nodes[n] = {"up": st is not None}
        if st is None:
            continue
        nodes[n].update(
            {
                "held_keys": st["held_keys"],
                **{
                    k: st["counters"][k]
                    for k in (
                        "relays_delivered",
                        "relays_failed",
                        "hops_forwarded",
                        "desyncs_repaired",
                    )
                },
            }
        )
        for pair, p in st["pairs"].items():
            pairs[pair] = {"node": n, **p}
    return {"topology": info.get("topology"), "links": links, "nodes": nodes, "pairs": pairs}


# -- rendering (pure) ------------------------------------------------------------------------


def rate_text(bps: Any) -> str:
    """A key rate in the unit that keeps 1-4 significant digits: 950 b/s, 41.0 kb/s, 2.31 Mb/s."""
    if isinstance(bps, bool) or not isinstance(bps, int | float) or bps != bps or bps < 0:
        return "-"
    if bps < 1000:
        return f"{bps:.0f} b/s"
    if bps < 1_000_000:
        return f"{bps / 1000:.1f} kb/s"
    return f"{bps / 1_000_000:.2f} Mb/s"


def kbit_text(bits: Any) -> str:
    if isinstance(bits, bool) or not isinstance(bits, int | float):
        return "-"
    return f"{bits / 1000:.1f}"


def qber_text(q: Any) -> str:
    if isinstance(q, bool) or not isinstance(q, int | float) or q != q:
        return "-"
    return f"{100 * q:.1f}%"


def state_text(link: dict[str, Any]) -> str:
    if link["up"]:
        return "up"
    return "EAVESDROPPER" if link["alarm"] else "down"


def column_groups(widths: Sequence[int], width: int | None) -> list[list[int]]:
    """The columns of each table to print: all in one when they fit in `width`, else the first
    (the row's name) and as many more as fit, then the first and the next ones, and so on (a
    column wider than `width` alone gets a table of its own beside the first: never cut)."""
    if width is None or sum(widths) + len(GAP) * (len(widths) - 1) <= width:
        return [list(range(len(widths)))]
    groups: list[list[int]] = []
    group, used = [0], widths[0]
    for i in range(1, len(widths)):
        if len(group) > 1 and used + len(GAP) + widths[i] > width:
            groups.append(group)
            group, used = [0], widths[0]
        group.append(i)
        used += len(GAP) + widths[i]
    groups.append(group)
    return groups


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Sequence[bool],
    width: int | None = None,
) -> list[str]:
    """Rows under a header, each column as wide as its widest cell; `right`: right-aligned.
    Wider than `width`: split into tables that fit, one under the other, each led by the first
    column (a blank line between them). Linear in the number of cells."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    out: list[str] = []
    for group in column_groups(widths, width):

        def line(cells: Sequence[str], group: list[int] = group) -> str:
            return GAP.join(
                cells[i].rjust(widths[i]) if right[i] else cells[i].ljust(widths[i]) for i in group
            ).rstrip()

        if out:
            out.append("")
        out += [line(header), *(line(r) for r in rows)]
    return out


def wrapped(text: str, width: int | None, indent: str) -> list[str]:
    """`text` in full: one line, or wrapped at `width` (continuation lines indented further)."""
    if width is None or len(indent) + len(text) <= width:
        return [indent + text]
    return textwrap.wrap(
        text,
        width=max(width, len(indent) + 20),
        initial_indent=indent,
        subsequent_indent=indent + "  ",
        break_long_words=True,
        break_on_hyphens=False,
    )


def headline(summary: dict[str, Any]) -> str:
    links = summary["links"].values()
    nodes = summary["nodes"].values()
    up = sum(1 for v in links if v["up"])
    alarms = sum(1 for v in links if v["alarm"])
    answering = sum(1 for v in nodes if v["up"])
    km = sum(float(v["distance_km"]) for v in links)
    return (
        f"{summary.get('topology') or 'network'}: {answering}/{len(nodes)} nodes answering, "
        f"{up}/{len(links)} links up"
        + (f", {alarms} with an eavesdropper alarm" if alarms else "")
        + f", {km:,.0f} km of fibre"
        + (f" (as of {float(summary['age_s']):.1f} s ago)" if "age_s" in summary else "")
    )


def render(summary: dict[str, Any], width: int | None = None) -> list[str]:
    """The terminal lines; `width`: wrap long reasons and routes there (None: never wrap)."""
    links: dict[str, dict[str, Any]] = summary["links"]
    fidelity = any("fidelity" in v for v in links.values())
    header = ["link", "km", "state", "rate", "stock a>b", "b>a (kbit)", "QBER"]
    right = [False, True, False, True, True, True, True]
    if fidelity:
        header.append("fidelity")
        right.append(False)
    rows: list[list[str]] = []
    for lid, v in links.items():
        st = v["stock_bits"] or {}
        row = [
            lid,
            f"{float(v['distance_km']):g}",
            state_text(v),
            rate_text(v["key_rate_bps"]),
            kbit_text(st.get(v["a"])),
            kbit_text(st.get(v["b"])),
            qber_text(v["qber"]),
        ]
        if fidelity:
            row.append(str(v.get("fidelity", "-")))
        rows.append(row)
    out = [*wrapped(headline(summary), width, ""), *table(header, rows, right, width)]
    down = [(lid, v) for lid, v in links.items() if not v["up"]]
    if down:
        out.append("why links are down:")
        for lid, v in down:
            why = "; ".join(v["reasons"]) or "-"
            out += wrapped(f"{lid}: {why}", width, "  ")
    gone = [n for n, v in summary["nodes"].items() if not v["up"]]
    if gone:
        out += wrapped(f"nodes not answering: {', '.join(gone)}", width, "")
    for pair, p in summary["pairs"].items():
        routes = " | ".join("-".join(r) for r in p.get("routes", []))
        ms = p.get("mean_ms")
        out += wrapped(
            f"relays {pair}: {p['relays']} ok, {p['failures']} failed, "
            f"mean {ms if ms is not None else '-'} ms, route {routes or '-'}",
            width,
            "",
        )
    return out
