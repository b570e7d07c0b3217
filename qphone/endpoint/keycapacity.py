"""Can the key route carry this OTP call?  Checked by the caller before dialing (sans-I/O).

A one-time-pad call spends QKD key as fast as it talks: both directions' Opus bitrate plus one
tag per frame (``CallOptions``: 12 kbit/s with 64-bit tags at 20 ms is 2 x 15.2 kbit/s), all of
it drawn by the caller and, across trusted nodes, relayed over every link of the route.  What the
route gives is what its KME's ETSI 014 status says (qkd-keyserver's ``status_extension``): the
key rate of its slowest link (``qkd_link.key_rate_bps``) and the key it holds for the pair now
(``stored_key_count`` keys of ``key_size`` bits, the route's bottleneck stock).  When the rate
is below the call's need, the stock carries the call for ``stock / (need - rate)`` seconds, after
which frames go unsent for want of pad and the call ends (fail closed).  The caller says so in
one line before dialing, and refuses a call whose ``--duration`` the route cannot carry.  A KME
that reports no rate (another vendor's, or a link still running its first block) is judged on
its stock alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qphone.kmeclient import KmeStatus

MAC_BITS_PER_S = 256  # a relay's one-time MAC key per request, about one request a second


@dataclass(frozen=True)
class OtpCapacity:
    """An OTP call's key need against what its route delivers (bits per second, bits)."""

    need_bps: float  # both directions, pad and tags (plus the relay's MAC keys)
    rate_bps: float | None  # the route's slowest link (None or 0: not reported yet)
    stock_bits: int

    @property
    def seconds(self) -> float:
        """Seconds of this call the route carries (inf: its rate covers the need)."""
        rate = self.rate_bps or 0.0
        if rate >= self.need_bps:
            return math.inf
        return self.stock_bits / (self.need_bps - rate)

    def problem(self, duration: float | None) -> str | None:
        """One line when the route cannot carry the call (for ``duration`` s, or at all)."""
        if self.seconds == math.inf or (duration is not None and self.seconds >= duration):
            return None
        rate = (
            f"delivers {self.rate_bps / 1000:.1f} kbit/s at its slowest link"
            if self.rate_bps
            else "has not reported a key rate yet"
        )
        return (
            f"the key route {rate} and holds {self.stock_bits / 1000:.0f} kbit for this call; "
            f"an OTP call at these settings needs {self.need_bps / 1000:.1f} kbit/s, so the pad "
            f"lasts about {self.seconds:.0f} s of talk and then the call ends (fail closed): "
            "use --mode aes, a lower --bitrate, or wait for the route's stock to grow"
        )


def otp_capacity(bitrate: int, tag_bits: int, frame_ms: int, status: KmeStatus) -> OtpCapacity:
    """The capacity check for an OTP call at ``bitrate`` with ``tag_bits`` tags per
    ``frame_ms`` frame, on the route the KME's ``status`` describes."""
    per_direction = bitrate + tag_bits * 1000 / frame_ms
    rate = status.link.get("key_rate_bps")
    return OtpCapacity(
        need_bps=2 * per_direction + MAC_BITS_PER_S,
        rate_bps=float(rate) if isinstance(rate, int | float) and rate > 0 else None,
        stock_bits=max(0, status.stored_key_count) * status.key_size,
    )
