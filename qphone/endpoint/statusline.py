"""The live status line: phase, SAS, pad held ahead (OTP), loss, QKD used, RTT, epochs, jitter
buffer, input level, in that order of importance.

``in call | SAS airport scorpion inmate connect | pad 2.3 s | loss 0.0% | QKD 1.8 kbit | RTT
1.3 ms | epoch tx 3/rx 3 | jb 45 ms | in -22 dBFS``

The fields are ``" | "``-separated and ordered by importance, so a narrow terminal keeps the
first ones whole: :func:`~qphone.endpoint.statuslinefit.fit_status` drops fields from the
right until the line fits (the status board calls it with the terminal's width).
"""

from __future__ import annotations

from qphone.core.callparams import Mode
from qphone.core.jitterbuffer import JitterBufferStats
from qphone.core.session import CallSession
from qphone.endpoint.sendpath import talk_seconds_left
from qphone.endpoint.state import CallCounters, CallPhase
from qphone.endpoint.statuslinefit import SEPARATOR


def status_line(
    phase: CallPhase,
    sas: str,
    session: CallSession | None,
    counters: CallCounters,
    jb: JitterBufferStats,
    rtt_s: float | None,
    frame_ms: int,
    seconds_in_call: float,
) -> str:
    parts = [phase.value, f"SAS {sas}"]
    if session is not None and session.mode is Mode.OTP:
        left = talk_seconds_left(session, counters, frame_ms)
        parts.append(f"pad {left:.1f} s" if seconds_in_call > 0.5 else "pad ?")
    expected = jb.received + jb.lost
    loss = jb.lost / expected if expected else 0.0
    parts.append(f"loss {loss:.1%}")
    if session is not None:
        parts.append(f"QKD {session.key_accounting().consumed / 1000:.1f} kbit")
    parts.append(f"RTT {rtt_s * 1000:.1f} ms" if rtt_s is not None else "RTT -")
    if session is not None:
        parts.append(f"epoch tx {session.send_epoch}/rx {session.recv_epoch}")
    parts.append(f"jb {jb.playout_delay_ms:.0f} ms")
    parts.append(f"in {counters.input_level:.0f} dBFS")
    return SEPARATOR.join(parts)
