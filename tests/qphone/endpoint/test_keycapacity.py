"""The OTP capacity check (qphone.endpoint.keycapacity): a route's key rate and stock against
an OTP call's need, with the beijing-hefei figures (80 km bottleneck links at 50.7 kbit/s)."""

from __future__ import annotations

import math

from qphone.endpoint.keycapacity import otp_capacity
from qphone.kmeclient import KmeStatus


def _status(rate_bps: float | None, keys: int, key_size: int = 256) -> KmeStatus:
    ext = {} if rate_bps is None else {"qkd_link": {"key_rate_bps": rate_bps}}
    return KmeStatus(
        "beijing", "hefei", "alice", "bob", key_size, keys, 100_000, 128, 65536, 64, 0, ext
    )


def test_a_route_faster_than_the_call_carries_it_without_end() -> None:
    cap = otp_capacity(12_000, 64, 20, _status(50_700, 0))
    assert cap.need_bps == 2 * 15_200 + 256
    assert cap.seconds == math.inf and cap.problem(None) is None and cap.problem(600) is None


def test_a_slower_route_carries_the_call_as_long_as_its_stock_and_says_so() -> None:
    # 24 kbit/s Opus: 2 x 27.2 kbit/s + MAC keys, above the 50.7 kbit/s bottleneck
    cap = otp_capacity(24_000, 64, 20, _status(50_700, 1_000))  # 256 kbit in stock
    assert cap.seconds == 256_000 / (54_656 - 50_700)
    assert cap.problem(30) is None  # 64 s of stock: a 30 s call fits
    line = cap.problem(120)
    assert line is not None and "50.7 kbit/s" in line and "54.7 kbit/s" in line
    assert "--mode aes" in line and "\n" not in line


def test_no_rate_reported_judges_the_stock_alone() -> None:
    cap = otp_capacity(12_000, 64, 20, _status(None, 100))
    assert cap.rate_bps is None and cap.seconds == 25_600 / 30_656
    line = cap.problem(8)
    assert line is not None and "has not reported a key rate" in line
    assert otp_capacity(12_000, 64, 20, _status(0, 100)).rate_bps is None
