"""PNG plot of a loopback report: latency over time and its CDF, QKD key over time, frames.

Every mark is in a legend or labelled, and every figure comes from the report itself, so the
plot and the report's counters agree: the loss marks are the concealed and FEC-recovered slots
inside the stream (the ``frames`` counters count the same slots), the key panel starts at 0 and
shows what alice had drawn from her KME and what each side had used, and each frame bar carries
its count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

FRAME_BARS = (
    ("sent", "sent by alice"),
    ("received", "received by bob"),
    ("lost", "lost"),
    ("late", "late"),
    ("concealed", "concealed (PLC)"),
    ("fec_recovered", "FEC-recovered"),
    ("duplicates_dropped", "duplicates dropped"),
)


def plot_report(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - measure extra missing
        raise RuntimeError("plots need matplotlib: pip install 'qphone[measure]'") from exc
    s = report["series"]
    cfg = report["config"]
    fig, ax = plt.subplots(2, 2, figsize=(12, 7.5))
    title = (
        f"qphone loopback: {cfg['mode']} mode, {cfg['bitrate'] // 1000} kbit/s, "
        f"{cfg['frame_ms']} ms frames, loss {cfg['loss']:.0%}, jitter {cfg['jitter_ms']} ms"
    )
    route = report.get("route")
    if route and route.get("nodes"):
        mean = route.get("relay_ms_mean")
        title += (
            f"\nkey route {route['nodes'][0]} -> {route['nodes'][-1]}: {route['hops']} hops"
            + (f", {route['distance_km']:g} km" if route.get("distance_km") is not None else "")
            + f", {route['key_requests']} key requests relayed"
            + (f", {mean:.0f} ms each" if mean is not None else "")
        )
    fig.suptitle(title)

    lat = np.asarray(s["latency"], dtype=float).reshape(-1, 2)
    a = ax[0][0]
    a.plot(lat[:, 0], lat[:, 1], ".", ms=2, label="one frame played")
    for kind, colour, label in (("plc", "red", "concealed (PLC)"), ("fec", "orange", "FEC")):
        times = [t for t, k in s["loss_events"] if k == kind]
        for i, t in enumerate(times):
            a.axvline(t, color=colour, alpha=0.35, lw=0.8, label=label if i == 0 else None)
    a.set_xlabel("call time (s)")
    a.set_ylabel("mouth-to-ear (ms)")
    f = report["frames"]
    a.set_title(
        f"latency per frame; {f['concealed']} concealed, {f['fec_recovered']} FEC-recovered"
    )
    a.legend(loc="upper right", fontsize=8)

    a = ax[0][1]
    p = report["latency_ms"]
    if len(lat):
        v = np.sort(lat[:, 1])
        a.plot(v, np.arange(1, len(v) + 1) / len(v), label="frames played")
        for q, style in (("p50", "--"), ("p95", "-."), ("p99", ":")):
            a.axvline(p[q], ls=style, color="grey", label=f"{q} {p[q]:.1f} ms")
    a.set_xlabel("mouth-to-ear (ms)")
    a.set_ylabel("fraction of frames")
    a.set_title("latency CDF")
    a.legend(loc="lower right", fontsize=8)

    a = ax[1][0]
    key = report["key"]
    curves = (
        ("key_drawn", "alice: drawn from her KME (both directions)", 4.0, "silver"),
        ("key_alice", "alice: used (her sending + shared)", 1.5, "tab:blue"),
        ("key_bob", "bob: used (his sending + shared)", 1.5, "tab:orange"),
    )
    for name, label, width, colour in curves:
        k = np.asarray(s.get(name, []), dtype=float).reshape(-1, 2)
        if len(k):
            a.plot(k[:, 0], k[:, 1] / 1000, color=colour, lw=width, label=label)
    for i, (t, _) in enumerate(s["rotations"]):
        a.axvline(
            t, color="grey", alpha=0.4, lw=0.8, label="key rotation (epoch)" if i == 0 else None
        )
    a.set_ylim(bottom=0)
    a.set_xlabel("call time (s)")
    a.set_ylabel("QKD key (kbit)")
    total = key["total"]
    a.set_title(
        f"QKD key: drawn {total['qkd_bits_drawn']} bits for a need of {key['qkd_bits_needed']} "
        f"(ratio {key['ratio']}), wasted {total['qkd_bits_wasted']}",
        fontsize=10,
    )
    a.legend(loc="upper left", fontsize=8)

    a = ax[1][1]
    values = [f[name] for name, _ in FRAME_BARS]
    bars = a.bar(range(len(FRAME_BARS)), values, color="tab:blue")
    a.bar_label(bars, labels=[str(v) for v in values], fontsize=8)
    a.set_xticks(
        range(len(FRAME_BARS)), [label for _, label in FRAME_BARS], rotation=30, ha="right"
    )
    a.set_ylabel("frames")
    a.set_title("frames alice sent and bob played (inside the stream)")
    q = report.get("quality", {})
    text = []
    for kind in ("encrypted", "unencrypted"):
        if kind in q:
            pesq = q[kind].get("pesq_wb", q[kind].get("pesq_nb"))
            text.append(f"{kind}: PESQ {pesq}, STOI {q[kind]['stoi']}")
    if "bit_identical_to_unencrypted" in q:
        text.append(f"bit-identical to unencrypted: {q['bit_identical_to_unencrypted']}")
    a.text(0.98, 0.95, "\n".join(text), transform=a.transAxes, ha="right", va="top", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
