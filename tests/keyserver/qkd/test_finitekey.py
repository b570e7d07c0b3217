"""The finite-key bound against an independent implementation of Lim et al. (2014), eq. by eq."""

from __future__ import annotations

import math

import pytest

from keyserver.qkd.finitekey import BasisCounts, chernoff_interval, finite_key, optimised
from keyserver.qkd.physics import LinkParams, asymptotic_key_rate, gys_reference, theory_key_rate


def lim_reference(nz, nx, mx, mus, ps, leak, eps_sec, eps_cor):  # type: ignore[no-untyped-def]
    """Lim, Curty, Walenta, Xu, Zbinden, PRA 89 022307 (2014), written out from the paper
    (key basis Z here, their X), Hoeffding concentration, eps per term = eps_sec / 21."""
    m1, m2, m3 = mus
    e = math.exp
    eps1 = eps_sec / 21

    def d(total):  # type: ignore[no-untyped-def]
        return math.sqrt(total / 2 * math.log(1 / eps1))

    def plus_minus(counts, total):  # type: ignore[no-untyped-def]
        return (
            [e(mu) / p * (c + d(total)) for mu, p, c in zip(mus, ps, counts, strict=True)],
            [e(mu) / p * (c - d(total)) for mu, p, c in zip(mus, ps, counts, strict=True)],
        )

    tau0 = sum(e(-mu) * p for mu, p in zip(mus, ps, strict=True))
    tau1 = sum(e(-mu) * mu * p for mu, p in zip(mus, ps, strict=True))

    def s0_s1(counts):  # type: ignore[no-untyped-def]
        plus, minus = plus_minus(counts, sum(counts))
        s0 = max(tau0 * (m2 * minus[2] - m3 * plus[1]) / (m2 - m3), 0.0)  # s0 >= 0 anyway
        s1 = (
            tau1
            * m1
            * (minus[1] - plus[2] - (m2**2 - m3**2) / m1**2 * (plus[0] - s0 / tau0))
            / (m1 * (m2 - m3) - m2**2 + m3**2)
        )
        return s0, s1

    sz0, sz1 = s0_s1(nz)
    _, sx1 = s0_s1(nx)
    mplus, mminus = plus_minus(mx, sum(mx))
    vx1 = tau1 * (mplus[1] - mminus[2]) / (m2 - m3)
    b = vx1 / sx1
    c, dd = sz1, sx1
    g = math.sqrt(
        (c + dd)
        * (1 - b)
        * b
        / (c * dd * math.log(2))
        * math.log2((c + dd) / (c * dd * (1 - b) * b) * 21**2 / eps_sec**2)
    )
    phi = b + g

    def h(x):  # type: ignore[no-untyped-def]
        return -x * math.log2(x) - (1 - x) * math.log2(1 - x)

    return sz0 + sz1 - sz1 * h(phi) - leak - 6 * math.log2(21 / eps_sec) - math.log2(2 / eps_cor)


# pinned vectors: (n_Z per intensity, n_X, m_X, intensities, probabilities, leak)
VECTORS = [
    (
        (6.1e8, 7.0e7, 9.0e4),
        (1.9e7, 2.2e6, 2.8e3),
        (6.2e5, 8.0e4, 1.4e3),
        (0.5, 0.1, 0.0),
        (0.8, 0.15, 0.05),
        1.2e8,
    ),
    (
        (2.2e9, 4.0e8, 3.0e6),
        (6.0e7, 1.1e7, 8.0e4),
        (1.9e6, 3.7e5, 4.0e4),
        (0.45, 0.15, 0.0),
        (0.7, 0.25, 0.05),
        4.4e8,
    ),
]


@pytest.mark.parametrize("vector", VECTORS)
def test_hoeffding_bound_matches_the_published_formula(vector) -> None:  # type: ignore[no-untyped-def]
    nz, nx, mx, mus, ps, leak = vector
    params = LinkParams(
        mu=mus[0],
        nu=mus[1],
        p_signal=ps[0],
        p_decoy=ps[1],
        concentration="hoeffding",
        optimise=False,
    )
    key = finite_key(BasisCounts(nz, nx, mx), params, leak, ps)
    ref = lim_reference(nz, nx, mx, mus, ps, leak, 1e-10, 1e-15)
    assert key.length == pytest.approx(ref, rel=1e-9, abs=2)
    assert key.length > 0


def test_chernoff_interval_is_a_confidence_interval() -> None:
    lo, hi = chernoff_interval(100.0, 1e-10)
    assert lo < 100 < hi
    # the defining tail bounds hold with equality at the interval ends
    big_l = math.log(1e10)
    assert (100 - lo) ** 2 / (100 + lo) == pytest.approx(big_l, rel=1e-9)
    assert (hi - 100) ** 2 / (2 * hi) == pytest.approx(big_l, rel=1e-9)
    assert chernoff_interval(0.0, 1e-10)[0] == 0.0


def test_tighter_than_hoeffding_and_below_the_asymptotic_bound() -> None:
    p = optimised(LinkParams(distance_km=50.0))
    from keyserver.qkd.finitekey import asymptotic_rate, expected_counts

    counts, qber = expected_counts(p, p.block_pulses)
    h = -qber * math.log2(qber) - (1 - qber) * math.log2(1 - qber)
    leak = 1.1 * counts.total_z * h
    cher = finite_key(counts, p, leak).length
    hoef = finite_key(counts, LinkParams(**{**p.__dict__, "concentration": "hoeffding"}), leak)
    assert cher > hoef.length
    assert 0 < cher / p.block_pulses < asymptotic_rate(p, 1.1)


def test_gys_reference_figures() -> None:
    for d, expected in ((0.0, 2.55e-3), (50.0, 2.23e-4), (100.0, 1.72e-5)):
        assert theory_key_rate(gys_reference(d)) == pytest.approx(expected, rel=0.01)
    assert asymptotic_key_rate(gys_reference(10.0), 1.0) > 0


def test_plan_gives_key_at_100_km_within_ten_minutes() -> None:
    from keyserver.qkd.finitekey import expected_key_length

    for d in (10.0, 70.0, 100.0):
        p = optimised(LinkParams(distance_km=d))
        assert p.block_pulses / p.clock_hz <= 300
        assert expected_key_length(p, p.block_pulses, 1.1) > 0
        assert 0.7 <= p.p_z <= 0.95
