"""Compatibility layer for the KMS layer's one-process link (``keyserver.kms.link``).

Deprecated: the QKD layer now runs as two module processes (:mod:`keyserver.qkd.module`); the
whole link in one process is :class:`keyserver.qkd.simulate.LinkRun`. This adapter keeps the old
``LinkSimulator(params, seed).run_block(pulses)`` API alive until the KMS layer consumes the
modules' ETSI 014 API instead; it returns the transmitter's final key of one block.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from keyserver.qkd.physics import LinkParams, theory_key_rate
from keyserver.qkd.simulate import LinkRun

__all__ = ["BlockResult", "LinkParams", "LinkSimulator", "theory_key_rate"]

MIN_BLOCK_PULSES = 300_000_000  # shorter blocks give no finite-key key at 10 km


@dataclass
class BlockResult:
    key: bytes
    aborted: bool
    reason: str | None
    pulses: int
    seconds_simulated: float
    qber: float
    secret_bits: int
    eve_alarm: bool
    bob_key: bytes | None = None


class LinkSimulator:
    def __init__(self, params: LinkParams, seed: int | None = None) -> None:
        self._params = params
        self._seed = seed
        self._run: LinkRun | None = None

    def run_block(self, pulses: int) -> BlockResult:
        size = max(pulses, MIN_BLOCK_PULSES)
        if self._run is None or self._run.plan.block_pulses != size:
            planned = dataclasses.replace(self._params, block_pulses=size)
            self._run = LinkRun(planned, seed=self._seed, key_size=8)
        stats = self._run.run_block(size)
        alice = b"".join(self._run.last_keys["alice"]) if not stats.aborted else b""
        bob = b"".join(self._run.last_keys["bob"]) if not stats.aborted else None
        reason = stats.reason.label if stats.reason is not None else None
        eve = bool(stats.reason is not None and stats.reason.eavesdropper)
        return BlockResult(
            alice, stats.aborted, reason, size, size / self._run.plan.clock_hz, stats.qber,
            stats.secret_bits, eve, bob,
        )


if __name__ == "__main__":  # the old command line: python -m keyserver.qkd.simulator ...
    from keyserver.qkd.simulate import main

    raise SystemExit(main())
