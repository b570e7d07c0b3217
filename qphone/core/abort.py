"""The abort message: one side tells the other that it is failing the call before keys exist.

It travels on the control channel instead of the next handshake message and is **not
authenticated** (no keys exist yet to authenticate it): a courtesy so that the peer can stop at
once, never a reason to trust anything. Anyone on the path can send one, so its receiver shows
it as an unauthenticated event in neutral words, its text made printable
(:func:`~qphone.core.displaytext.printable`: no terminal escapes), never as advice; once keys
exist it is ignored (only the authenticated bye or a transport failure ends a call). Wire
format::

    b"\xffqphone-abort:" || kind (u8) || reason (UTF-8, at most 300 bytes)

No handshake message (type 1..3) and no sealed control message (type 1..6) starts with 0xff.
A kind this version does not know reads as :attr:`AbortKind.FAILED`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from qphone.core.displaytext import printable

ABORT_PREFIX = b"\xffqphone-abort:"
MAX_REASON_BYTES = 300


class AbortKind(IntEnum):
    """Why the sender aborts."""

    FAILED = 0  # its handshake failed (bad message, signature, key confirmation, KME, timeout)
    IDENTITY_REFUSED = 1  # the identity presented to it is not the one it has pinned
    POLICY_REFUSED = 2  # the proposed call is outside its policy (mode, PQC-only, tags, epochs)

    @property
    def claim(self) -> str:
        """What an abort of this kind claims, in neutral words."""
        return {
            AbortKind.FAILED: "handshake failed",
            AbortKind.IDENTITY_REFUSED: "identity not accepted",
            AbortKind.POLICY_REFUSED: "call outside policy",
        }[self]


@dataclass(frozen=True)
class Abort:
    kind: AbortKind
    reason: str

    def encode(self) -> bytes:
        reason = self.reason.encode()[:MAX_REASON_BYTES]
        return ABORT_PREFIX + bytes((self.kind,)) + reason


def is_abort(data: bytes) -> bool:
    return data.startswith(ABORT_PREFIX)


def decode_abort(data: bytes) -> Abort:
    """Parse an abort message (``is_abort(data)`` must hold). The reason comes out printable:
    invalid UTF-8 replaced, control and format characters escaped, bounded."""
    if not is_abort(data):
        raise ValueError("not an abort message")
    body = data[len(ABORT_PREFIX) :]
    try:
        kind = AbortKind(body[0]) if body else AbortKind.FAILED
    except ValueError:
        kind = AbortKind.FAILED
    reason = body[1 : 1 + MAX_REASON_BYTES].decode(errors="replace")
    return Abort(kind, printable(reason, MAX_REASON_BYTES))
