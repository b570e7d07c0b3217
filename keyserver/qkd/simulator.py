"""Simulated decoy-state BB84 link: sampled detections, sifting, estimation, LDPC, verification, PA.

Per block of ``pulses`` pulses (all counts sampled from binomial/multinomial laws of the channel
model in :mod:`keyserver.qkd.physics`, never a loop over pulses):

1. intensity classes (signal mu / decoy nu / vacuum), intercepted or not, click kinds, sifting and
   errors are sampled as counts; Alice's sifted signal bits and Bob's (with the sampled number of
   errors at uniformly random positions) are generated as bit arrays;
2. parameter estimation: a random sample of the sifted signal bits is disclosed -> QBER estimate
   (abort above ``qber_abort``); decoy and vacuum bits are all disclosed -> Y1_L, e1_U
   (:mod:`keyserver.qkd.decoy`);
3. error correction: LDPC syndrome decoding at a rate chosen from the QBER estimate
   (:mod:`keyserver.qkd.ldpc_reconciliation`), failed frames dropped;
4. verification: 64-bit universal (Toeplitz) hash of both reconciled strings compared;
5. privacy amplification: Toeplitz hash (FFT) down to the GLLP length.

A block that is aborted yields no key bytes and a reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import hmac
import json
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from keyserver.qkd.decoy import (
    DecoyEstimate,
    IntensityCounts,
    estimate_single_photon,
    secret_key_length,
)
from keyserver.qkd.ldpc_codes import binary_entropy
from keyserver.qkd.ldpc_reconciliation import LdpcReconciler
from keyserver.qkd.physics import (
    ClickProbabilities,
    LinkParams,
    click_probabilities,
    theory_key_rate,
)
from keyserver.qkd.privacyamplification import toeplitz_hash, toeplitz_seed_length, verification_tag

__all__ = [
    "DEFAULT_BLOCK_PULSES",
    "BlockResult",
    "LinkParams",
    "LinkSimulator",
    "add_simulate_arguments",
    "simulate_command",
    "theory_key_rate",
]

U8Array = npt.NDArray[np.uint8]

DEFAULT_BLOCK_PULSES = 200_000_000  # 0.2 s of link time at 1 GHz: ~9e5 sifted signal bits at 10 km


@dataclass
class BlockResult:
    key: bytes
    aborted: bool
    reason: str | None
    pulses: int
    seconds_simulated: float
    gain: float  # signal-state detections per signal pulse
    qber: float  # exact QBER of the reconciled signal bits (sample estimate if aborted before EC)
    sifted_bits: int  # sifted signal-state bits
    secret_bits: int
    ec_efficiency: float  # leaked syndrome bits / (n H2(qber)); 0 if no EC ran
    y1_lower: float
    e1_upper: float
    theory_bits_per_pulse: float
    eve_alarm: bool
    # extra diagnostics
    qber_sample: float = 0.0
    sample_bits: int = 0
    decoy_gain: float = 0.0
    decoy_qber: float = 0.0
    vacuum_yield: float = 0.0
    q1_lower: float = 0.0
    leaked_ec_bits: int = 0
    frames: int = 0
    frames_failed: int = 0  # dropped: no convergence or wrong frame tag
    frames_miscorrected: int = 0  # of which converged to a wrong word
    decoder_iterations: float = 0.0
    bob_key: bytes | None = None  # only with LinkSimulator(..., compute_bob_key=True)

    @property
    def secret_bits_per_pulse(self) -> float:
        return self.secret_bits / self.pulses if self.pulses else 0.0


def _random_bits(rng: np.random.Generator, n: int) -> U8Array:
    return np.unpackbits(np.frombuffer(rng.bytes((n + 7) // 8), dtype=np.uint8))[:n]


def _error_positions(rng: np.random.Generator, n: int, k: int) -> npt.NDArray[np.int64]:
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    return rng.choice(n, size=k, replace=False)


class LinkSimulator:
    """One simulated link (Alice + Bob + optional Eve); each ``run_block`` is independent."""

    def __init__(
        self, params: LinkParams, seed: int | None = None, *, compute_bob_key: bool = False
    ) -> None:
        self.params = params
        self._rng = np.random.default_rng(seed)
        self._compute_bob_key = compute_bob_key
        self._reconciler = LdpcReconciler(
            params.frame_bits, decoder=params.decoder, max_iterations=params.max_iterations
        )
        self._clicks = {
            "signal": click_probabilities(params, params.mu),
            "decoy": click_probabilities(params, params.nu),
            "vacuum": click_probabilities(params, 0.0),
        }
        self._theory = theory_key_rate(params)
        self._clean_qber = click_probabilities(
            dataclasses.replace(params, eve_fraction=0.0), params.mu
        ).qber

    # -- sampling ---------------------------------------------------------------------------

    def _sample_class(self, pulses: int, clicks: ClickProbabilities) -> tuple[IntensityCounts, int]:
        """Counts for one intensity class; returns (counts, errors among the sifted clicks)."""
        rng = self._rng
        kinds = np.array(
            [clicks.photon, clicks.dark, clicks.eve_photon, clicks.eve_dark], dtype=np.float64
        )
        counts = rng.multinomial(pulses, np.append(kinds, max(0.0, 1.0 - kinds.sum())))[:4]
        sifted = rng.binomial(counts, self.params.sift_probability)
        err_rates = np.array([clicks.photon_error, 0.5, clicks.eve_photon_error, 0.5])
        errors = rng.binomial(sifted, err_rates)
        detections = int(counts.sum())
        n_sifted = int(sifted.sum())
        n_errors = int(errors.sum())
        return IntensityCounts(pulses, detections, n_sifted, n_errors), n_errors

    def run_block(self, pulses: int) -> BlockResult:
        if pulses <= 0:
            raise ValueError("pulses must be > 0")
        p = self.params
        rng = self._rng
        n_sig, n_dec, n_vac = (
            int(x) for x in rng.multinomial(pulses, [p.p_signal, p.p_decoy, p.p_vacuum])
        )
        signal, signal_errors = self._sample_class(n_sig, self._clicks["signal"])
        decoy, _ = self._sample_class(n_dec, self._clicks["decoy"])
        vacuum, _ = self._sample_class(n_vac, self._clicks["vacuum"])

        result = BlockResult(
            key=b"",
            aborted=True,
            reason=None,
            pulses=pulses,
            seconds_simulated=pulses / p.clock_hz,
            gain=signal.gain,
            qber=0.0,
            sifted_bits=signal.sifted,
            secret_bits=0,
            ec_efficiency=0.0,
            y1_lower=0.0,
            e1_upper=0.5,
            theory_bits_per_pulse=self._theory,
            eve_alarm=False,
            decoy_gain=decoy.gain,
            decoy_qber=decoy.qber,
            vacuum_yield=vacuum.gain,
        )

        # Alice's sifted signal bits and Bob's, errors at uniformly random positions
        n = signal.sifted
        alice = _random_bits(rng, n)
        bob = alice.copy()
        bob[_error_positions(rng, n, signal_errors)] ^= 1

        # parameter estimation on a random sample, disclosed and discarded
        k_pe = min(max(p.pe_min_bits, math.ceil(p.pe_fraction * n)), n // 2)
        if k_pe < 100:
            return self._abort(result, "too_few_sifted_bits")
        sample = _error_positions(rng, n, k_pe)
        sample_errors = int(np.count_nonzero(alice[sample] != bob[sample]))
        qber_est = sample_errors / k_pe
        result.qber_sample = qber_est
        result.qber = qber_est
        result.sample_bits = k_pe
        sigma = math.sqrt(max(self._clean_qber * (1 - self._clean_qber), 1e-12) / k_pe)
        result.eve_alarm = qber_est > self._clean_qber + p.fluctuation_sigmas * sigma
        keep = np.ones(n, dtype=bool)
        keep[sample] = False
        alice, bob = alice[keep], bob[keep]
        if qber_est > p.qber_abort:
            result.eve_alarm = True
            return self._abort(result, "qber_above_threshold")

        estimate = estimate_single_photon(signal, decoy, vacuum, p.mu, p.nu, p.fluctuation_sigmas)
        self._record_estimate(result, estimate)
        if not estimate.valid:
            return self._abort(result, "decoy_estimate_failed")
        # would any key survive with the planned syndrome length? (saves decoding a lost block)
        code, _ = self._reconciler.code_for(max(qber_est, 1e-3))
        planned_leak = (alice.shape[0] // code.n) * (code.m + p.frame_tag_bits)
        planned = secret_key_length(
            alice.shape[0], estimate, planned_leak, p.verification_bits, p.security_margin_bits
        )
        if planned <= 0:
            return self._abort(result, "no_secret_key")

        tag_matrix = _random_bits(rng, p.frame_bits * p.frame_tag_bits).reshape(
            p.frame_bits, p.frame_tag_bits
        )
        rec = self._reconciler.reconcile(alice, bob, max(qber_est, 1e-3), tag_matrix)
        result.frames = rec.frames
        result.frames_failed = rec.frames_failed
        result.frames_miscorrected = rec.frames_miscorrected
        result.leaked_ec_bits = rec.leaked_bits
        result.decoder_iterations = rec.mean_iterations
        kept = rec.alice.shape[0]
        if kept == 0:
            return self._abort(result, "error_correction_failed")
        result.qber = rec.corrected_errors / kept
        h = binary_entropy(result.qber)
        result.ec_efficiency = rec.leaked_bits / (kept * h) if h > 0 else math.inf
        return self.verify_and_amplify(result, rec.alice, rec.bob, rec.leaked_bits, estimate)

    def verify_and_amplify(
        self,
        result: BlockResult,
        alice: U8Array,
        bob: U8Array,
        leaked_ec_bits: int,
        estimate: DecoyEstimate,
    ) -> BlockResult:
        """Last stage of a block: compare 64-bit universal hashes of Alice's and Bob's reconciled
        strings (abort on mismatch), then Toeplitz-hash Alice's string to the GLLP length."""
        p = self.params
        rng = self._rng
        n = alice.shape[0]
        tag_seed = _random_bits(rng, toeplitz_seed_length(n, p.verification_bits))
        tag_a = verification_tag(alice, tag_seed, p.verification_bits)
        tag_b = verification_tag(bob, tag_seed, p.verification_bits)
        if not hmac.compare_digest(tag_a, tag_b):
            return self._abort(result, "verification_failed")
        length = secret_key_length(
            n, estimate, leaked_ec_bits, p.verification_bits, p.security_margin_bits
        )
        length -= length % 8
        if length <= 0:
            return self._abort(result, "no_secret_key")
        pa_seed = _random_bits(rng, toeplitz_seed_length(n, length))
        result.key = np.packbits(toeplitz_hash(alice, pa_seed, length)).tobytes()
        if self._compute_bob_key:
            result.bob_key = np.packbits(toeplitz_hash(bob, pa_seed, length)).tobytes()
        result.secret_bits = length
        result.aborted = False
        return result

    @staticmethod
    def _record_estimate(result: BlockResult, estimate: DecoyEstimate) -> None:
        result.y1_lower = estimate.y1_lower
        result.e1_upper = estimate.e1_upper
        result.q1_lower = estimate.q1_lower

    @staticmethod
    def _abort(result: BlockResult, reason: str) -> BlockResult:
        result.key = b""
        result.bob_key = None
        result.secret_bits = 0
        result.aborted = True
        result.reason = reason
        return result


# -- command line ---------------------------------------------------------------------------


def _count(text: str) -> int:
    value = float(text)
    if not math.isfinite(value) or value < 1 or value > 1e13:
        raise argparse.ArgumentTypeError("must be a count between 1 and 1e13")
    return int(value)


_PHYSICS_OPTIONS: tuple[tuple[str, str], ...] = (
    ("alpha_db_per_km", "fibre attenuation, dB/km"),
    ("detector_efficiency", "Bob's detection efficiency eta_Bob"),
    ("dark_count", "dark-count probability per pulse Y0"),
    ("misalignment", "misalignment error e_d"),
    ("mu", "signal mean photon number"),
    ("nu", "decoy mean photon number"),
    ("p_signal", "probability of a signal pulse"),
    ("p_decoy", "probability of a decoy pulse (vacuum: the rest)"),
    ("p_z", "Z-basis choice probability"),
    ("clock_hz", "pulse rate, Hz"),
    ("ec_efficiency_target", "f used by the asymptotic bound"),
    ("qber_abort", "abort threshold on the estimated QBER"),
    ("fluctuation_sigmas", "standard deviations of margin on the decoy estimates"),
)


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``qkd-keyserver simulate`` (and ``python -m keyserver.qkd.simulator``)."""
    defaults = LinkParams()
    parser.add_argument("--distance-km", type=float, default=defaults.distance_km)
    parser.add_argument(
        "--pulses", type=_count, default=DEFAULT_BLOCK_PULSES, help="pulses to send (e.g. 1e9)"
    )
    parser.add_argument(
        "--block-pulses",
        type=_count,
        default=DEFAULT_BLOCK_PULSES,
        help="pulses per post-processing block",
    )
    for name, text in _PHYSICS_OPTIONS:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=float,
            default=getattr(defaults, name),
            help=f"{text} (default {getattr(defaults, name)})",
        )
    parser.add_argument("--eve-fraction", type=float, default=0.0, help="intercept-resend fraction")
    parser.add_argument("--frame-bits", type=int, default=defaults.frame_bits, help="LDPC length")
    parser.add_argument("--decoder", choices=("layered", "ldpc"), default=defaults.decoder)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def params_from_args(args: argparse.Namespace) -> LinkParams:
    values = {name: getattr(args, name) for name, _ in _PHYSICS_OPTIONS}
    return LinkParams(
        distance_km=args.distance_km,
        eve_fraction=args.eve_fraction,
        frame_bits=args.frame_bits,
        decoder=args.decoder,
        **values,
    )


def simulate(
    params: LinkParams, pulses: int, block_pulses: int, seed: int | None
) -> dict[str, object]:
    """Run ``pulses`` pulses in blocks; aggregate figures as printed by ``simulate --json``."""
    sim = LinkSimulator(params, seed=seed)
    start = time.perf_counter()
    cpu_start = time.process_time()
    blocks: list[BlockResult] = []
    remaining = pulses
    while remaining > 0:
        size = min(block_pulses, remaining)
        blocks.append(sim.run_block(size))
        remaining -= size
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    done = [b for b in blocks if not b.aborted]
    sifted = sum(b.sifted_bits for b in blocks)
    secret = sum(b.secret_bits for b in blocks)
    weight = sum(b.sifted_bits for b in done)
    reasons = sorted({b.reason for b in blocks if b.reason})
    return {
        "distance_km": params.distance_km,
        "eve_fraction": params.eve_fraction,
        "pulses": pulses,
        "blocks": len(blocks),
        "blocks_aborted": len(blocks) - len(done),
        "aborted": not done,
        "reason": ",".join(reasons) if reasons else None,
        "gain": sum(b.gain * b.pulses for b in blocks) / pulses,
        "qber": (
            sum(b.qber * b.sifted_bits for b in done) / weight
            if weight
            else sum(b.qber for b in blocks) / len(blocks)
        ),
        "qber_sample": sum(b.qber_sample for b in blocks) / len(blocks),
        "sifted_bits": sifted,
        "secret_bits": secret,
        "secret_bits_per_pulse": secret / pulses,
        "secret_bits_per_signal_pulse": secret / (pulses * params.p_signal),
        "theory_bits_per_pulse": theory_key_rate(params),
        "ec_efficiency": (sum(b.ec_efficiency * b.sifted_bits for b in done) / weight)
        if weight
        else 0.0,
        "frames_failed": sum(b.frames_failed for b in blocks),
        "frames": sum(b.frames for b in blocks),
        "y1_lower": min(b.y1_lower for b in blocks),
        "e1_upper": max(b.e1_upper for b in blocks),
        "eve_alarm": any(b.eve_alarm for b in blocks),
        "seconds_simulated": pulses / params.clock_hz,
        "seconds": seconds,
        "secret_bits_per_second_wall": secret / seconds if seconds > 0 else 0.0,
        "cpu_seconds": cpu_seconds,
        "secret_bits_per_cpu_second": secret / cpu_seconds if cpu_seconds > 0 else 0.0,
        "seconds_per_block": seconds / len(blocks),
    }


def simulate_command(args: argparse.Namespace) -> int:
    """``qkd-keyserver simulate``: run the link once, print JSON or a table; 0 unless bad input."""
    try:
        params = params_from_args(args)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    report = simulate(params, args.pulses, args.block_pulses, args.seed)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            shown = f"{value:.6g}" if isinstance(value, float) else str(value)
            print(f"{key:30s} {shown}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keyserver.qkd.simulator",
        description="Simulate the decoy-state BB84 link once.",
    )
    add_simulate_arguments(parser)
    return simulate_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
