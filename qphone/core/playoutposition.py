"""Where a received frame plays: from its authenticated frame number, never from RTP alone.

Every protected frame carries an authenticated frame number ``n`` (AES: the CTR, which runs on
across epochs; OTP: the frame number in the KID). The sender spends one per 20 ms slot (so ``n``
is the slot) and sends each frame it protected as one RTP packet (or data-channel message);
frames it protected but could not hand to the network, and OTP slots without pad, get no packet.
Between two frames ``a`` and ``b`` of one stream the unauthenticated RTP fields therefore obey::

    ts_b - ts_a == ticks * (n_b - n_a)              (mod 2^32; ticks = samples per frame)
    1 <= seq_b - seq_a <= n_b - n_a                 (if n_b > n_a; mod 2^16)

:class:`PlayoutPosition` checks a frame against the frames accepted before it (the first one
fixes the timestamp offset; the sequence numbers are checked against the frames just before and
just after it, which is enough because the constraints add up) and refuses it with
:class:`PositionMismatch` if they disagree, changing nothing. Otherwise it returns the sequence
number and timestamp the jitter buffer is to use, both derived from ``n``. So playout order and
timing follow the authenticated position: a frame moved, cut or pasted by rewriting RTP
fields is dropped, and a gap closed by rewriting them is refused, in both modes.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from qphone.core.errors import FrameRejected

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
DEFAULT_MEMORY = 2048  # frames remembered for the sequence check (the default replay window)


class PositionMismatch(FrameRejected):
    """A frame's RTP sequence number or timestamp disagrees with its authenticated position."""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the jitter buffer puts an accepted frame (derived from its frame number)."""

    sequence: int  # 16 bit: frame number mod 2^16
    timestamp: int  # 32 bit: offset + ticks * frame number, mod 2^32


def _unwrap(value: int, reference: int, modulus: int) -> int:
    diff = (value - reference) % modulus
    if diff >= modulus // 2:
        diff -= modulus
    return reference + diff


class PlayoutPosition:
    """Checks the RTP fields of one received stream against its authenticated frame numbers."""

    def __init__(self, ticks_per_frame: int, memory: int = DEFAULT_MEMORY) -> None:
        if ticks_per_frame <= 0 or memory < 2:
            raise ValueError("need ticks_per_frame > 0 and memory >= 2")
        self._ticks = ticks_per_frame
        self._memory = memory
        self._offset: int | None = None  # RTP timestamp - ticks * frame number (mod 2^32)
        self._numbers: list[int] = []  # frame numbers accepted, sorted (the last `memory`)
        self._seqs: list[int] = []  # their unwrapped sequence numbers, same order

    def place(self, number: int, sequence: int, timestamp: int) -> Placement:
        """Accept a frame with authenticated frame number ``number`` that came with these RTP
        fields; raise PositionMismatch (changing nothing) if they disagree with it."""
        if number < 0 or not 0 <= sequence < SEQ_MOD or not 0 <= timestamp < TS_MOD:
            raise PositionMismatch("frame number or RTP fields out of range")
        offset = (timestamp - self._ticks * number) % TS_MOD
        if self._offset is not None and offset != self._offset:
            raise PositionMismatch(
                f"frame {number}: RTP timestamp {timestamp} is not where frame {number} plays"
            )
        numbers, seqs = self._numbers, self._seqs
        i = bisect.bisect_left(numbers, number)
        if i < len(numbers) and numbers[i] == number:
            raise PositionMismatch(f"frame {number} was placed already")
        if i > 0:
            ext = _unwrap(sequence, seqs[i - 1] + number - numbers[i - 1], SEQ_MOD)
            if not 1 <= ext - seqs[i - 1] <= number - numbers[i - 1]:
                raise PositionMismatch(
                    f"frame {number}: RTP sequence number {sequence} disagrees with frame "
                    f"{numbers[i - 1]}'s"
                )
        elif i < len(numbers):
            ext = _unwrap(sequence, seqs[i] - (numbers[i] - number), SEQ_MOD)
        else:
            ext = sequence
        if i < len(numbers) and not 1 <= seqs[i] - ext <= numbers[i] - number:
            raise PositionMismatch(
                f"frame {number}: RTP sequence number {sequence} disagrees with frame "
                f"{numbers[i]}'s"
            )
        numbers.insert(i, number)
        seqs.insert(i, ext)
        if len(numbers) > self._memory:
            del numbers[0], seqs[0]
        self._offset = offset
        return Placement(number % SEQ_MOD, (offset + self._ticks * number) % TS_MOD)
