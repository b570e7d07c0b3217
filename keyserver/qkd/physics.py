"""Link parameters and the photon-level channel model of weak-coherent-pulse decoy-state BB84.

Everything here is a closed-form probability; the simulator (``keyserver.qkd.simulator``) samples
counts from these probabilities and the asymptotic key rate (``theory_key_rate``) is computed from
the same model, so the simulation and the bound cannot drift apart.

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

from keyserver.qkd.ldpc_codes import binary_entropy

E0 = 0.5  # error rate of a dark count (random bit)


@dataclass(frozen=True)
class LinkParams:
    """Physical and protocol parameters of one simulated QKD link (GYS defaults)."""

    distance_km: float = 10.0
    alpha_db_per_km: float = 0.21
    detector_efficiency: float = 0.045
    dark_count: float = 1.7e-6
    misalignment: float = 0.033
    mu: float = 0.48
    nu: float = 0.1
    p_signal: float = 0.7
    p_decoy: float = 0.25  # vacuum: 1 - p_signal - p_decoy
    p_z: float = 0.5  # probability that Alice (and Bob) choose the Z basis
    clock_hz: float = 1e9
    ec_efficiency_target: float = 1.22  # f used by the asymptotic bound (theory_key_rate)
    qber_abort: float = 0.11
    eve_fraction: float = 0.0
    # post-processing
    pe_fraction: float = 0.02  # fraction of sifted signal bits disclosed for the QBER estimate
    pe_min_bits: int = 4096
    frame_bits: int = 8192  # LDPC code length
    decoder: str = "layered"  # "layered" (numba) or "ldpc" (ldpc package BP)
    max_iterations: int = 30
    fluctuation_sigmas: float = 5.0  # statistical margin on the decoy estimates
    frame_tag_bits: int = 16  # per-frame hash that finds mis-corrected LDPC frames
    verification_bits: int = 64
    security_margin_bits: int = 128

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be finite")
        if self.distance_km < 0:
            raise ValueError("distance_km must be >= 0")
        if self.alpha_db_per_km < 0:
            raise ValueError("alpha_db_per_km must be >= 0")
        for name in ("detector_efficiency", "p_z"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]")
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
        if self.ec_efficiency_target < 1.0:
            raise ValueError("ec_efficiency_target must be >= 1")
        if not 0.0 < self.qber_abort < 0.5:
            raise ValueError("qber_abort must be in (0, 0.5)")
        if not 0.0 < self.pe_fraction < 0.5 or self.pe_min_bits < 100:
            raise ValueError("pe_fraction must be in (0, 0.5) and pe_min_bits >= 100")
        if self.frame_bits < 512:
            raise ValueError("frame_bits must be >= 512")
        if self.decoder not in ("layered", "ldpc"):
            raise ValueError("decoder must be 'layered' or 'ldpc'")
        if self.max_iterations < 1 or self.fluctuation_sigmas < 0:
            raise ValueError("max_iterations >= 1 and fluctuation_sigmas >= 0 required")
        if self.verification_bits < 32 or self.security_margin_bits < 0:
            raise ValueError("verification_bits >= 32 and security_margin_bits >= 0 required")
        if not 8 <= self.frame_tag_bits <= 64:
            raise ValueError("frame_tag_bits must be in [8, 64]")

    @property
    def p_vacuum(self) -> float:
        return 1.0 - self.p_signal - self.p_decoy

    @property
    def sift_probability(self) -> float:
        """q: probability that Alice's and Bob's bases agree."""
        return self.p_z**2 + (1.0 - self.p_z) ** 2


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
    """Asymptotic (infinite-decoy) GLLP key rate per signal pulse, REFERENCE.md section 5.

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
