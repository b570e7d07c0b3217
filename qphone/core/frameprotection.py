"""AES-256-GCM frame protection with SFrame-style headers, per direction, across epochs.

Per epoch and direction (RFC 9605 section 4.4.2 pattern, SHA-256)::

    secret = HKDF-Extract("", base_key)
    key    = HKDF-Expand(secret, "qphone/1 sframe key"  || KID, 32)
    salt   = HKDF-Expand(secret, "qphone/1 sframe salt" || KID, 12)
    nonce  = salt XOR CTR (CTR left-padded to 12 bytes)

Frame = header || AES-GCM(key, nonce, payload, aad=header) (16-byte tag). CTR is the sender's
frame number in its direction: it starts at 0 and goes up by one per frame for the whole call,
across epochs (every epoch has its own key and salt, so a nonce is never repeated under a key);
the sender refuses to protect once the counter would pass ``max_counter``. (epoch, CTR) is the
frame's authenticated position: the receiver plays frames by it
(:mod:`qphone.core.playoutposition`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qphone.core.errors import (
    FrameAuthFailed,
    FrameKeyUnavailable,
    FrameMalformed,
    FrameWrongMode,
    KeyExhausted,
)
from qphone.core.kdf import hkdf_expand, hkdf_extract
from qphone.core.openedframe import OpenedFrame
from qphone.core.replaywindow import ReplayWindow
from qphone.core.sframe import FrameHeader, parse_header

_opened = tuple.__new__  # OpenedFrame without its constructor's Python frame (see openedframe)

TAG_LEN = 16
MAX_PAYLOAD = 1500  # bytes; Opus packets are at most 1275
MAX_FRAME = 17 + MAX_PAYLOAD + TAG_LEN
DEFAULT_MAX_COUNTER = (1 << 32) - 1  # per direction and call; far below the 2^64 header limit
_NEVER = float("inf")
_NOT_STARTED = float("-inf")
MODE_BIT_AES = 0
MODE_BIT_OTP = 1


def aes_kid(epoch: int) -> int:
    return epoch * 2 + MODE_BIT_AES


@dataclass(frozen=True, repr=False)
class FrameKey:
    epoch: int
    aead: AESGCM
    salt: int

    @staticmethod
    def derive(epoch: int, base_key: bytes) -> FrameKey:
        kid = aes_kid(epoch).to_bytes(8, "big")
        secret = hkdf_extract(b"", base_key)
        key = hkdf_expand(secret, b"qphone/1 sframe key" + kid, 32)
        salt = hkdf_expand(secret, b"qphone/1 sframe salt" + kid, 12)
        return FrameKey(epoch, AESGCM(key), int.from_bytes(salt, "big"))


def _header_prefixes(kid: int) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """Precomputed header bytes for one KID: the full header for CTR 0..7, and the config byte
    plus KID bytes for each CTR length 1..8 (the CTR bytes follow)."""
    small = tuple(FrameHeader(kid, ctr).encode() for ctr in range(8))
    if kid < 8:
        k, kid_bytes = kid, b""
    else:
        size = (kid.bit_length() + 7) // 8
        k, kid_bytes = 0x8 | (size - 1), kid.to_bytes(size, "big")
    long = tuple(bytes(((k << 4) | 0x8 | (n - 1),)) + kid_bytes for n in range(1, 9))
    return small, long


class AesFrameSender:
    """Protects outgoing frames under the current epoch key.

    An epoch lasts ``rotate_frames`` frames or ``rotate_s`` seconds from its first frame,
    whichever comes first; then ``on_epoch_over(now)`` is called before the next frame is
    protected (it may :meth:`rekey`; if it does not, the current key stays in use). The frame
    counter (CTR) runs on across epochs.
    """

    def __init__(
        self,
        key: FrameKey,
        max_counter: int = DEFAULT_MAX_COUNTER,
        rotate_frames: int = 1 << 62,
        rotate_s: float = float("inf"),
        on_epoch_over: Callable[[float], None] | None = None,
    ) -> None:
        self._max = max_counter
        self._rotate_frames = rotate_frames
        self._rotate_s = rotate_s
        self._on_epoch_over = on_epoch_over
        self._ctr = 0
        self._refusal = ""
        self._set_key(key)

    def _set_key(self, key: FrameKey) -> None:
        self._key = key
        self._epoch_end = self._ctr + self._rotate_frames  # the frame count ends the epoch here
        self._deadline = _NOT_STARTED  # the epoch's clock starts with its first frame
        self._encrypt = key.aead.encrypt
        self._salt = key.salt
        self._small, self._long = _header_prefixes(aes_kid(key.epoch))

    @property
    def epoch(self) -> int:
        return self._key.epoch

    @property
    def counter(self) -> int:
        """The frame number (CTR) the next frame gets: frames protected so far in the call."""
        return self._ctr

    def rekey(self, key: FrameKey, now: float) -> None:
        if key.epoch <= self._key.epoch:
            raise ValueError("the sender only moves to a newer epoch")
        self._set_key(key)
        self._deadline = now + self._rotate_s

    def overdue_epochs(self, now: float) -> int:
        """Whole epoch lengths (by frames or by time, whichever is more) that the current epoch
        has run past its end without a rekey (0 while it has not ended, or in its first one)."""
        frames = max(0, self._ctr - self._epoch_end) // max(1, self._rotate_frames)
        if self._deadline in (_NOT_STARTED, _NEVER) or self._rotate_s in (0, _NEVER):
            return frames
        return max(frames, int(max(0.0, now - self._deadline) // self._rotate_s))

    def refuse(self, reason: str) -> None:
        """Protect nothing more (KeyExhausted with ``reason``) and drop the key."""
        self._refusal = reason
        self.close()

    def close(self) -> None:
        """Drop the key (the AESGCM context is freed with its last reference); refuse after."""
        self._max = -1  # protect() now raises KeyExhausted
        self._key = FrameKey(self._key.epoch, AESGCM(bytes(32)), 0)  # drop the real context
        self._encrypt = self._key.aead.encrypt
        self._salt = 0

    def protect(self, payload: bytes, now: float) -> bytes:
        ctr = self._ctr
        if ctr >= self._epoch_end or now >= self._deadline:
            if self._deadline == _NOT_STARTED:
                self._deadline = now + self._rotate_s
            elif self._on_epoch_over is not None:
                self._on_epoch_over(now)
                ctr = self._ctr
        if ctr > self._max:
            raise KeyExhausted(
                self._refusal
                or f"epoch {self._key.epoch}: frame counter exhausted and no fresh key installed"
            )
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        if ctr < 8:
            header = self._small[ctr]
        else:
            n = (ctr.bit_length() + 7) >> 3
            header = self._long[n - 1] + ctr.to_bytes(n, "big")
        self._ctr = ctr + 1
        return header + self._encrypt((self._salt ^ ctr).to_bytes(12, "big"), payload, header)


class _RecvEpoch:
    __slots__ = ("decrypt", "retire_at", "salt", "window")

    def __init__(self, key: FrameKey, window: ReplayWindow) -> None:
        self.decrypt = key.aead.decrypt
        self.salt = key.salt
        self.window = window
        self.retire_at: float | None = None


class AesFrameReceiver:
    """Unprotects incoming frames; holds the keys of the current and recent epochs."""

    def __init__(
        self,
        replay_window: int,
        grace_s: float,
        on_new_epoch: Callable[[int], None] | None = None,
    ) -> None:
        self._on_new_epoch = on_new_epoch  # called when the first frame of a newer epoch arrives
        self._epochs: dict[int, _RecvEpoch] = {}
        self._window = replay_window
        self._grace = grace_s
        self._newest_seen = -1
        self._retired_below = 0
        self._next_retire = _NEVER

    @property
    def newest_seen(self) -> int:
        """The newest epoch from which a frame was accepted (-1: none yet)."""
        return self._newest_seen

    def install(self, key: FrameKey) -> None:
        if key.epoch in self._epochs or key.epoch < self._retired_below:
            raise ValueError(f"epoch {key.epoch} already installed or retired")
        self._epochs[key.epoch] = _RecvEpoch(key, ReplayWindow(self._window))

    def unprotect(self, frame: bytes, now: float) -> OpenedFrame:
        """Return the payload with its authenticated frame number (the CTR), or raise a
        FrameRejected subclass. State changes only on success (plus the erasure of keys whose
        grace window has passed)."""
        if now >= self._next_retire:
            self._retire(now)
        size = len(frame)
        if size > MAX_FRAME:
            raise FrameMalformed(f"frame of {size} bytes exceeds {MAX_FRAME}")
        kid, ctr, hlen = parse_header(frame)
        if kid & 1 != MODE_BIT_AES:
            raise FrameWrongMode("received an OTP frame on an AES session")
        epoch = kid >> 1
        entry = self._epochs.get(epoch)
        if entry is None:
            state = "was erased" if epoch < self._retired_below else "is not installed"
            raise FrameKeyUnavailable(f"frame for epoch {epoch}, whose key {state}")
        if size < hlen + TAG_LEN:
            raise FrameMalformed("frame is shorter than its header and tag")
        try:
            payload = entry.decrypt(
                (entry.salt ^ ctr).to_bytes(12, "big"), frame[hlen:], frame[:hlen]
            )
        except InvalidTag:
            raise FrameAuthFailed(f"epoch {epoch} frame {ctr}: tag invalid") from None
        entry.window.accept(ctr)  # raises FrameReplayed (no state change) for a replay
        if epoch > self._newest_seen:
            self._newest_seen = epoch
            deadline = now + self._grace
            for old, e in self._epochs.items():
                if old < epoch and e.retire_at is None:
                    e.retire_at = deadline
            pending = [e.retire_at for e in self._epochs.values() if e.retire_at is not None]
            self._next_retire = min(pending, default=_NEVER)
            if self._grace == 0:
                self._retire(now)
            if self._on_new_epoch is not None:
                self._on_new_epoch(epoch)
        return _opened(OpenedFrame, (payload, ctr))

    def _retire(self, now: float) -> None:
        for epoch in [e for e, v in self._epochs.items() if v.retire_at is not None]:
            if self._epochs[epoch].retire_at <= now:  # type: ignore[operator]
                del self._epochs[epoch]
                self._retired_below = max(self._retired_below, epoch + 1)
        pending = [v.retire_at for v in self._epochs.values() if v.retire_at is not None]
        self._next_retire = min(pending, default=_NEVER)

    def close(self) -> None:
        self._epochs.clear()
