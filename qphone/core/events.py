"""The events the security core returns to its adapter: one frozen dataclass per thing to do.

The sans-I/O machines (:mod:`qphone.core.handshake`, :mod:`qphone.core.session`) never touch a
socket, a KME or a clock; they return these and the adapter acts on them:

* :class:`SendControl`: send these bytes on the reliable ordered control channel (handshake
  messages and, during the call, sealed control messages);
* :class:`FetchQkdKeys`: the initiator takes fresh keys from its KME (ETSI 014 ``enc_keys``) and
  hands them in with ``provide_qkd_keys``;
* :class:`ResolveQkdKeys`: the responder resolves key IDs the initiator announced at its own
  KME (ETSI 014 ``dec_keys``) and hands the material in with ``provide_qkd_keys``;
* :class:`HandshakeComplete`: the handshake is done, here are its result and secrets;
* :class:`EpochStarted`, :class:`RotationOverdue`, :class:`RotationFailed`, :class:`PeerBye`:
  what the running call reports about rotation and its end.

:data:`HandshakeEvent` and :data:`SessionEvent` are what each machine can return.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from qphone.core.keyschedule import Direction

if TYPE_CHECKING:
    from qphone.core.handshake import HandshakeResult


class KeyPurpose(Enum):
    """What a QKD key asked for is for."""

    HANDSHAKE = "handshake"
    EPOCH = "epoch"
    PAD_I2R = "pad-i2r"
    PAD_R2I = "pad-r2i"


@dataclass(frozen=True)
class SendControl:
    """Send these bytes to the peer on the reliable ordered control channel."""

    data: bytes


@dataclass(frozen=True)
class FetchQkdKeys:
    """Initiator: take ``count`` keys of ``bits`` from the KME (enc_keys), then
    ``provide_qkd_keys``."""

    purpose: KeyPurpose
    count: int
    bits: int


@dataclass(frozen=True)
class ResolveQkdKeys:
    """Responder: resolve these key IDs at the local KME (dec_keys), then ``provide_qkd_keys``."""

    purpose: KeyPurpose
    key_ids: tuple[uuid.UUID, ...]
    bits: int


@dataclass(frozen=True)
class HandshakeComplete:
    result: HandshakeResult


@dataclass(frozen=True)
class EpochStarted:
    direction: Direction
    epoch: int


@dataclass(frozen=True)
class RotationOverdue:
    """The epoch is over but the next key is not ready on both sides yet (KME slow/empty)."""

    epoch: int


@dataclass(frozen=True)
class RotationFailed:
    """Rotation is ``overdue`` epochs overdue (the limit): the sender stopped (fail closed).

    The peer never confirmed the next epoch (its EpochReady, or the initiator's EpochAnnounce,
    did not arrive) or the KME did not deliver the next block in time."""

    epoch: int
    overdue: int


@dataclass(frozen=True)
class PeerBye:
    """The peer ended the call with an authenticated bye (``failed``: a failure ended it)."""

    reason: str
    failed: bool


HandshakeEvent = SendControl | ResolveQkdKeys | HandshakeComplete

SessionEvent = (
    SendControl
    | FetchQkdKeys
    | ResolveQkdKeys
    | EpochStarted
    | RotationOverdue
    | RotationFailed
    | PeerBye
)
