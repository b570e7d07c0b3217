"""How many simultaneous calls a key route carries (sans-I/O arithmetic, no measurement).

A call's key demand, per second, in end-to-end key bits and in key requests (docs/crypto.md):

* **OTP** at 12 kbit/s Opus with 64-bit tags: 12,000 + 50 x 64 = 15,200 bits per direction,
  both directions fetched by the caller, coalesced into one request a second;
* **AES**: one 256-bit key per direction per 10-second epoch, both in one request.

Every link of the route spends, per request, the request's key bits (hop 1: the keys *are* link
key; every later hop: a one-time pad of the same length) plus a 32-byte one-time MAC key
(:mod:`keyserver.kms.relay`). So each link of an h-hop route spends the same bits per call, and
the route's **link bound** is the bottleneck link's secret-key rate divided by that; the route
as a whole spends h times as much link key (``route_link_bits_per_call``). The **KMS bound** is
the key requests a second the route's nodes serve (a measured figure: ``bench pair``) divided by
the requests a call makes. A route carries the smaller of the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from keyserver.kms.relay import MAC_KEY_BYTES

OTP_BITS_PER_DIRECTION = 12_000 + 50 * 64  # 12 kbit/s Opus + a 64-bit tag per 20 ms frame
AES_KEY_BITS = 256
AES_EPOCH_S = 10.0
MAC_KEY_BITS = 8 * MAC_KEY_BYTES


@dataclass(frozen=True)
class CallDemand:
    mode: str
    key_bits_per_s: float  # end-to-end key, both directions
    requests_per_s: float  # key requests (enc_keys at the caller's node + dec_keys at the far end)

    @property
    def link_bits_per_s(self) -> float:
        """Link key each link of the route spends per call and second (pad + MAC keys)."""
        return self.key_bits_per_s + self.requests_per_s * MAC_KEY_BITS


OTP = CallDemand("otp", 2 * OTP_BITS_PER_DIRECTION, 1.0)
AES = CallDemand("aes", 2 * AES_KEY_BITS / AES_EPOCH_S, 1 / AES_EPOCH_S)


def capacity(
    demand: CallDemand, bottleneck_bps: float | None, hops: int, requests_per_s: float | None
) -> dict[str, Any]:
    """Calls of `demand` a route of `hops` hops carries: the link bound (bottleneck link rate),
    the KMS bound (key requests/s the route serves), and the smaller, rounded down."""
    link = None if bottleneck_bps is None else bottleneck_bps / demand.link_bits_per_s
    kms = None if requests_per_s is None else requests_per_s / demand.requests_per_s
    bounds = [b for b in (link, kms) if b is not None]
    calls = math.floor(min(bounds)) if bounds else None
    return {
        "mode": demand.mode,
        "link_bits_per_call_s": round(demand.link_bits_per_s, 1),
        "route_link_bits_per_call_s": round(hops * demand.link_bits_per_s, 1),
        "calls_link_bound": None if link is None else round(link, 2),
        "calls_kms_bound": None if kms is None else round(kms, 1),
        "calls": calls,
        "limited_by": None
        if not bounds
        else ("link" if link is not None and link == min(bounds) else "kms"),
    }


def route_capacity(
    bottleneck_bps: float | None, hops: int, requests_per_s: float | None
) -> dict[str, Any]:
    """Both modes: ``{"otp": {...}, "aes": {...}}`` (see :func:`capacity`)."""
    return {d.mode: capacity(d, bottleneck_bps, hops, requests_per_s) for d in (OTP, AES)}
