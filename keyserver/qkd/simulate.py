"""The whole link in one process: source, fibre, detector and both post-processing machines.

The same :class:`~keyserver.qkd.postprocessing.Alice` and :class:`~keyserver.qkd.postprocessing.Bob`
as in the module processes, talking through the same wire codec and Wegman-Carter framing (an
in-memory pad): ``qkd-keyserver simulate`` and ``bench link`` measure exactly what the modules run.
:class:`LinkRun` also records every classical-channel frame on request (tests count disclosed bits
on it and search it for key material).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from keyserver.qkd import messages as m
from keyserver.qkd.classicalchannel import (
    AuthPad,
    Chunk,
    MemoryAuthStore,
    Opener,
    Sealer,
    split_initial_key,
)
from keyserver.qkd.finitekey import asymptotic_rate, optimised
from keyserver.qkd.physics import LinkParams, asymptotic_key_rate, theory_key_rate
from keyserver.qkd.postprocessing import (
    Alice,
    BlockAborted,
    BlockCommitted,
    BlockStats,
    Bob,
    Output,
    Send,
    StoreBlock,
)
from keyserver.qkd.quantumchannel import Detector, Fibre
from keyserver.qkd.randomness import RandomSource, nature
from keyserver.qkd.role import Role
from keyserver.qkd.simulateoptions import PHYSICS_OPTIONS, add_simulate_arguments

INITIAL_KEY_BYTES = 1 << 20


@dataclass
class SideKeys:
    keys: dict[uuid.UUID, bytes] = field(default_factory=dict)


@dataclass
class LinkRun:
    """A simulated link; :meth:`run_block` runs one block through both machines."""

    params: LinkParams
    seed: int | None = None
    key_size: int = 1024
    link: str = "sim"
    record: bool = False

    def __post_init__(self) -> None:
        self.plan = optimised(self.params)
        p = self.plan
        self.fibre = Fibre(p, nature(self.seed, b"fibre"))
        self.detector = Detector(p, nature(self.seed, b"detector"))
        self.alice = Alice(p, self.link, self.key_size, RandomSource(self.seed, b"alice"))
        self.bob = Bob(p, self.link, self.key_size, RandomSource(self.seed, b"bob"))
        initial = RandomSource(self.seed, b"initial-auth-key").bytes(INITIAL_KEY_BYTES)
        halves = split_initial_key(initial)
        self.pad_a = AuthPad(
            Role.TRANSMITTER,
            [Chunk(-1, (bytearray(halves[0]), bytearray(halves[1])), True)],
            0,
            MemoryAuthStore(),
        )
        self.pad_b = AuthPad(
            Role.RECEIVER,
            [Chunk(-1, (bytearray(halves[0]), bytearray(halves[1])), True)],
            0,
            MemoryAuthStore(),
        )
        self.seal_a, self.open_b = Sealer(self.pad_a), Opener(self.pad_b)
        self.seal_b, self.open_a = Sealer(self.pad_b), Opener(self.pad_a)
        self.frames_recorded: list[tuple[str, bytes]] = []
        self.alice_keys = SideKeys()
        self.bob_keys = SideKeys()
        self.blocks: list[BlockStats] = []
        self.next_block = 0
        self.cpu = {"quantum": 0.0, "alice": 0.0, "bob": 0.0}
        self.messages = 0
        self.last_keys: dict[str, list[bytes]] = {"alice": [], "bob": []}

    @property
    def block_pulses(self) -> int:
        return self.plan.block_pulses

    def set_eve(self, fraction: float) -> None:
        self.fibre.eve_fraction = fraction

    # -- one block ----------------------------------------------------------------------------
    def run_block(self, pulses: int | None = None) -> BlockStats:
        """One block of ``pulses`` pulses (default: the plan's block size)."""
        block = self.next_block
        self.next_block += 1
        p = self.plan
        a_to_b: deque[bytes] = deque()
        b_to_a: deque[bytes] = deque()
        done: list[BlockStats] = []
        pulses_total = pulses or p.block_pulses
        frame = 0
        offset = 0
        src = self.alice.source_for(block)
        bob_src = self.bob.basis_source(block)
        while offset < pulses_total:
            size = min(p.frame_pulses, pulses_total - offset)
            t0 = time.process_time()
            record, photons = self.fibre.transmit(size, src)
            det = self.detector.detect(photons, size, bob_src)
            self.cpu["quantum"] += time.process_time() - t0
            self.alice.on_frame(block, frame, offset, size, record)
            last = offset + size >= pulses_total
            t0 = time.process_time()
            outs = self.bob.on_frame(block, frame, offset, size, det, last)
            self.cpu["bob"] += time.process_time() - t0
            self._route(outs, "bob", a_to_b, b_to_a, done)
            self._pump(a_to_b, b_to_a, done)
            frame += 1
            offset += size
        self._pump(a_to_b, b_to_a, done)
        stats = done[0] if done else BlockStats(block, aborted=True)
        self.blocks.append(stats)
        return stats

    def _pump(self, a_to_b: deque[bytes], b_to_a: deque[bytes], done: list[BlockStats]) -> None:
        while a_to_b or b_to_a:
            while b_to_a:
                frame = b_to_a.popleft()
                t0 = time.process_time()
                opened = self.open_a.open(frame)
                msg = m.decode(opened.payload)
                self.open_a.accept(opened)
                outs = self.alice.receive(msg)
                self.cpu["alice"] += time.process_time() - t0
                self._route(outs, "alice", a_to_b, b_to_a, done)
            while a_to_b:
                frame = a_to_b.popleft()
                t0 = time.process_time()
                opened = self.open_b.open(frame)
                msg = m.decode(opened.payload)
                self.open_b.accept(opened)
                outs = self.bob.receive(msg)
                self.cpu["bob"] += time.process_time() - t0
                self._route(outs, "bob", a_to_b, b_to_a, done)

    def _route(
        self,
        outs: list[Output],
        side: str,
        a_to_b: deque[bytes],
        b_to_a: deque[bytes],
        done: list[BlockStats],
    ) -> None:
        pending = list(outs)
        while pending:
            o = pending.pop(0)
            if isinstance(o, Send):
                t0 = time.process_time()
                sealer = self.seal_a if side == "alice" else self.seal_b
                frame = sealer.seal_parts(m.encode_parts(o.message))
                self.cpu[side] += time.process_time() - t0
                self.messages += 1
                if self.record:
                    self.frames_recorded.append((side, frame))
                (a_to_b if side == "alice" else b_to_a).append(frame)
            elif isinstance(o, StoreBlock):
                pad = self.pad_a if side == "alice" else self.pad_b
                pad.add_chunk(o.block, o.refill_to_receiver, o.refill_to_transmitter)
                self.last_keys[side] = [k for _, k in o.keys]
                target = self.alice_keys if side == "alice" else self.bob_keys
                target.keys.update(o.keys)
                machine = self.alice if side == "alice" else self.bob
                pending.extend(machine.stored(o.block))
            elif isinstance(o, BlockCommitted):
                if side == "bob":
                    self.pad_b.commit_chunk(o.block)
                elif o.stats is not None:
                    done.append(o.stats)
                    self._account_auth()
            elif isinstance(o, BlockAborted) and side == "alice":
                done.append(o.stats)

    def _account_auth(self) -> None:
        used = self.pad_a.consumed_bytes
        per_block = used // max(1, len(self.blocks) + 1)
        self.alice.auth_used_per_block = per_block
        self.alice.auth_available = (
            self.pad_a.available_bytes(0),
            self.pad_a.available_bytes(1) - self.open_a.next_position,
        )


# -- the report of `qkd-keyserver simulate` --------------------------------------------------


def run(params: LinkParams, blocks: int, seed: int | None) -> dict[str, object]:
    sim = LinkRun(params, seed=seed)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(blocks):
        sim.run_block()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return report(sim, wall, cpu)


def report(sim: LinkRun, wall: float, cpu: float) -> dict[str, object]:
    p = sim.plan
    ok = [b for b in sim.blocks if not b.aborted]
    pulses = sum(b.pulses for b in sim.blocks) or 1
    secret = sum(b.secret_bits for b in ok)
    delivered = sum(b.key_bits_delivered for b in ok)
    sifted = sum(b.sifted_bits for b in sim.blocks)
    leak = sum(b.cascade_leak for b in sim.blocks)
    h_total = sum(b.sifted_bits * _h2(b.qber) for b in sim.blocks if b.cascade_leak)
    f = leak / h_total if h_total > 0 else 0.0
    f_plan = f if f > 0 else p.ec_efficiency_plan
    asym = asymptotic_rate(p, f_plan)
    seconds = pulses / p.clock_hz
    reasons = sorted({b.reason.label for b in sim.blocks if b.reason is not None})
    return {
        "distance_km": p.distance_km,
        "eve_fraction": sim.fibre.eve_fraction,
        "blocks": len(sim.blocks),
        "blocks_aborted": len(sim.blocks) - len(ok),
        "aborted": not ok,
        "reason": ",".join(reasons) if reasons else None,
        "pulses": pulses,
        "block_pulses": p.block_pulses,
        "seconds_simulated": seconds,
        "protocol": {k: getattr(p, k) for k in ("mu", "nu", "p_signal", "p_decoy", "p_z")},
        "eps_sec": p.eps_sec,
        "eps_cor": p.eps_cor,
        "concentration": p.concentration,
        "sifted_bits": sifted,
        "gain": sum(b.detections for b in sim.blocks) / pulses,
        "theory_bits_per_pulse": theory_key_rate(p),
        "qber": (sum(b.qber * b.sifted_bits for b in ok) / sum(b.sifted_bits for b in ok))
        if ok
        else (sim.blocks[-1].qber if sim.blocks else 0.0),
        "qber_x": sum(b.qber_x for b in sim.blocks) / max(len(sim.blocks), 1),
        "ec_efficiency": f,
        "cascade_leak_bits": leak,
        "cascade_rounds": sum(b.cascade_rounds for b in sim.blocks),
        "phase_error_bound": max((b.phase_error for b in ok), default=0.5),
        "secret_bits": secret,
        "key_bits_delivered": delivered,
        "auth_refill_bits": sum(b.auth_refill_bits for b in ok),
        "secret_bits_per_pulse": secret / pulses,
        "finite_key_bits_per_pulse": secret / pulses,
        "asymptotic_bits_per_pulse": asym,
        "asymptotic_infinite_decoy_bits_per_pulse": asymptotic_key_rate(p, f_plan),
        "ratio_to_asymptotic": (secret / pulses) / asym if asym > 0 else 0.0,
        "secret_bits_per_second": secret / seconds,
        "classical_messages": sim.messages,
        "auth_bits_consumed": 8 * (sim.pad_a.consumed_bytes),
        "seconds": wall,
        "cpu_seconds": cpu,
        "cpu_by_side": {k: round(v, 4) for k, v in sim.cpu.items()},
        "secret_bits_per_cpu_second": secret / cpu if cpu > 0 else 0.0,
        "postprocessing_cpu_seconds": sim.cpu["alice"] + sim.cpu["bob"],
        "postprocessing_bits_per_cpu_second": secret / (sim.cpu["alice"] + sim.cpu["bob"])
        if sim.cpu["alice"] + sim.cpu["bob"] > 0
        else 0.0,
        "core_per_link_realtime": cpu / seconds if seconds > 0 else 0.0,
    }


def _h2(q: float) -> float:
    if q <= 0 or q >= 1:
        return 0.0
    return -q * math.log2(q) - (1 - q) * math.log2(1 - q)


# -- command line ------------------------------------------------------------------------------


def params_from_args(args: argparse.Namespace) -> LinkParams:
    values = {name: getattr(args, name) for name, _ in PHYSICS_OPTIONS}
    bp = args.block_pulses
    if bp and (not math.isfinite(bp) or bp < 10_000 or bp > 1e13):
        raise ValueError("--block-pulses must be between 1e4 and 1e13")
    return LinkParams(
        distance_km=args.distance_km,
        eve_fraction=args.eve_fraction,
        concentration=args.concentration,
        block_pulses=int(bp),
        **values,
    )


def simulate_command(args: argparse.Namespace) -> int:
    try:
        params = params_from_args(args)
        if not 1 <= args.blocks <= 10_000:
            raise ValueError("--blocks must be between 1 and 10000")
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    if args.seed is not None:
        print("simulate: seeded source (--seed): reproducible, not secret", file=sys.stderr)
    blocks = args.blocks
    if args.pulses:
        if not math.isfinite(args.pulses) or not 1e4 <= args.pulses <= 1e14:
            print("simulate: --pulses must be between 1e4 and 1e14", file=sys.stderr)
            return 2
        per_block = params.block_pulses or optimised(params).block_pulses
        blocks = max(1, math.ceil(args.pulses / per_block))
    out = run(params, blocks, args.seed)
    if args.json:
        print(json.dumps(out))
    else:
        from keyserver.qkd.simulatetable import simulation_table

        print("\n".join(simulation_table(out)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keyserver.qkd.simulate")
    add_simulate_arguments(parser)
    return simulate_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
