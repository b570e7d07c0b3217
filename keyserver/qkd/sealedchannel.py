"""The sealed quantum channel: authenticated encryption of every frame between a module pair.

The simulated quantum channel carries what photons would (per-pulse records, or in the emulated
fidelity the block's raw key material). Real photons cannot be read without disturbing them
(no-cloning); a TCP stream can. So the stream is sealed, as the simulation's stand-in for
no-cloning: only the two modules, which hold the link's *channel key*, can read it, and the only
eavesdropper is the configured model inside the simulation (on the fibre, at the transmitter,
``keyserver.qkd.quantumchannel`` / ``keyserver.qkd.emulation``).

Scheme (sans-I/O; the module moves the bytes):

* **Channel key**: 32 random bytes per link, written by the launcher's plan
  (``DIR/links/<link>.channelkey``, mode 0600) and named by ``[quantum_channel] channel_key``.
* **Session key**: each connection opens with 16 random bytes from each side (the transmitter's
  first on the wire, then the receiver's). ``K = HKDF-SHA256(channel key, salt = tx nonce ||
  rx nonce, info = "qphone sealed quantum channel v1" || link)`` (RFC 5869). A new connection
  therefore has a new key, whatever either side remembers.
* **Frames**: ``u32 length || AES-256-GCM(K, nonce, plaintext, aad = b"")`` (NIST SP 800-38D),
  the 96-bit nonce = direction (1 byte: 0 transmitter->receiver, 1 receiver->transmitter) ||
  frame counter (11 bytes, big-endian, from 0 in each direction of each connection). The counter
  is implicit: the receiver opens frame n with nonce n only, so a replayed, reordered, dropped
  or modified frame does not open, and the session is closed (one log line). No nonce repeats
  under a key: within a connection the counter only grows, and across reconnects the key
  changes (fresh nonces from both sides). A connection that reaches 2^32 frames is closed
  (far below GCM's limits).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CHANNEL_KEY_BYTES = 32
NONCE_BYTES = 16
TAG_BYTES = 16
TO_RECEIVER = 0
TO_TRANSMITTER = 1
MAX_FRAMES = 1 << 32
_INFO = b"qphone sealed quantum channel v1\0"


class SealError(ValueError):
    """A frame that does not open (modified, replayed, reordered, or not from the peer)."""


def new_channel_key(path: Path) -> None:
    """Write a fresh channel key (mode 0600) unless ``path`` holds one already."""
    if path.exists():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(CHANNEL_KEY_BYTES))


def read_channel_key(path: Path) -> bytearray:
    """The channel key at ``path`` (ValueError naming the fix)."""
    try:
        data = bytearray(path.read_bytes())
    except OSError as e:
        raise ValueError(
            f"[quantum_channel] channel_key: cannot read {path}: {e.strerror}"
        ) from None
    if len(data) != CHANNEL_KEY_BYTES:
        raise ValueError(
            f"[quantum_channel] channel_key: {path} must hold exactly "
            f"{CHANNEL_KEY_BYTES} random bytes (the launcher's plan writes it)"
        )
    return data


def session_key(
    channel_key: bytes | bytearray, link: str, tx_nonce: bytes, rx_nonce: bytes
) -> bytes:
    """The key of one connection (HKDF over both sides' fresh nonces)."""
    if len(tx_nonce) != NONCE_BYTES or len(rx_nonce) != NONCE_BYTES:
        raise ValueError("connection nonces must be 16 bytes")
    hkdf = HKDF(
        hashes.SHA256(), CHANNEL_KEY_BYTES, tx_nonce + rx_nonce, _INFO + link.encode("utf-8")
    )
    return hkdf.derive(bytes(channel_key))


def _nonce(direction: int, counter: int) -> bytes:
    return bytes([direction]) + counter.to_bytes(11, "big")


class ChannelSealer:
    """Sealing half of one connection (one direction)."""

    def __init__(self, key: bytes, direction: int) -> None:
        self._aead = AESGCM(key)
        self._direction = direction
        self.frames = 0

    def seal(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        if self.frames >= MAX_FRAMES:
            raise SealError("frame counter exhausted: reconnect for a new session key")
        out = self._aead.encrypt(_nonce(self._direction, self.frames), bytes(plaintext), None)
        self.frames += 1
        return out


class ChannelOpener:
    """Opening half of one connection (the other direction's frames, in order)."""

    def __init__(self, key: bytes, direction: int) -> None:
        self._aead = AESGCM(key)
        self._direction = direction
        self.frames = 0

    def open(self, frame: bytes | bytearray | memoryview) -> bytes:
        """The plaintext of the next frame; SealError (nothing changes) if it does not open."""
        if len(frame) < TAG_BYTES:
            raise SealError("sealed frame shorter than its tag")
        if self.frames >= MAX_FRAMES:
            raise SealError("frame counter exhausted")
        try:
            out = self._aead.decrypt(_nonce(self._direction, self.frames), bytes(frame), None)
        except InvalidTag:
            raise SealError(
                "sealed quantum-channel frame does not open (modified, replayed, "
                "reordered, or not sealed by the peer)"
            ) from None
        self.frames += 1
        return out
