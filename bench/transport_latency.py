"""One-way latency and CPU cost of qphone's transport on loopback.

Two CallTransports in one process (one event loop, one clock) on 127.0.0.1.
Each endpoint sends one frame every 20 ms (a full-duplex call) for --seconds;
latency = time.monotonic() when the receiving side gets the frame from the
network hook minus time.monotonic() just before send_frame().  Media over RTP
(DTLS-SRTP) is compared with an unreliable unordered data channel (SCTP over
DTLS) and with bare asyncio UDP sockets (the floor on this machine).

CPU is process CPU time (user+sys) over the streaming window, in percent of
one core, for both endpoints together, compared with an idle connected pair.

    .venv/bin/python bench/transport_latency.py [--seconds 10] [--payload 100] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qphone.transport.calltransport import CallTransport
from qphone.transport.config import LOOPBACK_ADDRESSES, MediaPath, TransportConfig
from qphone.transport.frames import ReceivedFrame
from qphone.transport.signaling import SignalingListener

FRAME_INTERVAL = 0.020
_INDEX = struct.Struct(">I")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summarize(latencies_s: list[float], sent: int) -> dict[str, Any]:
    ms = [x * 1000 for x in latencies_s]
    return {
        "frames_sent": sent,
        "frames_received": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


async def connected_pair(path: MediaPath) -> tuple[CallTransport, CallTransport]:
    config = TransportConfig(host_addresses=LOOPBACK_ADDRESSES, media_path=path)
    caller, answerer = CallTransport(config), CallTransport(config)
    async with await SignalingListener.open("127.0.0.1", 0) as listener:

        async def answer() -> None:
            await answerer.answer_on(await listener.accept(timeout=10))

        await asyncio.gather(answer(), caller.connect_as_caller("127.0.0.1", listener.port))
    return caller, answerer


async def stream(
    endpoints: tuple[CallTransport, CallTransport], seconds: float, payload_size: int
) -> tuple[list[float], int]:
    """Both endpoints send a frame every 20 ms; returns one-way latencies (both directions)."""
    sent_at: list[dict[int, float]] = [{}, {}]
    latencies: list[float] = []

    def receiver(direction: int) -> Any:
        def on_frame(frame: ReceivedFrame) -> None:
            (index,) = _INDEX.unpack_from(frame.payload)
            t0 = sent_at[direction].pop(index, None)
            if t0 is not None:
                latencies.append(frame.arrival - t0)

        return on_frame

    endpoints[1].set_frame_callback(receiver(0))
    endpoints[0].set_frame_callback(receiver(1))
    filler = os.urandom(payload_size - _INDEX.size)
    n = int(seconds / FRAME_INTERVAL)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i * FRAME_INTERVAL - loop.time()))
        for direction, endpoint in enumerate(endpoints):
            sent_at[direction][i] = time.monotonic()
            endpoint.send_frame(_INDEX.pack(i) + filler, i * 960)
    await asyncio.sleep(0.2)
    return latencies, 2 * n


async def measure_path(path: MediaPath, seconds: float, payload: int) -> dict[str, Any]:
    caller, answerer = await connected_pair(path)
    try:
        await asyncio.sleep(0.5)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(min(seconds, 5.0))
        idle_cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        cpu0, wall0 = time.process_time(), time.monotonic()
        latencies, sent = await stream((caller, answerer), seconds, payload)
        busy_cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        result = summarize(latencies, sent)
        result["cpu_percent_two_endpoints_streaming"] = round(100 * busy_cpu, 2)
        result["cpu_percent_two_endpoints_idle"] = round(100 * idle_cpu, 2)
        result["cpu_percent_per_endpoint"] = round(100 * busy_cpu / 2, 2)
        stats = await answerer.stats()
        result["rtt_ms_heartbeat"] = round(1000 * stats.rtt_s, 3) if stats.rtt_s else None
        return result
    finally:
        await caller.close()
        await answerer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, sent_at: dict[int, float], latencies: list[float]) -> None:
        self.sent_at = sent_at
        self.latencies = latencies

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = time.monotonic()
        t0 = self.sent_at.pop(_INDEX.unpack_from(data)[0], None)
        if t0 is not None:
            self.latencies.append(now - t0)


async def measure_udp(seconds: float, payload: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    rx, _ = await loop.create_datagram_endpoint(
        lambda: _Udp(sent_at, latencies), local_addr=("127.0.0.1", 0)
    )
    tx, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=rx.get_extra_info("sockname")
    )
    filler = os.urandom(payload - _INDEX.size)
    n = int(seconds / FRAME_INTERVAL)
    start = loop.time()
    cpu0, wall0 = time.process_time(), time.monotonic()
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i * FRAME_INTERVAL - loop.time()))
        sent_at[i] = time.monotonic()
        tx.sendto(_INDEX.pack(i) + filler)
    await asyncio.sleep(0.2)
    cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    tx.close()
    rx.close()
    result = summarize(latencies, n)
    result["cpu_percent_process"] = round(100 * cpu, 2)
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="streaming time per path")
    parser.add_argument("--payload", type=int, default=100, help="payload bytes per frame")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = {
        "payload_bytes": args.payload,
        "frame_interval_ms": FRAME_INTERVAL * 1000,
        "seconds": args.seconds,
        "rtp": await measure_path(MediaPath.RTP, args.seconds, args.payload),
        "datachannel_unreliable": await measure_path(
            MediaPath.DATACHANNEL, args.seconds, args.payload
        ),
        "bare_udp": await measure_udp(args.seconds, args.payload),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.payload}-byte frames every 20 ms, {args.seconds:.0f} s, loopback, one process")
    for name in ("rtp", "datachannel_unreliable", "bare_udp"):
        r = results[name]
        cpu = (
            f"CPU {r['cpu_percent_per_endpoint']:5.2f}% of a core per endpoint"
            if "cpu_percent_per_endpoint" in r
            else f"CPU {r['cpu_percent_process']:5.2f}% of a core (whole process)"
        )
        print(
            f"  {name:24s} one-way p50 {r['p50_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms  "
            f"max {r['max_ms']:7.3f} ms  received {r['frames_received']}/{r['frames_sent']}  {cpu}"
        )
    for name in ("rtp", "datachannel_unreliable"):
        r = results[name]
        print(
            f"  {name}: two endpoints streaming {r['cpu_percent_two_endpoints_streaming']}%, "
            f"idle (heartbeat + RTCP) {r['cpu_percent_two_endpoints_idle']}%"
        )


if __name__ == "__main__":
    asyncio.run(main())
