"""A media frame a session accepted: its payload and its authenticated frame number.

What :meth:`CallSession.unprotect <qphone.core.session.CallSession.unprotect>` returns.  The
frame number is the one the tag covered: in AES mode the frame's CTR (the sender's frame count,
:mod:`qphone.core.frameprotection`), in OTP mode the frame number in its KID
(:mod:`qphone.core.otp`).  Playout orders frames by it (:mod:`qphone.core.playoutposition`),
never by the unauthenticated RTP sequence number and timestamp alone.

The sessions make one per received frame with :func:`opened_frame`, which sets the two slots
directly: the ``__init__`` of a frozen dataclass sets each field through
``object.__setattr__`` by name, which costs more (the frame path is benchmarked:
``qphone bench crypto``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class OpenedFrame:
    """The plaintext payload of an accepted frame and its authenticated frame number."""

    payload: bytes
    frame_number: int


_new = object.__new__
_set_payload: Any = vars(OpenedFrame)["payload"].__set__
_set_frame_number: Any = vars(OpenedFrame)["frame_number"].__set__


def opened_frame(payload: bytes, frame_number: int) -> OpenedFrame:
    """``OpenedFrame(payload, frame_number)``, made at a fraction of its ``__init__``'s cost
    (the frame path runs it for every frame; the result is the same frozen dataclass)."""
    frame = _new(OpenedFrame)
    _set_payload(frame, payload)
    _set_frame_number(frame, frame_number)
    return frame
