"""Playout of the received stream: the jitter buffer (core) and the Opus decoder, slot by slot.

Unprotected payloads are pushed with their RTP sequence number and timestamp; :meth:`Playout.due`
returns, for every frame slot due at ``now``, the PCM to play (decoded, FEC-recovered or
concealed) with what was done, and counts it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from qphone.audio.opus import OpusConfig, OpusDecoder, decode_playout
from qphone.audio.timestretch import stretch, stretch_silence
from qphone.core.jitterbuffer import JitterBuffer, JitterBufferConfig, PlayoutKind

RTP_CLOCK = 48000  # Opus RTP timestamps count 48 kHz samples (RFC 7587), whatever the rate


@dataclass(frozen=True)
class PlayoutSlot:
    """One frame slot played out."""

    timestamp: int  # the slot's RTP timestamp (as received: sender's + aiortc's offset)
    played: float  # monotonic time it was handed to the sink
    kind: PlayoutKind
    decode_s: float  # time spent decoding or concealing it (and time-stretching)
    pcm: bytes = field(repr=False)
    stretch: int = 0  # RTP clock ticks it was played longer (> 0) or shorter than a frame


@dataclass
class PlayoutStats:
    """Slots played by kind, decode errors (concealed instead), total decode time."""

    normal: int = 0
    fec: int = 0
    plc: int = 0
    dtx: int = 0
    decode_errors: int = 0
    decode_seconds: float = 0.0


def stretch_slot(
    pcm: bytes, kind: PlayoutKind, ticks: int, config: OpusConfig, silence_only: bool = False
) -> tuple[bytes, int]:
    """A slot's PCM stretched by ``ticks`` of the 48 kHz RTP clock where it is quiet (anywhere
    in concealment and comfort noise), and the ticks it was stretched by (0: not at all).
    ``silence_only``: only if the slot is silent as a whole (then by up to half a frame); a
    slot so stretched is stretched the same by a later call without it (a replay)."""
    samples = ticks * config.sample_rate // RTP_CLOCK
    if silence_only:
        out = stretch_silence(pcm, samples, config.channels)
    else:
        anywhere = kind in (PlayoutKind.PLC, PlayoutKind.DTX)
        out = stretch(pcm, samples, config.channels, anywhere=anywhere)
    return out, ticks if out is not pcm else 0


class Playout:
    """Jitter buffer + Opus decoder for one received stream."""

    def __init__(self, config: OpusConfig) -> None:
        self.config = config
        self.jb = JitterBuffer(JitterBufferConfig.for_frame_ms(config.frame_ms))
        self.decoder = OpusDecoder(config)
        self.stats = PlayoutStats()

    def push(self, seq: int, timestamp: int, payload: bytes, arrival: float) -> None:
        self.jb.push(seq, timestamp, payload, arrival)

    def due(self, now: float) -> list[PlayoutSlot]:
        """Decode every slot due at ``now``; return them in playout order."""
        out = []
        counts = self.stats
        jb = self.jb
        while (item := jb.pop(now)) is not None:
            t0 = time.perf_counter()
            try:
                pcm = decode_playout(self.decoder, item)
            except ValueError:
                pcm = self.decoder.conceal()
                counts.decode_errors += 1
            done = 0
            if item.stretch:  # the buffer asks for a longer or shorter slot: where it is quiet
                pcm, done = stretch_slot(
                    pcm, item.kind, item.stretch, self.config, item.silence_only
                )
                jb.stretched(item, done)
            if item.kind is PlayoutKind.NORMAL:
                counts.normal += 1
            elif item.kind is PlayoutKind.FEC:
                counts.fec += 1
            elif item.kind is PlayoutKind.PLC:
                counts.plc += 1
            else:
                counts.dtx += 1
            spent = time.perf_counter() - t0
            counts.decode_seconds += spent
            out.append(PlayoutSlot(item.timestamp, now, item.kind, spent, pcm, done))
        return out

    def next_due(self) -> float | None:
        return self.jb.next_due
