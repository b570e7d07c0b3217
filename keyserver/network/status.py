"""The live state of a running network, from its nodes' ``/kms/v1/state`` (sans-I/O rendering).

:func:`collect` asks every node; :func:`summarise` turns the answers into one JSON-able summary
(per link: up or why not, key rate, stock each way, QBER, alarm; per node: answering, relays;
per SAE pair: relays, routes, relay time); :func:`render` makes the terminal lines.
"""

from __future__ import annotations

from typing import Any

from keyserver.network.stateclient import StateClient


def collect(info: dict[str, Any], client: StateClient) -> dict[str, dict[str, Any] | None]:
    return {n: client.get(v["node_url"]) for n, v in info["nodes"].items()}


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
            "a": spec["a"], "b": spec["b"], "distance_km": spec["distance_km"],
            "up": not reasons, "reasons": reasons,
            "alarm": any(r and r["alarm"] for r in reports.values()),
            "key_rate_bps": module.get("key_rate_bps"),
            "qber": module.get("qber_ewma", module.get("qber")),
            "module_state": module.get("state", "unreachable" if not module else "running"),
            "stock_bits": stock,
            "bits_spent": sum((v["bits_spent_payload"] + v["bits_spent_auth"]) for v in
                              ends.values() if v) // 2,
        }
    pairs: dict[str, Any] = {}
    nodes: dict[str, Any] = {}
    for n, st in states.items():
        nodes[n] = {"up": st is not None}
        if st is None:
            continue
        nodes[n].update({"held_keys": st["held_keys"], **{
            k: st["counters"][k] for k in ("relays_delivered", "relays_failed",
                                          "hops_forwarded", "desyncs_repaired")}})
        for pair, p in st["pairs"].items():
            pairs[pair] = {"node": n, **p}
    return {"topology": info.get("topology"), "links": links, "nodes": nodes, "pairs": pairs}


def _rate(v: Any) -> str:
    if not isinstance(v, int | float):
        return "-"
    return f"{v / 1000:.1f} kb/s"


def render(summary: dict[str, Any]) -> list[str]:
    out = [f"{'link':<22} {'state':<26} {'rate':>10} {'stock a>b / b>a (kbit)':>24} "
           f"{'QBER':>6}"]
    for lid, v in summary["links"].items():
        state = "up" if v["up"] else ("EAVESDROPPER " if v["alarm"] else "down: ") + (
            "; ".join(v["reasons"])[:40] if not v["alarm"] else "")
        st = v["stock_bits"]
        stock = f"{st.get(v['a'], 0) / 1000:.1f} / {st.get(v['b'], 0) / 1000:.1f}" if st else "-"
        q = f"{100 * v['qber']:.1f}%" if isinstance(v["qber"], int | float) else "-"
        out.append(f"{lid:<22} {state[:26]:<26} {_rate(v['key_rate_bps']):>10} {stock:>24} "
                   f"{q:>6}")
    down = [n for n, v in summary["nodes"].items() if not v["up"]]
    if down:
        out.append(f"nodes not answering: {', '.join(down)}")
    for pair, p in summary["pairs"].items():
        routes = " | ".join("-".join(r) for r in p.get("routes", []))
        ms = p.get("mean_ms")
        out.append(f"relays {pair}: {p['relays']} ok, {p['failures']} failed, "
                   f"mean {ms if ms is not None else '-'} ms, route {routes or '-'}")
    return out
