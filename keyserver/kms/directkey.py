"""One-hop direct keys: the key ID that names a slice of a link stream (sans-I/O).

When the slave SAE's node is the master SAE's node's neighbour (a route of one hop), the master's
node does not relay: it spends a slice of **its own stream** on that link
(:mod:`keyserver.kms.linkstream`) and gives the slice's key bytes to the master SAE at once.
The neighbour already holds the same bytes (its copy of that stream); the key ID tells it where
they are, so that ``dec_keys`` from the slave SAE finds them with no node-to-node message.

A slice is ``MAC_KEY_BYTES + size`` bytes: the first ``MAC_KEY_BYTES`` are a **one-time MAC
key** ``(r, s)``, the rest is the key delivered. The key ID is an RFC 9562 version-8 UUID whose
122 free bits hold

* ``start`` (48 bits): the slice's position in the owner's stream;
* ``size - 1`` (13 bits): the key's size in bytes (1 to 8192, i.e. up to 65,536 bits);
* ``tag`` (61 bits): ``poly_r(m) + s mod 2^61 - 1`` over the canonical encoding ``m`` of
  (owner node, link, master SAE, slave SAE, start, size): Wegman-Carter with a polynomial hash
  over the prime field and a fresh key per key ID.

The tag binds the slice to the SAE pair it was issued to: the neighbour verifies it (constant
time) with the slave SAE that calls ``dec_keys`` and the master SAE it names, and a key ID
presented by any other SAE, or altered in any bit, fails. The MAC key is link key that is never
delivered: the tag says nothing about the delivered bits (a tag over the key itself would, and
qphone uses delivered keys as one-time pads). Forgery: with ``n`` field elements (a length and
the 7-byte blocks of ``m``; ``n`` = 13 for IDs of 10 characters each), one guess succeeds with
probability at most about ``4 n / 2^61`` whatever the attacker computes (the factor 4 covers
``r`` and ``s`` taken as 64-bit integers reduced modulo the prime); a failed guess changes
nothing, so ``q`` guesses succeed with at most ``q`` times that.

Cost: ``8 * MAC_KEY_BYTES`` = 128 bits of link key per key on top of the key's own bits (a
one-hop relay costs 256 bits of MAC key per request, for all its keys).
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass

VERSION = 8  # RFC 9562 "custom" UUID version: only direct keys use it in this network
START_BITS = 48
SIZE_BITS = 13
TAG_BITS = 61
PRIME = (1 << 61) - 1  # the tag is an element of GF(2^61 - 1)
MAC_KEY_BYTES = 16  # r and s, 8 bytes each
MAX_START = (1 << START_BITS) - 1
MAX_SIZE_BYTES = 1 << SIZE_BITS
MAX_ID_LENGTH = 256  # bytes of a node, link or SAE ID in the MAC message (config IDs are short)
_DOMAIN = b"qphone direct key v1"
_BLOCK = 7  # bytes per field element (56 bits < 61)
_PAYLOAD_BITS = START_BITS + SIZE_BITS + TAG_BITS  # 122: every free bit of a v8 UUID
assert _PAYLOAD_BITS == 122


class DirectKeyError(ValueError):
    """A direct key cannot be issued as asked (position or size out of the ID's range)."""


@dataclass(frozen=True)
class Binding:
    """Whom a direct key is for: the owner node's stream on `link`, the master and slave SAE."""

    owner: str
    link: str
    master: str
    slave: str


@dataclass(frozen=True)
class DirectRef:
    """What a direct key ID says: the slice position, the key size and the tag."""

    start: int
    size_bytes: int
    tag: int

    @property
    def slice_length(self) -> int:
        return MAC_KEY_BYTES + self.size_bytes


def slice_length(size_bytes: int) -> int:
    """Link-key bytes one direct key of `size_bytes` spends."""
    return MAC_KEY_BYTES + size_bytes


def _message(b: Binding, start: int, size_bytes: int) -> bytes:
    out = bytearray(_DOMAIN)
    for text in (b.owner, b.link, b.master, b.slave):
        raw = text.encode()
        if len(raw) > MAX_ID_LENGTH:
            raise DirectKeyError(f"ID {text[:40]!r}... is longer than {MAX_ID_LENGTH} bytes")
        out += len(raw).to_bytes(2, "big") + raw
    out += start.to_bytes(8, "big") + size_bytes.to_bytes(2, "big")
    return bytes(out)


def tag(mac_key: bytes, b: Binding, start: int, size_bytes: int) -> int:
    """The 61-bit one-time tag of (binding, start, size) under `mac_key` (16 link-key bytes)."""
    if len(mac_key) != MAC_KEY_BYTES:
        raise DirectKeyError(f"a direct key's MAC key is {MAC_KEY_BYTES} bytes")
    r = int.from_bytes(mac_key[:8], "big") % PRIME
    s = int.from_bytes(mac_key[8:], "big") % PRIME
    m = _message(b, start, size_bytes)
    # the first block is the message length, so no two messages give the same blocks
    blocks = [len(m)] + [int.from_bytes(m[i : i + _BLOCK], "big") for i in range(0, len(m), _BLOCK)]
    h = 0
    for c in blocks:
        h = (h + c) * r % PRIME
    return (h + s) % PRIME


def encode_id(ref: DirectRef) -> uuid.UUID:
    """The version-8 UUID carrying `ref`."""
    if not 0 <= ref.start <= MAX_START:
        raise DirectKeyError(f"stream position {ref.start} does not fit a direct key ID")
    if not 1 <= ref.size_bytes <= MAX_SIZE_BYTES:
        raise DirectKeyError(f"key size {ref.size_bytes} bytes does not fit a direct key ID")
    if not 0 <= ref.tag < PRIME:
        raise DirectKeyError("tag out of range")
    p = (ref.start << (SIZE_BITS + TAG_BITS)) | ((ref.size_bytes - 1) << TAG_BITS) | ref.tag
    hi48 = p >> 74  # UUID bits 0-47
    mid12 = (p >> 62) & 0xFFF  # bits 52-63 (after the version nibble)
    lo62 = p & ((1 << 62) - 1)  # bits 66-127 (after the variant)
    n = (hi48 << 80) | (VERSION << 76) | (mid12 << 64) | (0b10 << 62) | lo62
    return uuid.UUID(int=n)


def decode_id(key_id: uuid.UUID) -> DirectRef | None:
    """The slice a key ID names, or None if it is not a well-formed direct key ID (another
    version or variant, or a tag outside the field: such an ID was never issued)."""
    n = key_id.int
    if (n >> 76) & 0xF != VERSION or (n >> 62) & 0b11 != 0b10:
        return None
    p = ((n >> 80) << 74) | (((n >> 64) & 0xFFF) << 62) | (n & ((1 << 62) - 1))
    t = p & ((1 << TAG_BITS) - 1)
    if t >= PRIME:
        return None
    size = ((p >> TAG_BITS) & ((1 << SIZE_BITS) - 1)) + 1
    return DirectRef(p >> (SIZE_BITS + TAG_BITS), size, t)


def is_direct(key_id: uuid.UUID) -> bool:
    """Whether a key ID has the direct-key form (its tag is not checked here)."""
    return key_id.version == VERSION


def issue(b: Binding, start: int, material: bytes) -> tuple[uuid.UUID, bytes]:
    """The key ID and key of the slice [start, start + len(material)) of the owner's stream."""
    size = len(material) - MAC_KEY_BYTES
    if size < 1:
        raise DirectKeyError("a direct key slice holds a MAC key and at least one key byte")
    t = tag(material[:MAC_KEY_BYTES], b, start, size)
    return encode_id(DirectRef(start, size, t)), material[MAC_KEY_BYTES:]


def verify(b: Binding, ref: DirectRef, mac_key: bytes) -> bool:
    """Whether `ref`'s tag is the one issued for `b` (constant-time compare)."""
    try:
        want = tag(mac_key, b, ref.start, ref.size_bytes)
    except DirectKeyError:
        return False
    return hmac.compare_digest(want.to_bytes(8, "big"), ref.tag.to_bytes(8, "big"))
