"""PNG plot of a loopback report: latency over time and its CDF, key over time, loss events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


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
    fig.suptitle(title)

    lat = np.asarray(s["latency"], dtype=float).reshape(-1, 2)
    a = ax[0][0]
    a.plot(lat[:, 0], lat[:, 1], ".", ms=2, label="frame")
    for t, kind in s["loss_events"]:
        a.axvline(t, color="red" if kind == "plc" else "orange", alpha=0.25, lw=0.8)
    a.set_xlabel("call time (s)")
    a.set_ylabel("mouth-to-ear (ms)")
    a.set_title("latency per frame (red: concealed, orange: FEC)")

    a = ax[0][1]
    if len(lat):
        v = np.sort(lat[:, 1])
        a.plot(v, np.arange(1, len(v) + 1) / len(v))
        p = report["latency_ms"]
        for q in ("p50", "p95", "p99"):
            a.axvline(p[q], ls="--", alpha=0.5)
            a.text(p[q], 0.05, q, rotation=90)
    a.set_xlabel("mouth-to-ear (ms)")
    a.set_ylabel("fraction of frames")
    a.set_title("latency CDF")

    a = ax[1][0]
    for who in ("alice", "bob"):
        k = np.asarray(s[f"key_{who}"], dtype=float).reshape(-1, 2)
        if len(k):
            a.plot(k[:, 0], k[:, 1] / 1000, label=f"{who} (consumed)")
    for t, epoch in s["rotations"]:
        a.axvline(t, color="grey", alpha=0.4, lw=0.8)
        a.text(t, a.get_ylim()[1] * 0.95, f"e{epoch}", fontsize=7)
    a.set_xlabel("call time (s)")
    a.set_ylabel("QKD key (kbit)")
    key = report["key"]
    a.set_title(
        f"QKD key: {key['qkd_bits_consumed']} bits, expected {key['qkd_bits_expected']} "
        f"(ratio {key['ratio']})"
    )
    a.legend(loc="upper left")

    a = ax[1][1]
    f = report["frames"]
    names = ["sent", "received", "lost", "late", "concealed", "fec_recovered", "duplicates_dropped"]
    a.bar(range(len(names)), [f[n] for n in names])
    a.set_xticks(range(len(names)), names, rotation=30, ha="right")
    a.set_title("frames")
    q = report.get("quality", {})
    text = []
    for kind in ("encrypted", "unencrypted"):
        if kind in q:
            text.append(f"{kind}: PESQ {q[kind]['pesq_wb']}, STOI {q[kind]['stoi']}")
    if "bit_identical_to_unencrypted" in q:
        text.append(f"bit-identical to unencrypted: {q['bit_identical_to_unencrypted']}")
    a.text(0.98, 0.95, "\n".join(text), transform=a.transAxes, ha="right", va="top", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
