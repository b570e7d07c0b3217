"""Composable finite-key bound for decoy-state BB84 (Lim et al. 2014), and the protocol plan.

Protocol of C. C. W. Lim, M. Curty, N. Walenta, F. Xu, H. Zbinden, "Concise security bounds for
practical decoy-state quantum key distribution", Phys. Rev. A 89, 022307 (2014), with the Z basis
for the key and the X basis for the phase error, intensities ``mu1 = mu > mu2 = nu > mu3 = 0``
(vacuum). With ``n_{B,k}`` the detections in basis B (both parties chose B) for intensity k,
``m_{X,k}`` the errors among the X ones, and ``eps = eps_sec / 21``:

    n^+-_{B,k} = e^{mu_k} / p_k * (n_{B,k} +- delta)       (concentration, below)
    tau_n      = sum_k e^{-mu_k} mu_k^n p_k / n!
    s_{B,0}   >= tau_0 (mu2 n^-_{B,mu3} - mu3 n^+_{B,mu2}) / (mu2 - mu3)
    s_{B,1}   >= tau_1 mu1 [n^-_{B,mu2} - n^+_{B,mu3}
                            - (mu2^2 - mu3^2)/mu1^2 (n^+_{B,mu1} - s_{B,0}/tau_0)]
                 / [mu1 (mu2 - mu3) - mu2^2 + mu3^2]
    v_{X,1}   <= tau_1 (m^+_{X,mu2} - m^-_{X,mu3}) / (mu2 - mu3)
    phi_Z     <= v_{X,1}/s_{X,1} + gamma(eps_sec, v_{X,1}/s_{X,1}, s_{Z,1}, s_{X,1})
    gamma(a, b, c, d) = sqrt( (c+d)(1-b) b / (c d ln 2)
                              * log2( (c+d) / (c d (1-b) b) * 21^2 / a^2 ) )
    l = floor( s_{Z,0} + s_{Z,1} (1 - H2(phi_Z)) - lambda_EC
               - 6 log2(21/eps_sec) - log2(2/eps_cor) )

is eps_sec-secret and eps_cor-correct (the verification hash sets eps_cor). ``lambda_EC`` is every
bit disclosed about the key-basis string: the Cascade parities and the verification tag.

Concentration (``delta`` per count, each failing with probability ``eps``):

* ``hoeffding``: ``delta = sqrt(n_B / 2 * ln(1/eps))`` with ``n_B`` the total in that basis, as
  published by Lim et al.;
* ``chernoff`` (default): the multiplicative Chernoff bounds, as used for the 1-decoy analysis
  of D. Rusca, A. Boaron, F. Grunenfelder, A. Martin, H. Zbinden, Appl. Phys. Lett. 112, 171104
  (2018): for an observed count x the expectation lies in
  ``[x + L/2 - sqrt(2 x L + L^2/4),  x + L + sqrt(2 x L + L^2)]`` with ``L = ln(1/eps)`` (each
  side from ``P(X >= (1+d)E) <= exp(-d^2 E/(2+d))`` and ``P(X <= (1-d)E) <= exp(-d^2 E/2)``),
  which is much tighter than Hoeffding for the small vacuum and error counts.

The plan (:func:`optimised`) maximises the *expected* finite-key length per pulse over
``mu, nu, p_mu, p_nu, p_z`` (Nelder-Mead, :func:`nelder_mead`, plain Python), using the
closed-form expected counts of the channel model, and picks the block length for the distance.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from keyserver.qkd.physics import LinkParams, binary_entropy, click_probabilities

EPS_TERMS = 21  # number of error terms that make up eps_sec in Lim et al.'s analysis


@dataclass(frozen=True)
class BasisCounts:
    """What the parties announce for one block: detections per intensity in Z and X, X errors."""

    n_z: tuple[float, float, float]
    n_x: tuple[float, float, float]
    m_x: tuple[float, float, float]

    @property
    def total_z(self) -> float:
        return float(sum(self.n_z))


@dataclass(frozen=True)
class FiniteKey:
    s_z0: float
    s_z1: float
    s_x1: float
    v_x1: float
    phase_error: float  # phi_Z upper bound
    length: int  # secret bits (0 if none)
    overhead_bits: float  # 6 log2(21/eps_sec) + log2(2/eps_cor)

    @property
    def valid(self) -> bool:
        return self.s_z1 > 0 and self.s_x1 > 0 and self.phase_error < 0.5


def _taus(mus: tuple[float, float, float], ps: tuple[float, float, float]) -> tuple[float, float]:
    tau0 = sum(math.exp(-m) * p for m, p in zip(mus, ps, strict=True))
    tau1 = sum(math.exp(-m) * m * p for m, p in zip(mus, ps, strict=True))
    return tau0, tau1


def chernoff_interval(x: float, eps: float) -> tuple[float, float]:
    """Bounds on the expectation of a sum of independent Bernoulli given the observed ``x``."""
    big_l = math.log(1.0 / eps)
    x = max(x, 0.0)
    lower = x + big_l / 2.0 - math.sqrt(2.0 * x * big_l + big_l * big_l / 4.0)
    upper = x + big_l + math.sqrt(2.0 * x * big_l + big_l * big_l)
    return max(lower, 0.0), upper


def _bounds(
    counts: tuple[float, float, float], total: float, eps: float, method: str
) -> tuple[list[float], list[float]]:
    lows, highs = [], []
    for x in counts:
        if method == "exact":  # the asymptotic limit: no statistical fluctuation
            lows.append(x)
            highs.append(x)
        elif method == "hoeffding":
            d = math.sqrt(total / 2.0 * math.log(1.0 / eps))
            lows.append(x - d)
            highs.append(x + d)
        else:
            lo, hi = chernoff_interval(x, eps)
            lows.append(lo)
            highs.append(hi)
    return lows, highs


def gamma(a: float, b: float, c: float, d: float) -> float:
    """Lim et al.'s random-sampling correction of the phase error."""
    if b <= 0.0 or b >= 1.0 or c <= 0.0 or d <= 0.0:
        return 0.5
    inner = (c + d) / (c * d * (1.0 - b) * b) * (EPS_TERMS**2) / (a * a)
    if inner <= 1.0:
        return 0.0
    return math.sqrt((c + d) * (1.0 - b) * b / (c * d * math.log(2.0)) * math.log2(inner))


def _single_photon(
    counts: tuple[float, float, float],
    total: float,
    mus: tuple[float, float, float],
    ps: tuple[float, float, float],
    eps: float,
    method: str,
) -> tuple[float, float]:
    mu1, mu2, mu3 = mus
    tau0, tau1 = _taus(mus, ps)
    lows, highs = _bounds(counts, total, eps, method)
    nm = [math.exp(m) / p * v for m, p, v in zip(mus, ps, lows, strict=True)]
    np_ = [math.exp(m) / p * v for m, p, v in zip(mus, ps, highs, strict=True)]
    s0 = max(tau0 * (mu2 * nm[2] - mu3 * np_[1]) / (mu2 - mu3), 0.0)
    s1 = (
        tau1
        * mu1
        * (nm[1] - np_[2] - (mu2**2 - mu3**2) / mu1**2 * (np_[0] - s0 / tau0))
        / (mu1 * (mu2 - mu3) - mu2**2 + mu3**2)
    )
    return s0, s1


def finite_key(
    counts: BasisCounts,
    params: LinkParams,
    leaked_bits: float,
    probabilities: tuple[float, float, float] | None = None,
    *,
    exact: bool = False,
) -> FiniteKey:
    """Lim et al.'s secret length for one block (see the module docstring)."""
    mus = params.intensities
    ps = probabilities or params.intensity_probabilities
    eps = params.eps_sec / EPS_TERMS
    method = "exact" if exact else params.concentration
    s_z0, s_z1 = _single_photon(counts.n_z, sum(counts.n_z), mus, ps, eps, method)
    _, s_x1 = _single_photon(counts.n_x, sum(counts.n_x), mus, ps, eps, method)
    _, mu2, mu3 = mus
    _, tau1 = _taus(mus, ps)
    lows, highs = _bounds(counts.m_x, sum(counts.m_x), eps, method)
    m_plus_2 = math.exp(mu2) / ps[1] * highs[1]
    m_minus_3 = math.exp(mu3) / ps[2] * lows[2]
    v_x1 = max(tau1 * (m_plus_2 - m_minus_3) / (mu2 - mu3), 0.0)
    overhead = 6.0 * math.log2(EPS_TERMS / params.eps_sec) + math.log2(2.0 / params.eps_cor)
    if method == "exact":
        overhead = 0.0
    if s_z1 <= 0.0 or s_x1 <= 0.0:
        return FiniteKey(s_z0, s_z1, s_x1, v_x1, 0.5, 0, overhead)
    ratio = min(v_x1 / s_x1, 0.5)
    correction = 0.0 if method == "exact" else gamma(params.eps_sec, ratio, s_z1, s_x1)
    phi = min(ratio + correction, 0.5)
    raw = s_z0 + s_z1 * (1.0 - binary_entropy(phi)) - leaked_bits - overhead
    length = max(math.floor(raw), 0)
    return FiniteKey(s_z0, s_z1, s_x1, v_x1, phi, length, overhead)


# -- expectations and the plan -------------------------------------------------------------------


def expected_counts(params: LinkParams, pulses: float) -> tuple[BasisCounts, float]:
    """Expected counts of a block of ``pulses`` pulses, and the expected key-basis QBER."""
    pz = params.p_z
    nz, nx, mx = [], [], []
    errors_z = 0.0
    for mu_k, p_k in zip(params.intensities, params.intensity_probabilities, strict=True):
        c = click_probabilities(params, mu_k)
        nz.append(pulses * p_k * pz * pz * c.gain)
        nx.append(pulses * p_k * (1 - pz) ** 2 * c.gain)
        mx.append(pulses * p_k * (1 - pz) ** 2 * c.error_gain)
        errors_z += pulses * p_k * pz * pz * c.error_gain
    counts = BasisCounts(tuple(nz), tuple(nx), tuple(mx))  # type: ignore[arg-type]
    qber = errors_z / sum(nz) if sum(nz) > 0 else 0.5
    return counts, qber


def asymptotic_rate(params: LinkParams, ec_efficiency: float) -> float:
    """Secret bits per pulse of the same protocol (same intensities, the same vacuum + weak decoy
    estimators) in the asymptotic limit: Lim et al.'s bound on the expected counts with no
    statistical fluctuation and no epsilon overhead."""
    scale = 1e12
    counts, qber = expected_counts(params, scale)
    exact = dataclasses.replace(params, concentration="exact")
    leak = ec_efficiency * counts.total_z * binary_entropy(qber)
    key = finite_key(counts, exact, leak, exact=True)
    return max(key.s_z0 + key.s_z1 * (1.0 - binary_entropy(key.phase_error)) - leak, 0.0) / scale


def expected_key_length(params: LinkParams, pulses: float, ec_efficiency: float) -> float:
    counts, qber = expected_counts(params, pulses)
    leak = ec_efficiency * counts.total_z * binary_entropy(qber) + 128.0
    return float(finite_key(counts, params, leak).length)


FRAME_PHOTONS = 1_000_000
MAX_FRAME_PULSES = 1_000_000_000


def plan_frame_pulses(params: LinkParams) -> int:
    """Pulses per quantum-channel frame: about FRAME_PHOTONS photons, at most 1 s at 1 GHz."""
    if params.frame_pulses:
        return params.frame_pulses
    counts, _ = expected_counts(params, 1.0)
    per_pulse = max(sum(counts.n_z) / max(params.p_z**2, 1e-9), 1e-12)
    frame = int(min(MAX_FRAME_PULSES, max(1e6, FRAME_PHOTONS / per_pulse)))
    return frame - frame % 1000


def plan_block_pulses(params: LinkParams) -> int:
    """Pulses per block: the largest block within ``max_block_seconds`` of link time and
    ``max_block_sifted`` key-basis detections (the key rate only grows with the block)."""
    if params.block_pulses:
        return params.block_pulses
    counts, _ = expected_counts(params, 1.0)
    per_pulse = max(counts.total_z, 1e-18)
    by_size = params.max_block_sifted / per_pulse
    by_time = params.max_block_seconds * params.clock_hz
    pulses = min(by_size, by_time)
    frame = plan_frame_pulses(params)
    return max(frame, int(pulses // frame) * frame)


_FIELDS = ("mu", "nu", "p_signal", "p_decoy", "p_z")


def nelder_mead(
    func: Callable[[Sequence[float]], float],
    x0: Sequence[float],
    *,
    xatol: float,
    fatol: float,
    maxiter: int,
) -> tuple[list[float], float]:
    """The minimum of ``func`` near ``x0`` by the Nelder-Mead simplex method (J. A. Nelder,
    R. Mead, Comput. J. 7, 308 (1965)), step for step as SciPy's ``minimize(method=
    "Nelder-Mead")`` with its standard coefficients (reflection 1, expansion 2, contraction 1/2,
    shrink 1/2) and initial simplex (+5 % per coordinate), in plain Python: the plan needs no
    numpy or scipy, so a lean (emulated) module process can compute it."""
    n = len(x0)
    sim = [list(map(float, x0))]
    for k in range(n):
        y = list(map(float, x0))
        y[k] = (1 + 0.05) * y[k] if y[k] != 0 else 0.00025
        sim.append(y)
    fsim = [func(x) for x in sim]

    def order() -> None:
        idx = sorted(range(n + 1), key=lambda i: fsim[i])
        sim[:] = [sim[i] for i in idx]
        fsim[:] = [fsim[i] for i in idx]

    def towards(a: float, xbar: list[float], b: float) -> list[float]:
        return [a * xb - b * w for xb, w in zip(xbar, sim[-1], strict=True)]

    order()
    iterations = 1
    while iterations < maxiter:
        spread = max(abs(sim[j][i] - sim[0][i]) for j in range(1, n + 1) for i in range(n))
        if spread <= xatol and max(abs(fsim[0] - f) for f in fsim[1:]) <= fatol:
            break
        xbar = [0.0] * n
        for row in sim[:-1]:
            xbar = [a + b for a, b in zip(xbar, row, strict=True)]
        xbar = [a / n for a in xbar]
        xr = towards(2.0, xbar, 1.0)
        fxr = func(xr)
        shrink = False
        if fxr < fsim[0]:
            xe = towards(3.0, xbar, 2.0)
            fxe = func(xe)
            sim[-1], fsim[-1] = (xe, fxe) if fxe < fxr else (xr, fxr)
        elif fxr < fsim[-2]:
            sim[-1], fsim[-1] = xr, fxr
        else:
            if fxr < fsim[-1]:
                xc = towards(1.5, xbar, 0.5)
                fxc = func(xc)
                if fxc <= fxr:
                    sim[-1], fsim[-1] = xc, fxc
                else:
                    shrink = True
            else:
                xcc = [0.5 * xb + 0.5 * w for xb, w in zip(xbar, sim[-1], strict=True)]
                fxcc = func(xcc)
                if fxcc < fsim[-1]:
                    sim[-1], fsim[-1] = xcc, fxcc
                else:
                    shrink = True
            if shrink:
                for j in range(1, n + 1):
                    sim[j] = [s0 + 0.5 * (sj - s0) for s0, sj in zip(sim[0], sim[j], strict=True)]
                    fsim[j] = func(sim[j])
        iterations += 1
        order()
    return sim[0], min(fsim)


def _from_vector(base: LinkParams, x: Sequence[float]) -> LinkParams | None:
    mu, nu, ps, pd, pz = (float(v) for v in x)
    if not (0.02 < nu < mu < 1.2 and ps > 0.05 and pd > 0.02 and ps + pd < 0.98):
        return None
    if not 0.5 <= pz < 0.995:
        return None
    try:
        return dataclasses.replace(base, mu=mu, nu=nu, p_signal=ps, p_decoy=pd, p_z=pz)
    except ValueError:
        return None


def optimised(params: LinkParams) -> LinkParams:
    """``params`` with intensities, probabilities, p_z and block size chosen for the distance.

    Returns ``params`` unchanged if ``params.optimise`` is False (then only the block size is
    filled in). Deterministic, so both modules reach the same plan from the same inputs.
    """
    if not params.optimise:
        return dataclasses.replace(
            params, block_pulses=plan_block_pulses(params), frame_pulses=plan_frame_pulses(params)
        )
    f = params.ec_efficiency_plan
    clean = dataclasses.replace(params, eve_fraction=0.0)
    fixed_block = params.block_pulses

    def rate(x: Sequence[float]) -> float:
        cand = _from_vector(clean, x)
        if cand is None:
            return 1.0
        pulses = fixed_block or plan_block_pulses(dataclasses.replace(cand, block_pulses=0))
        return -expected_key_length(cand, pulses, f) / pulses

    grid = [
        [mu, nu, ps, pd, pz]
        for mu in (0.35, 0.45, 0.6)
        for nu in (0.1, 0.18)
        for ps in (0.5, 0.7, 0.85)
        for pd in (0.1, 0.25)
        for pz in (0.75, 0.85, 0.93)
    ]
    scored = sorted(grid, key=rate)
    starts = scored[:2]
    best_x, best = starts[0], rate(starts[0])
    for x0 in starts:
        x, fun = nelder_mead(rate, x0, xatol=1e-4, fatol=1e-12, maxiter=600)
        if fun < best:
            best_x, best = x, fun
    chosen = _from_vector(params, best_x)
    if chosen is None or best >= 0.0:
        chosen = params
    rounded = dataclasses.replace(
        chosen,
        mu=round(chosen.mu, 4),
        nu=round(chosen.nu, 4),
        p_signal=round(chosen.p_signal, 4),
        p_decoy=round(chosen.p_decoy, 4),
        p_z=round(chosen.p_z, 4),
        block_pulses=fixed_block,
    )
    return dataclasses.replace(
        rounded,
        block_pulses=plan_block_pulses(rounded),
        frame_pulses=plan_frame_pulses(rounded),
        optimise=False,
    )
