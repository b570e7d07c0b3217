"""A media frame a session accepted: its payload and its authenticated frame number.

What :meth:`CallSession.unprotect <qphone.core.session.CallSession.unprotect>` returns.  The
frame number is the one the tag covered: in AES mode the frame's CTR (the sender's frame count,
:mod:`qphone.core.frameprotection`), in OTP mode the frame number in its KID
(:mod:`qphone.core.otp`).  Playout orders frames by it (:mod:`qphone.core.playoutposition`),
never by the unauthenticated RTP sequence number and timestamp alone.

An immutable named pair (a :class:`typing.NamedTuple`): the sessions make one per received
frame with :func:`opened_frame`, which builds it in C (``tuple.__new__``) without the Python
frame of the generated constructor; a frozen dataclass cost about 0.3 us more per frame, which
``qphone bench crypto`` shows against libsrtp.
"""

from __future__ import annotations

from typing import NamedTuple


class OpenedFrame(NamedTuple):
    """The plaintext payload of an accepted frame and its authenticated frame number."""

    payload: bytes
    frame_number: int


_new = tuple.__new__


def opened_frame(payload: bytes, frame_number: int) -> OpenedFrame:
    """``OpenedFrame(payload, frame_number)``, built without the constructor's Python frame
    (the frame path runs it for every frame; the result is the same named tuple)."""
    return _new(OpenedFrame, (payload, frame_number))
