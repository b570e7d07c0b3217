"""The classical channel's framing: Wegman-Carter authentication with a one-time pad budget.

Every post-processing message travels as one frame::

    version u8 | flags u8 | direction u8 | position u64 | length u32 | payload | tag (16 bytes)

``tag = Poly1305_{r,s}(header || payload)``: the polynomial hash over 2^130 - 5 keyed by ``r``,
plus ``s`` mod 2^128. ``s`` is fresh one-time pad for every frame; ``r`` is pad too, kept for up
to ``R_LIFETIME`` frames of a connection (flag bit 0 = "new r": the frame takes ``r`` and then
``s`` from the pad). This is a Wegman-Carter MAC (Wegman and Carter, JCSS 22 (1981); Poly1305:
Bernstein, FSE 2005): a forgery succeeds with probability at most ``8 ceil(L/16) / 2^106`` per
attempt, independent of computing power.

**The pad.** Two streams, one per direction (transmitter->receiver, receiver->transmitter), each
the concatenation of halves of *chunks*: the pre-shared initial key, then a refill from every
block's final key (``auth_refill_bits``, announced by Alice, identical at both). ``position`` is
the frame's byte offset in its direction's stream: the receiver needs no counter to find the pad,
and refuses a frame at a position below the next one it expects (replay, reordering). A sender
persists a reservation beyond the position it is about to use *before* sending (and restarts at
the reservation after a crash), so no pad byte is ever used twice, also across SIGKILL.
Freshness after a reconnect comes from the protocol's Hello, which must carry the receiver's
connection nonce: nothing from an older connection is accepted before it, nothing older than it
after it.

**Which chunks a sender may use.** The receiver of the link stores a block (and its refill
chunk) before the transmitter does: the transmitter may use a chunk as soon as it holds it; the
receiver only once the transmitter has committed that block (so a refill never reaches one side
only). Receiving may use any chunk held.

Sans-I/O: :class:`AuthPad` is the pad state (persistence through :class:`AuthStore`),
:class:`Sealer`/:class:`Opener` turn payloads into frames and back.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.poly1305 import Poly1305

from keyserver.qkd.role import Role

VERSION = 1
HEADER = struct.Struct(">BBBQI")
TAG_BYTES = 16
FLAG_NEW_R = 1
R_LIFETIME = 1024  # frames per r
RESERVE_BYTES = 64 * 32  # pad reserved per persisted reservation (64 frames with new r)
MAX_PAYLOAD = 96 << 20

TO_RECEIVER = 0  # transmitter -> receiver
TO_TRANSMITTER = 1  # receiver -> transmitter
MIN_INITIAL_KEY_BYTES = 4096


class AuthError(ValueError):
    """A frame refused by the authentication layer (no state changed)."""


class AuthKeyExhausted(RuntimeError):
    """No authentication pad is left to send with: the link must stop."""


class AuthStore(Protocol):
    """Durable state of the pad (the module's store; a memory stand-in in simulations)."""

    def save_reservation(self, direction: int, position: int) -> None: ...

    def save_chunk(self, block: int, to_receiver: bytes, to_transmitter: bytes) -> None: ...

    def commit_chunk(self, block: int) -> None: ...

    def drop_chunks_after(self, block: int) -> None: ...


class MemoryAuthStore:
    def save_reservation(self, direction: int, position: int) -> None:
        return None

    def save_chunk(self, block: int, to_receiver: bytes, to_transmitter: bytes) -> None:
        return None

    def commit_chunk(self, block: int) -> None:
        return None

    def drop_chunks_after(self, block: int) -> None:
        return None


@dataclass
class Chunk:
    block: int  # -1 for the initial key
    halves: tuple[bytearray, bytearray]
    committed: bool


def split_initial_key(key: bytes) -> tuple[bytes, bytes]:
    """The pre-shared key's two halves (transmitter->receiver, receiver->transmitter)."""
    if len(key) < MIN_INITIAL_KEY_BYTES:
        raise ValueError(
            f"the initial authentication key must have at least {MIN_INITIAL_KEY_BYTES} bytes"
        )
    half = len(key) // 2
    return key[:half], key[half : 2 * half]


class AuthPad:
    """Both directions' pad streams as one module sees them, with its send reservation."""

    def __init__(
        self,
        role: Role,
        chunks: list[Chunk],
        send_reserved: int,
        store: AuthStore,
    ) -> None:
        try:
            self.role = Role(role)
        except ValueError:
            raise ValueError("role must be transmitter or receiver") from None
        self.send_direction = TO_RECEIVER if self.role is Role.TRANSMITTER else TO_TRANSMITTER
        self.recv_direction = 1 - self.send_direction
        self._chunks = chunks
        self._store = store
        self.send_pos = send_reserved  # restart at the reservation: never below a used byte
        self._reserved = send_reserved
        self.consumed_bytes = 0
        self._index()

    # -- streams --------------------------------------------------------------------------------
    def _index(self) -> None:
        """Stream offsets of the chunks per direction, and the lengths usable (kept current on
        every change of the chunk list, so a read costs O(log chunks), not O(chunks))."""
        self._starts: tuple[list[int], list[int]] = ([], [])
        self._usable: dict[tuple[int, bool], int] = {}
        for d in (0, 1):
            total = 0
            sendable: int | None = None
            for c in self._chunks:
                if self.role is Role.RECEIVER and not c.committed and sendable is None:
                    sendable = total
                self._starts[d].append(total)
                total += len(c.halves[d])
            self._usable[(d, False)] = total
            self._usable[(d, True)] = total if sendable is None else sendable

    def _length(self, direction: int, *, for_sending: bool) -> int:
        return self._usable[(direction, for_sending)]

    def read(self, direction: int, position: int, size: int, *, for_sending: bool) -> bytes | None:
        if position < 0 or position + size > self._length(direction, for_sending=for_sending):
            return None
        starts = self._starts[direction]
        i = max(bisect.bisect_right(starts, position) - 1, 0)
        out = bytearray()
        while len(out) < size and i < len(self._chunks):
            half = self._chunks[i].halves[direction]
            lo = max(position - starts[i], 0)
            hi = min(position + size - starts[i], len(half))
            if lo < hi:
                out += half[lo:hi]
            i += 1
        return bytes(out)

    def available_bytes(self, direction: int) -> int:
        pos = self.send_pos if direction == self.send_direction else 0
        return max(self._length(direction, for_sending=direction == self.send_direction) - pos, 0)

    def available_bits(self, recv_pos: int) -> int:
        send = self._length(self.send_direction, for_sending=True) - self.send_pos
        recv = self._length(self.recv_direction, for_sending=False) - recv_pos
        return 8 * (max(send, 0) + max(recv, 0))

    # -- chunks ---------------------------------------------------------------------------------
    def add_chunk(self, block: int, to_receiver: bytes, to_transmitter: bytes) -> None:
        committed = self.role is Role.TRANSMITTER
        self._store.save_chunk(block, to_receiver, to_transmitter)
        if committed:
            self._store.commit_chunk(block)
        self._chunks.append(
            Chunk(block, (bytearray(to_receiver), bytearray(to_transmitter)), committed)
        )
        self._index()

    def add_chunk_loaded(
        self, block: int, to_receiver: bytes, to_transmitter: bytes, committed: bool
    ) -> None:
        """A chunk the module already made durable (together with its block's keys)."""
        if self.has_chunk(block):
            return
        self._chunks.append(
            Chunk(block, (bytearray(to_receiver), bytearray(to_transmitter)), committed)
        )
        self._index()

    def commit_chunk(self, block: int) -> None:
        for c in self._chunks:
            if c.block == block and not c.committed:
                c.committed = True
                self._store.commit_chunk(block)
                self._index()

    def drop_uncommitted_after(self, block: int) -> None:
        """Forget refills of blocks above ``block`` that were never committed (receiver)."""
        keep = [c for c in self._chunks if c.committed or c.block <= block]
        if len(keep) != len(self._chunks):
            for c in self._chunks:
                if c not in keep:
                    for h in c.halves:
                        h[:] = bytes(len(h))
            self._chunks[:] = keep
            self._store.drop_chunks_after(block)
            self._index()

    def has_chunk(self, block: int) -> bool:
        return any(c.block == block for c in self._chunks)

    # -- sending --------------------------------------------------------------------------------
    def take_send(self, size: int) -> tuple[int, bytes]:
        pos = self.send_pos
        pad = self.read(self.send_direction, pos, size, for_sending=True)
        if pad is None:
            raise AuthKeyExhausted("authentication pad exhausted for sending")
        if pos + size > self._reserved:
            self._reserved = pos + size + RESERVE_BYTES
            self._store.save_reservation(self.send_direction, self._reserved)
        self.send_pos = pos + size
        self.consumed_bytes += size
        return pos, pad


class Sealer:
    """Sending half of one connection."""

    def __init__(self, pad: AuthPad) -> None:
        self._pad = pad
        self._r: bytes | None = None
        self._uses = 0
        self.frames = 0

    def seal(self, payload: bytes) -> bytes:
        return self.seal_parts([payload])

    def seal_parts(self, parts: list[bytes], *, length_prefix: bool = False) -> bytes:
        """The frame of the payload ``b"".join(parts)`` (joined once, with header and tag);
        ``length_prefix`` puts the frame's length (u32 big-endian) in front, as a stream
        carries it."""
        length = sum(len(p) for p in parts)
        if length > MAX_PAYLOAD:
            raise ValueError("payload too large for one frame")
        new_r = self._r is None or self._uses >= R_LIFETIME
        size = 2 * TAG_BYTES if new_r else TAG_BYTES
        pos, pad = self._pad.take_send(size)
        if new_r:
            self._r, s = pad[:TAG_BYTES], pad[TAG_BYTES:]
            self._uses = 0
        else:
            s = pad
        assert self._r is not None
        self._uses += 1
        header = HEADER.pack(
            VERSION, FLAG_NEW_R if new_r else 0, self._pad.send_direction, pos, length
        )
        mac = Poly1305(self._r + s)
        mac.update(header)
        for p in parts:
            mac.update(p)
        self.frames += 1
        lead = [struct.pack(">I", HEADER.size + length + TAG_BYTES)] if length_prefix else []
        return b"".join([*lead, header, *parts, mac.finalize()])


@dataclass(frozen=True)
class Opened:
    """A frame whose tag verified; :meth:`Opener.accept` makes it count. ``payload`` is a view
    into the frame (no copy)."""

    payload: memoryview
    position: int
    size: int
    new_r: bytes | None


class Opener:
    """Receiving half of one connection."""

    def __init__(self, pad: AuthPad) -> None:
        self._pad = pad
        self._r: bytes | None = None
        self.next_position = 0
        self.frames = 0

    def open(self, frame: bytes) -> Opened:
        """Check one frame; raises AuthError (nothing changes) unless it is authentic and new."""
        if len(frame) < HEADER.size + TAG_BYTES:
            raise AuthError("frame too short")
        version, flags, direction, pos, length = HEADER.unpack_from(frame)
        if version != VERSION or flags & ~FLAG_NEW_R:
            raise AuthError("unknown frame version or flags")
        if direction != self._pad.recv_direction:
            raise AuthError("frame for the other direction")
        if length != len(frame) - HEADER.size - TAG_BYTES:
            raise AuthError("frame length does not match its header")
        if pos < self.next_position:
            raise AuthError("frame position already used (replay or reordering)")
        new_r = bool(flags & FLAG_NEW_R)
        size = 2 * TAG_BYTES if new_r else TAG_BYTES
        pad = self._pad.read(self._pad.recv_direction, pos, size, for_sending=False)
        if pad is None:
            raise AuthError("frame position beyond the authentication key held")
        r = pad[:TAG_BYTES] if new_r else self._r
        if r is None:
            raise AuthError("frame without a hash key on this connection")
        s = pad[TAG_BYTES:] if new_r else pad
        view = memoryview(frame)
        mac = Poly1305(r + s)
        mac.update(view[:-TAG_BYTES])
        try:
            mac.verify(bytes(view[-TAG_BYTES:]))
        except InvalidSignature:
            raise AuthError("authentication tag does not verify") from None
        return Opened(view[HEADER.size : -TAG_BYTES], pos, size, r if new_r else None)

    def accept(self, opened: Opened) -> None:
        if opened.new_r is not None:
            self._r = opened.new_r
        self.next_position = opened.position + opened.size
        self._pad.consumed_bytes += opened.size
        self.frames += 1
