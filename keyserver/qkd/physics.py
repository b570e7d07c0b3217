"""Link parameters and the photon-level channel model of weak-coherent-pulse decoy-state BB84.

Everything here is a closed-form probability; the quantum channel
(``keyserver.qkd.quantumchannel``) samples counts from these probabilities and the asymptotic key
rate (``theory_key_rate``) is computed from the same model, so the simulation and the bound
cannot drift apart.

Model (GYS: Gobby-Yuan-Shields 2004 as used by Lo-Ma-Chen 2005 and Ma et al. 2005):

* transmittance ``eta = eta_Bob * 10^(-alpha L / 10)``; a pulse of mean photon number ``m`` gives
  a photon click with probability ``1 - exp(-eta m)`` (error ``e_d``, misalignment) and otherwise
  a dark click with probability ``Y0`` (random bit, error 1/2). Hence
  ``Q_m = 1 - exp(-eta m) + Y0 exp(-eta m)`` and
  ``E_m Q_m = e_d (1 - exp(-eta m)) + Y0 exp(-eta m) / 2``.
* intercept-resend on a fraction ``p`` of pulses: Eve sits at Alice's output with an ideal detector,
  measures every non-empty pulse in a random basis and resends one photon in the state she found
  through a channel of her own whose transmittance keeps the signal gain unchanged
  (``T_E = min(1, T_fibre * mu / (1 - exp(-mu)))``) so that a gain monitor does not see her.
  An intercepted pulse clicks with ``(1 - exp(-m)) eta_E`` (``eta_E = eta_Bob T_E``), its photon
  clicks are wrong with probability ``1/4 + e_d/2`` (Eve's basis is wrong half of the time), and
  empty pulses give only dark clicks. The QBER rises by ``p (1/4 - e_d/2)``, i.e. about ``p/4``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

E0 = 0.5  # error rate of a dark count (random bit)


def binary_entropy(p: float) -> float:
    """H2(p) in bits; 0 at p in {0, 1}."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -p * math.log2(p) - (1.0 - p) * math.log2(1.0 - p)


CONCENTRATIONS = ("chernoff", "hoeffding")


@dataclass(frozen=True)
class LinkParams:
    """Physical and protocol parameters of one simulated QKD link (GYS channel defaults).

    Protocol: efficient decoy-state BB84 with three intensities ``mu > nu > 0`` (vacuum), the Z
    basis for the key and the X basis for estimating the phase error (Lim et al. 2014). With
    ``optimise = True`` (default) the intensities, their probabilities, ``p_z`` and the block
    size are replaced by the values that maximise the finite-key rate at ``distance_km``
    (:func:`keyserver.qkd.finitekey.optimised`).
    """

    distance_km: float = 10.0
    alpha_db_per_km: float = 0.21
    detector_efficiency: float = 0.045
    dark_count: float = 1.7e-6
    misalignment: float = 0.033
    mu: float = 0.5
    nu: float = 0.12
    p_signal: float = 0.8
    p_decoy: float = 0.15  # vacuum: 1 - p_signal - p_decoy
    p_z: float = 0.9  # probability that Alice (and Bob) choose the Z (key) basis
    clock_hz: float = 1e9
    ec_efficiency_target: float = 1.22  # f of the GLLP reference bound (theory_key_rate) only
    qber_abort: float = 0.11  # abort when the X-basis (signal) error rate exceeds this
    eve_fraction: float = 0.0
    # finite-key security and block plan
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    concentration: str = "chernoff"  # or "hoeffding" (Lim et al. 2014 as published)
    block_pulses: int = 0  # pulses per post-processing block; 0 = chosen for the distance
    frame_pulses: int = 0  # pulses per quantum-channel frame; 0 = ~1e6 photons, at most 1e9
    max_block_seconds: float = 300.0  # longest block (link time) the automatic plan allows
    max_block_sifted: int = 50_000_000  # largest key-basis block the automatic plan allows
    optimise: bool = True
    ec_efficiency_plan: float = 1.1  # f assumed when planning (the measured f is what counts)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be finite")
        if self.distance_km < 0:
            raise ValueError("distance_km must be >= 0")
        if self.alpha_db_per_km < 0:
            raise ValueError("alpha_db_per_km must be >= 0")
        for name in ("detector_efficiency",):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]")
        if not 0.0 < self.p_z < 1.0:
            raise ValueError("p_z must be in (0, 1): the X basis estimates the phase error")
        for name in ("dark_count", "misalignment", "eve_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.misalignment >= 0.5:
            raise ValueError("misalignment must be < 0.5")
        if not 0.0 < self.nu < self.mu:
            raise ValueError("need 0 < nu < mu")
        if not (0.0 < self.p_signal < 1.0 and 0.0 < self.p_decoy < 1.0):
            raise ValueError("p_signal and p_decoy must be in (0, 1)")
        if self.p_signal + self.p_decoy >= 1.0:
            raise ValueError("p_signal + p_decoy must leave room for vacuum pulses")
        if self.clock_hz <= 0:
            raise ValueError("clock_hz must be > 0")
        if self.ec_efficiency_target < 1.0 or self.ec_efficiency_plan < 1.0:
            raise ValueError("ec_efficiency_target and ec_efficiency_plan must be >= 1")
        if not 0.0 < self.qber_abort < 0.5:
            raise ValueError("qber_abort must be in (0, 0.5)")
        if not (0.0 < self.eps_sec < 1.0 and 0.0 < self.eps_cor < 1.0):
            raise ValueError("eps_sec and eps_cor must be in (0, 1)")
        if self.concentration not in (*CONCENTRATIONS, "exact"):
            raise ValueError(f"concentration must be one of {', '.join(CONCENTRATIONS)}")
        if self.block_pulses < 0 or (0 < self.block_pulses < 10_000):
            raise ValueError("block_pulses must be 0 (automatic) or >= 10000")
        if self.frame_pulses != 0 and not 10_000 <= self.frame_pulses <= 2**32 - 1:
            raise ValueError("frame_pulses must be 0 (automatic) or in [10000, 2^32 - 1]")
        if self.max_block_seconds <= 0 or self.max_block_sifted < 10_000:
            raise ValueError("max_block_seconds > 0 and max_block_sifted >= 10000 required")

    @property
    def intensities(self) -> tuple[float, float, float]:
        return (self.mu, self.nu, 0.0)

    @property
    def intensity_probabilities(self) -> tuple[float, float, float]:
        return (self.p_signal, self.p_decoy, self.p_vacuum)

    @property
    def p_vacuum(self) -> float:
        return 1.0 - self.p_signal - self.p_decoy

    @property
    def sift_probability(self) -> float:
        """q: probability that Alice's and Bob's bases agree."""
        return self.p_z**2 + (1.0 - self.p_z) ** 2


def quantised_probabilities(params: LinkParams) -> tuple[tuple[float, float, float], float]:
    """((p_mu, p_nu, p_vacuum), p_z) exactly as the source realises them: its intensity is drawn
    on a 2^-16 grid and its basis on a 2^-15 grid (``keyserver.qkd.quantumchannel``); the
    finite-key bound uses these values."""
    p16, p15 = 1 << 16, 1 << 15
    t0 = round(params.p_signal * p16)
    t1 = round((params.p_signal + params.p_decoy) * p16)
    tz = round(params.p_z * p15)
    return ((t0 / p16, (t1 - t0) / p16, (p16 - t1) / p16), tz / p15)


@dataclass(frozen=True)
class ClickProbabilities:
    """Per-pulse probabilities of each kind of click for one intensity, with their error rates."""

    photon: float  # photon click, pulse not intercepted
    dark: float  # dark click only, pulse not intercepted
    eve_photon: float  # photon click (Eve's resent photon), pulse intercepted
    eve_dark: float  # dark click only, pulse intercepted
    photon_error: float  # e_d
    eve_photon_error: float  # 1/4 + e_d/2

    @property
    def gain(self) -> float:
        return self.photon + self.dark + self.eve_photon + self.eve_dark

    @property
    def error_gain(self) -> float:
        """E*Q: probability per pulse of an erroneous click (given matching bases)."""
        return (
            self.photon * self.photon_error
            + self.eve_photon * self.eve_photon_error
            + E0 * (self.dark + self.eve_dark)
        )

    @property
    def qber(self) -> float:
        return self.error_gain / self.gain


def fibre_transmittance(params: LinkParams) -> float:
    return float(10.0 ** (-params.alpha_db_per_km * params.distance_km / 10.0))


def transmittance(params: LinkParams) -> float:
    """eta = eta_Bob * 10^(-alpha L / 10)."""
    return params.detector_efficiency * fibre_transmittance(params)


def eve_transmittance(params: LinkParams) -> float:
    """Bob's click probability for one photon resent by Eve (gain-preserving channel)."""
    t_eve = min(1.0, fibre_transmittance(params) * params.mu / -math.expm1(-params.mu))
    return params.detector_efficiency * t_eve


def click_probabilities(params: LinkParams, intensity: float) -> ClickProbabilities:
    """Click probabilities per pulse of mean photon number ``intensity`` (0 for vacuum)."""
    eta = transmittance(params)
    y0 = params.dark_count
    p_eve = params.eve_fraction
    photon_clean = -math.expm1(-eta * intensity)
    photon_eve = -math.expm1(-intensity) * eve_transmittance(params)
    return ClickProbabilities(
        photon=(1.0 - p_eve) * photon_clean,
        dark=(1.0 - p_eve) * y0 * (1.0 - photon_clean),
        eve_photon=p_eve * photon_eve,
        eve_dark=p_eve * y0 * (1.0 - photon_eve),
        photon_error=params.misalignment,
        eve_photon_error=0.25 + params.misalignment / 2.0,
    )


@dataclass(frozen=True)
class SinglePhotonParams:
    """Yield and error rate of single-photon pulses (what an infinite-decoy protocol measures)."""

    y1: float
    e1: float


def single_photon(params: LinkParams) -> SinglePhotonParams:
    eta = transmittance(params)
    eta_e = eve_transmittance(params)
    y0 = params.dark_count
    p = params.eve_fraction
    y1_clean = eta + y0 * (1.0 - eta)
    y1_eve = eta_e + y0 * (1.0 - eta_e)
    err_clean = params.misalignment * eta + E0 * y0 * (1.0 - eta)
    err_eve = (0.25 + params.misalignment / 2.0) * eta_e + E0 * y0 * (1.0 - eta_e)
    y1 = (1.0 - p) * y1_clean + p * y1_eve
    return SinglePhotonParams(y1=y1, e1=((1.0 - p) * err_clean + p * err_eve) / y1)


def theory_key_rate(params: LinkParams) -> float:
    """Asymptotic (infinite-decoy) GLLP key rate per signal pulse.

    Gottesman, Lo, Lutkenhaus, Preskill, QIC 4, 325 (2004), with the decoy-state estimates of
    Lo, Ma, Chen, PRL 94, 230504 (2005):

    ``R = q (-Q_mu f H2(E_mu) + Q1 (1 - H2(e1)))`` with ``Q1 = Y1 mu exp(-mu)``, clipped at 0.
    """
    clicks = click_probabilities(params, params.mu)
    sp = single_photon(params)
    q1 = sp.y1 * params.mu * math.exp(-params.mu)
    rate = params.sift_probability * (
        -clicks.gain * params.ec_efficiency_target * binary_entropy(clicks.qber)
        + q1 * (1.0 - binary_entropy(sp.e1))
    )
    return max(rate, 0.0)


def asymptotic_key_rate(params: LinkParams, ec_efficiency: float) -> float:
    """Secret bits per pulse of *this* protocol in the asymptotic limit (infinite decoys, N -> oo).

    Key from all Z-basis detections (as Lim et al. 2014), single-photon and vacuum contributions
    known exactly, phase error = the single-photon error rate e1 (the X and Z bases are symmetric
    in this channel model), error correction at ``ec_efficiency``:
    ``R = p_z^2 sum_k p_k [ e^-mu_k Y0 + mu_k e^-mu_k Y1 (1 - H2(e1)) - f Q_k H2(E_k) ]``.
    """
    sp = single_photon(params)
    total = 0.0
    for mu_k, p_k in zip(params.intensities, params.intensity_probabilities, strict=True):
        clicks = click_probabilities(params, mu_k)
        secure = math.exp(-mu_k) * params.dark_count + mu_k * math.exp(-mu_k) * sp.y1 * (
            1.0 - binary_entropy(sp.e1)
        )
        total += p_k * (secure - ec_efficiency * clicks.gain * binary_entropy(clicks.qber))
    return max(params.p_z**2 * total, 0.0)


def gys_reference(distance_km: float = 10.0, eve_fraction: float = 0.0) -> LinkParams:
    """The parameter set of Gobby, Yuan, Shields, APL 84, 3762 (2004) (GYS), with mu 0.48,
    q = 1/2 and f 1.22 as in the decoy-state figures of Lo, Ma, Chen, PRL 94, 230504 (2005)."""
    return LinkParams(
        distance_km=distance_km,
        mu=0.48,
        nu=0.1,
        p_signal=0.7,
        p_decoy=0.25,
        p_z=0.5,
        eve_fraction=eve_fraction,
        optimise=False,
    )
