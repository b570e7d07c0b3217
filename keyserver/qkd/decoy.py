"""Vacuum + weak decoy estimation of single-photon yield and error, and the secret key length.

Bounds of Ma, Qi, Zhao, Lo, PRA 72 012326 (2005), eqs. (34) and (37), with the statistical
fluctuation treatment of their section V (each measured rate moved by ``u`` standard deviations in
the direction that makes the bound worse):

    Y1_L = mu / (mu nu - nu^2) * (Q_nu e^nu - Q_mu e^mu nu^2/mu^2 - (mu^2 - nu^2)/mu^2 * Y0)
    e1_U = (E_nu Q_nu e^nu - e0 Y0) / (Y1_L nu)
    Q1_L = Y1_L mu e^-mu

The secret length (GLLP) of ``n`` sifted signal bits left after parameter estimation is

    l = n * (Q1_L / Q_mu) * (1 - H2(e1_U)) - leak_EC - leak_verification - margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from keyserver.qkd.ldpc_codes import binary_entropy
from keyserver.qkd.physics import E0


@dataclass(frozen=True)
class IntensityCounts:
    """What the parties announce about one intensity class within a block."""

    pulses: int
    detections: int  # clicks in any basis
    sifted: int  # clicks with matching bases
    errors: int  # errors among the sifted clicks (for the signal: unknown -> 0 here)

    @property
    def gain(self) -> float:
        return self.detections / self.pulses if self.pulses else 0.0

    @property
    def qber(self) -> float:
        return self.errors / self.sifted if self.sifted else 0.0


@dataclass(frozen=True)
class DecoyEstimate:
    y0_upper: float
    y1_lower: float
    e1_upper: float
    q1_lower: float
    single_photon_fraction: float  # Q1_L / Q_mu: lower bound on the share of single-photon clicks

    @property
    def valid(self) -> bool:
        return self.y1_lower > 0.0 and 0.0 <= self.e1_upper < 0.5


def _upper(rate: float, count: float, u: float) -> float:
    return rate * (1.0 + u / math.sqrt(count)) if count > 0 else rate


def _lower(rate: float, count: float, u: float) -> float:
    return max(rate * (1.0 - u / math.sqrt(count)), 0.0) if count > 0 else 0.0


def estimate_single_photon(
    signal: IntensityCounts,
    decoy: IntensityCounts,
    vacuum: IntensityCounts,
    mu: float,
    nu: float,
    sigmas: float,
) -> DecoyEstimate:
    """Lower bound on Y1/Q1 and upper bound on e1 from the signal, decoy and vacuum statistics."""
    q_mu = _upper(signal.gain, signal.detections, sigmas)
    q_nu = _lower(decoy.gain, decoy.detections, sigmas)
    # dark-count yield: vacuum pulses give few clicks; an empty vacuum class gives no information
    y0_u = _upper(vacuum.gain, vacuum.detections, sigmas) if vacuum.detections else 0.0
    if vacuum.detections == 0 and vacuum.pulses > 0:
        y0_u = min(1.0, (sigmas**2) / vacuum.pulses)  # ~u^2 / N: upper bound for 0 observed clicks
    y0_l = _lower(vacuum.gain, vacuum.detections, sigmas)
    y1_l = (
        mu
        / (mu * nu - nu * nu)
        * (
            q_nu * math.exp(nu)
            - q_mu * math.exp(mu) * nu * nu / (mu * mu)
            - (mu * mu - nu * nu) / (mu * mu) * y0_u
        )
    )
    eq_nu = decoy.qber * decoy.gain  # E_nu Q_nu
    # the relative uncertainty of E_nu Q_nu is dominated by the number of observed decoy errors
    if decoy.errors:
        eq_nu_u = _upper(eq_nu, decoy.errors, sigmas)
    else:  # no error seen: ~u^2 errors is still compatible with the data
        eq_nu_u = (sigmas**2) / decoy.sifted * decoy.gain if decoy.sifted else 0.5
    if y1_l <= 0.0:
        return DecoyEstimate(y0_u, y1_l, 0.5, 0.0, 0.0)
    e1_u = min((eq_nu_u * math.exp(nu) - E0 * y0_l) / (y1_l * nu), 0.5)
    q1_l = y1_l * mu * math.exp(-mu)
    fraction = min(q1_l / signal.gain, 1.0) if signal.gain > 0 else 0.0
    return DecoyEstimate(
        y0_upper=y0_u,
        y1_lower=y1_l,
        e1_upper=max(e1_u, 0.0),
        q1_lower=q1_l,
        single_photon_fraction=fraction,
    )


def secret_key_length(
    key_bits: int,
    estimate: DecoyEstimate,
    leak_ec_bits: int,
    leak_verification_bits: int,
    margin_bits: int,
) -> int:
    """GLLP length of the privacy-amplified key from ``key_bits`` reconciled signal bits (>= 0)."""
    if not estimate.valid or key_bits <= 0:
        return 0
    secure = key_bits * estimate.single_photon_fraction * (1.0 - binary_entropy(estimate.e1_upper))
    length = math.floor(secure) - leak_ec_bits - leak_verification_bits - margin_bits
    return max(length, 0)
