"""The security core end to end in memory: what ``qphone demo --core`` prints."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

from qphone.core.callparams import CallParams, Mode
from qphone.core.events import EpochStarted, FetchQkdKeys, ResolveQkdKeys
from qphone.core.identity import Identity
from qphone.core.keyschedule import Direction
from qphone.demo.inmemorycall import InMemoryCall, MemoryKmePair, handshake


def run_core_demo(
    seconds: float = 4.0, loss: float = 0.05, out: Callable[[str], None] = print
) -> dict[str, object]:
    """Handshake, then ``seconds`` of 20 ms frames both ways in AES and OTP mode."""
    rng = random.Random(1)
    alice, bob = Identity.generate(), Identity.generate()
    out(f"alice identity {alice.public.fingerprint()}")
    out(f"bob   identity {bob.public.fingerprint()}")
    summary: dict[str, object] = {}
    for mode in (Mode.AES, Mode.OTP):
        kme = MemoryKmePair()
        params = CallParams(mode=mode, rotate_frames=50, rotate_ms=1000, pad_block_bits=8192)
        t0 = time.perf_counter()
        ini, res = handshake(alice, bob, params, kme)
        hs_ms = (time.perf_counter() - t0) * 1e3
        out(
            f"\n== {mode.label.upper()} mode: handshake {hs_ms:.1f} ms, SAS '{ini.sas}' "
            f"(both sides: {'match' if ini.sas == res.sas else 'MISMATCH'})"
        )
        call = InMemoryCall(ini, res, kme)
        call.pump()
        frames = int(seconds / 0.02)
        sent = delivered = lost = 0
        for i in range(frames):
            now = i * 0.02
            for s in (call.initiator, call.responder):
                payload = os.urandom(rng.randint(40, 80))  # an Opus frame's worth
                frame = s.protect(payload, now)
                sent += 1
                if rng.random() < loss:
                    lost += 1
                    continue
                assert call.peer(s).unprotect(frame, now + 0.01).payload == payload
                delivered += 1
            call.pump()
        rotations = [
            e.epoch
            for who, e in call.log
            if who is call.initiator
            and isinstance(e, EpochStarted)
            and e.direction is Direction.I2R
        ]
        fetches = sum(isinstance(e, FetchQkdKeys) for _, e in call.log)
        resolves = sum(isinstance(e, ResolveQkdKeys) for _, e in call.log)
        acc_i = call.initiator.key_accounting()
        acc_r = call.responder.key_accounting()
        out(
            f"   {sent} frames sent, {delivered} decrypted, {lost} dropped by the simulated "
            f"network ({loss:.0%}), 0 rejected"
        )
        if mode is Mode.AES:
            out(
                f"   key rotated at epochs {rotations} (every 50 frames / 1 s), "
                f"{fetches} enc_keys + {resolves} dec_keys calls"
            )
        else:
            out(
                f"   pad left: {call.initiator.pad_left_bytes} B (alice), "
                f"{call.responder.pad_left_bytes} B (bob)"
            )
        out(f"   QKD bits consumed by alice: {acc_i.as_dict()}")
        out(f"   QKD bits consumed by bob:   {acc_r.as_dict()}")
        bye = call.initiator.bye("demo over")
        call.responder.receive_control(bye)
        out(
            "   bye sent; both sides erased their keys: "
            f"{call.initiator.closed and call.responder.closed}"
        )
        summary[mode.label] = {
            "sas": ini.sas,
            "handshake_ms": round(hs_ms, 2),
            "frames_sent": sent,
            "frames_decrypted": delivered,
            "epochs": rotations,
            "qkd_bits_initiator": acc_i.as_dict(),
            "qkd_bits_responder": acc_r.as_dict(),
        }
    return summary
