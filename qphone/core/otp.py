"""One-time-pad frame protection with a Wegman-Carter MAC, for low-bitrate channels.

Each direction has a pad stream: the concatenation, in announced order, of the QKD keys assigned
to it. Its first ``t/8`` bytes are the session hash key ``k``. A frame takes the next
``t/8 + n`` bytes at stream offset ``o`` (carried in the header's CTR); the header's KID is
``2 f + 1``, where ``f`` is the sender's frame number (0, 1, 2, ... per frame slot, including
slots it could not send for want of pad), so the MAC authenticates the frame's position too::

    s  = pad[o : o + t/8]                      fresh per frame: the tag mask
    c  = payload XOR pad[o + t/8 : o + t/8 + n]
    m  = header || c
    tag = (poly_k(m) + s) mod 2^t

``poly_k`` is a polynomial hash over the prime field GF(p_t), p_32 = 2^32-5, p_64 = 2^64-59,
p_128 = 2^128-159: m is cut into blocks of t/8-1 bytes, each block gets a 0x01 byte appended
(so the encoding is injective and every block is < p), and poly_k(m) = sum c_i k^(l-i+1) mod p.
Two distinct messages of at most l blocks collide in a given difference with probability at
most l/p over k; adding the fresh mask s (and folding mod 2^t) gives forgery probability at
most 2l/p per attempt (docs/crypto.md). No pad byte is used twice: the sender only moves
forward, the receiver refuses any range that overlaps one already accepted or lies below its
window, and used pad is overwritten with zeros.
"""

from __future__ import annotations

import bisect
import hmac
from collections.abc import Callable
from types import ModuleType

from qphone.core.errors import (
    FrameAuthFailed,
    FrameKeyUnavailable,
    FrameMalformed,
    FrameReplayed,
    FrameWrongMode,
    KeyExhausted,
)
from qphone.core.frameprotection import MAX_PAYLOAD, MODE_BIT_OTP
from qphone.core.sframe import MAX_FIELD, parse_header

PRIMES = {32: (1 << 32) - 5, 64: (1 << 64) - 59, 128: (1 << 128) - 159}


MAX_FRAME_NUMBER = (MAX_FIELD - MODE_BIT_OTP) // 2  # the KID must fit in 64 bits


def otp_kid(frame_number: int) -> int:
    """The KID of an OTP frame: its frame number and the OTP mode bit."""
    return frame_number * 2 + MODE_BIT_OTP


def otp_header(frame_number: int, offset: int) -> bytes:
    """The SFrame header (KID = 2 f + 1, CTR = pad offset) of an OTP frame (inlined: it runs
    for every frame)."""
    kid = frame_number * 2 + MODE_BIT_OTP
    if kid < 8:
        k, kid_bytes = kid, b""
    else:
        size = (kid.bit_length() + 7) >> 3
        k, kid_bytes = 0x8 | (size - 1), kid.to_bytes(size, "big")
    if offset < 8:
        return bytes(((k << 4) | offset,)) + kid_bytes
    size = (offset.bit_length() + 7) >> 3
    return bytes(((k << 4) | 0x8 | (size - 1),)) + kid_bytes + offset.to_bytes(size, "big")


def mac_blocks(message_len: int, tag_bits: int) -> int:
    """Number of field elements poly_k hashes for a message of this length."""
    size = tag_bits // 8 - 1
    return max(1, -(-message_len // size))


def forgery_bound(message_len: int, tag_bits: int) -> float:
    """Upper bound on the success probability of one forgery attempt on a frame of
    ``message_len`` bytes (header + ciphertext).

    ``2l/p`` for a uniform key; the key is t pad bits reduced mod p, which makes the
    ``2^t - p`` smallest residues twice as likely, hence ``(2l + min(2l, 2^t - p)) / 2^t``.
    """
    blocks = 2 * mac_blocks(message_len, tag_bits)
    return (blocks + min(blocks, (1 << tag_bits) - PRIMES[tag_bits])) / (1 << tag_bits)


class WegmanCarterMac:
    """tag = (poly_k(m) + s) mod 2^t with k fixed per session and s fresh pad per message."""

    def __init__(self, tag_bits: int, hash_key: bytes) -> None:
        if tag_bits not in PRIMES:
            raise ValueError("tag length must be 32, 64 or 128 bits")
        if len(hash_key) != tag_bits // 8:
            raise ValueError(f"hash key must be {tag_bits // 8} bytes")
        self._p = PRIMES[tag_bits]
        self._k = int.from_bytes(hash_key, "big") % self._p
        self._block = tag_bits // 8 - 1
        self._tag_len = tag_bits // 8
        self._mask = (1 << tag_bits) - 1
        self._bits = tag_bits
        fast = _fast if tag_bits in (32, 64) else None
        self._fast: Callable[[bytes, int, int], int] | None = fast.polyhash if fast else None
        self._seal: Callable[[bytes, bytes, bytes, int, int], bytes] | None = (
            fast.seal if fast else None
        )
        self._open: Callable[[bytes, int, bytes, int, int], bytes | None] | None = (
            fast.open if fast else None
        )
        # taking the pad from the stream and erasing it in C too (None: an older build)
        self._seal_at: Callable[[bytes, bytes, bytearray, int, int, int], bytes] | None = (
            getattr(fast, "seal_at", None) if fast else None
        )
        self._open_at: Callable[[bytes, int, bytearray, int, int, int], bytes | None] | None = (
            getattr(fast, "open_at", None) if fast else None
        )

    def poly(self, message: bytes) -> int:
        """poly_k(message) in [0, p): the C accelerator when built, else the reference."""
        if self._fast is not None:
            return self._fast(message, self._k, self._bits)
        return self.poly_reference(message)

    def poly_reference(self, message: bytes) -> int:
        p, k, size = self._p, self._k, self._block
        h = 0
        for i in range(0, len(message) or 1, size):
            h = (h + int.from_bytes(message[i : i + size] + b"\x01", "little")) * k % p
        return h

    def seal(self, header: bytes, payload: bytes, pad: bytes) -> bytes:
        """header || payload XOR pad[t/8:] || tag, with pad[:t/8] masking the tag."""
        if self._seal is not None:
            return self._seal(header, payload, pad, self._k, self._bits)
        tl = self._tag_len
        body = header + _xor_reference(payload, pad[tl:])
        return body + self.tag(body, pad[:tl])

    def open(self, frame: bytes, header_len: int, pad: bytes) -> bytes | None:
        """The payload, or None when the tag is wrong (compared in constant time)."""
        if self._open is not None:
            return self._open(frame, header_len, pad, self._k, self._bits)
        tl = self._tag_len
        body, tag = frame[:-tl], frame[-tl:]
        if not hmac.compare_digest(self.tag(body, pad[:tl]), tag):
            return None
        return _xor_reference(body[header_len:], pad[tl:])

    def seal_at(self, header: bytes, payload: bytes, stream: bytearray, start: int) -> bytes:
        """:meth:`seal` with the pad at ``stream[start:]``, which is zeroed (erased) there."""
        if self._seal_at is not None:
            return self._seal_at(header, payload, stream, start, self._k, self._bits)
        stop = start + self._tag_len + len(payload)
        if start < 0 or stop > len(stream):
            raise ValueError("pad range lies outside the stream")
        frame = self.seal(header, payload, bytes(stream[start:stop]))
        stream[start:stop] = bytes(stop - start)
        return frame

    def open_at(self, frame: bytes, header_len: int, stream: bytearray, start: int) -> bytes | None:
        """:meth:`open` with the pad at ``stream[start:]``, zeroed there when the tag is good
        (left as it was when not)."""
        if self._open_at is not None:
            return self._open_at(frame, header_len, stream, start, self._k, self._bits)
        stop = start + len(frame) - header_len
        if start < 0 or stop > len(stream) or len(frame) < header_len + self._tag_len:
            raise ValueError("frame, header length and pad range do not fit")
        payload = self.open(frame, header_len, bytes(stream[start:stop]))
        if payload is not None:
            stream[start:stop] = bytes(stop - start)
        return payload

    def tag(self, message: bytes, pad: bytes) -> bytes:
        s = int.from_bytes(pad, "big")
        return ((self.poly(message) + s) & self._mask).to_bytes(self._tag_len, "big")

    def forget(self) -> None:
        self._k = 0


def _xor_reference(data: bytes, pad: bytes) -> bytes:
    n = len(data)
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad[:n], "big")).to_bytes(n, "big")


_fast: ModuleType | None
try:  # optional C accelerator (setup.py); identical results, tested against the reference
    from qphone.core import _otpfast as _fast
except ImportError:  # pragma: no cover - exercised where no C compiler was available
    _fast = None


class PadSender:
    """Sending side of one direction's pad stream: strictly forward, erasing as it goes."""

    def __init__(self, tag_bits: int) -> None:
        self.tag_bits = tag_bits
        self._tag_len = tag_bits // 8
        self._buf = bytearray()  # stream bytes [self._base, self._base + len(buf))
        self._base = 0
        self.position = 0  # next unused stream offset (read-only outside this class)
        self.end = 0  # end of the pad held (read-only outside this class)
        self._usable_end = 0  # the peer holds pad up to here
        self._limit = 0  # min(usable end, held end): this sender may use pad below it
        self._mac: WegmanCarterMac | None = None
        self.pad_bytes_used = 0
        self.mac_bytes_used = 0
        self.frames = 0
        self.frame_number = 0  # of the next frame slot (advances even when pad is missing)
        # the header's layout while KID and CTR keep their byte sizes (see _header)
        self._kid_limit = self._off_limit = 0
        self._hdr_prefix = self._ctr_bits = self._hdr_len = 0

    @property
    def available(self) -> int:
        """Pad bytes this sender may still use (held by both ends)."""
        return max(0, self._limit - self.position)

    @property
    def held(self) -> int:
        return self.end - self.position

    def append(self, material: bytes) -> None:
        self._buf += material
        self.end += len(material)
        self._limit = min(self._usable_end, self.end)

    def mark_usable(self, end: int) -> None:
        """The peer confirmed it holds the stream up to ``end``."""
        if end > self.end:
            raise ValueError("peer claims pad this side never announced")
        self._usable_end = max(self._usable_end, end)
        self._limit = min(self._usable_end, self.end)

    def _take(self, n: int) -> tuple[int, bytearray]:
        """The next ``n`` pad bytes and their stream offset; erased from the stream at once."""
        offset = self.position
        if offset + n > self._limit:
            raise KeyExhausted(
                f"one-time pad exhausted: need {n} bytes, {self.available} left (KME too slow or "
                "empty)"
            )
        buf = self._buf
        start = offset - self._base
        stop = start + n
        chunk = buf[start:stop]
        buf[start:stop] = bytes(n)  # erase used pad at once
        self.position = offset + n
        if stop > 1 << 16:  # drop the erased prefix now and then
            del buf[:stop]
            self._base += stop
        return offset, chunk

    def protect(self, payload: bytes) -> bytes:
        """Protect the payload of the next frame slot. Without pad for it, raise KeyExhausted:
        the slot's frame number is spent all the same, so that frame numbers keep the sender's
        timing (the receiver plays by them).  (Runs for every frame: kept to a few steps.)"""
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise ValueError(f"payload of {n} bytes exceeds {MAX_PAYLOAD}")
        number = self.frame_number
        if number > MAX_FRAME_NUMBER:
            raise KeyExhausted("OTP frame numbers exhausted")
        self.frame_number = number + 1
        mac = self._mac
        tl = self._tag_len
        if mac is None:
            if self.available < 2 * tl + n:
                raise KeyExhausted("one-time pad not yet available for the session hash key")
            mac = self._mac = WegmanCarterMac(self.tag_bits, bytes(self._take(tl)[1]))
            self.mac_bytes_used += tl
        offset = self.position
        if offset + tl + n > self._limit:
            raise KeyExhausted(
                f"one-time pad exhausted: need {tl + n} bytes, {self.available} left (KME too "
                "slow or empty)"
            )
        kid = number * 2 + MODE_BIT_OTP
        if 8 <= kid < self._kid_limit and 8 <= offset < self._off_limit:
            # the common case, without re-deriving the layout: as otp_header(number, offset)
            value = (self._hdr_prefix | kid) << self._ctr_bits | offset
            header = value.to_bytes(self._hdr_len, "big")
        else:
            header = self._header(kid, offset)
        start = offset - self._base
        frame = mac.seal_at(header, payload, self._buf, start)  # the pad is erased as it is used
        self.position = offset + tl + n
        if start > 1 << 16:  # drop the erased prefix now and then
            del self._buf[:start]
            self._base = offset
        self.pad_bytes_used += n
        self.mac_bytes_used += tl
        self.frames += 1
        return frame

    def _header(self, kid: int, offset: int) -> bytes:
        """Build a header with otp_header and remember its layout for the next frames."""
        header = otp_header(kid >> 1, offset)
        if kid >= 8 and offset >= 8:
            ks = (kid.bit_length() + 7) >> 3
            cs = (offset.bit_length() + 7) >> 3
            self._kid_limit, self._off_limit = 1 << (8 * ks), 1 << (8 * cs)
            self._hdr_prefix = header[0] << (8 * ks)
            self._ctr_bits, self._hdr_len = 8 * cs, 1 + ks + cs
        return header

    def close(self) -> int:
        """Erase everything; return the number of unused pad bytes erased."""
        unused = max(0, self.held)
        self._buf[:] = bytes(len(self._buf))
        self._buf.clear()
        self._base = self.end = self._limit = self.position  # nothing held any more
        if self._mac is not None:
            self._mac.forget()
        return unused


class PadReceiver:
    """Receiving side of one direction's pad stream, with a window for loss and reordering."""

    def __init__(self, tag_bits: int, window_bytes: int) -> None:
        self.tag_bits = tag_bits
        self._tag_len = tag_bits // 8
        self._buf = bytearray()
        self._base = 0
        self._low = 0  # nothing below this offset can be used any more
        self._used: list[tuple[int, int]] = []  # accepted ranges above _low, sorted, disjoint
        self._max_end = 0  # end of the highest accepted range
        self.last_end = 0  # end of the range of the frame accepted last
        self.last_frame = -1  # frame number of the frame accepted last
        self._window = window_bytes
        self.end = 0  # end of the pad held (read-only outside this class)
        self._step = max(1, window_bytes // 8)
        self._mac: WegmanCarterMac | None = None
        self.frames = 0

    def append(self, material: bytes) -> None:
        self._buf += material
        self.end += len(material)
        if self._mac is None and self.end >= self._tag_len:
            self._mac = WegmanCarterMac(self.tag_bits, bytes(self._buf[: self._tag_len]))
            self._buf[: self._tag_len] = bytes(self._tag_len)
            self._low = max(self._low, self._tag_len)

    def _overlaps(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self._used, (start, 1 << 80))
        if i > 0 and self._used[i - 1][1] > start:
            return True
        return i < len(self._used) and self._used[i][0] < end

    def unprotect(self, frame: bytes) -> bytes:
        kid, offset, hlen = parse_header(frame)
        if kid & 1 != MODE_BIT_OTP:
            raise FrameWrongMode("received an AES frame on an OTP session")
        n = len(frame) - hlen - self._tag_len
        if n < 0:
            raise FrameMalformed("frame is shorter than its header and tag")
        if n > MAX_PAYLOAD:
            raise FrameMalformed(f"payload of {n} bytes exceeds {MAX_PAYLOAD}")
        start, stop = offset, offset + self._tag_len + n
        in_order = start >= self._max_end
        if start < self._low or (not in_order and self._overlaps(start, stop)):
            raise FrameReplayed(f"pad range at offset {start} already used or out of window")
        if stop > self.end or self._mac is None:
            raise FrameKeyUnavailable(f"pad at offset {start} not received from the KME yet")
        payload = self._mac.open_at(frame, hlen, self._buf, start - self._base)  # pad erased
        if payload is None:
            raise FrameAuthFailed(f"OTP frame at pad offset {start}: tag invalid")
        if in_order:
            self._used.append((start, stop))
            self._max_end = stop
            if stop - self._window > self._low + self._step:  # amortised: move in steps
                self._advance_low(stop)
        else:
            bisect.insort(self._used, (start, stop))
        self.frames += 1
        self.last_end = stop
        self.last_frame = kid >> 1
        return payload

    def _advance_low(self, newest_end: int) -> None:
        low = max(self._low, newest_end - self._window)
        if low <= self._low:
            return
        a, b = max(0, self._low - self._base), low - self._base
        self._buf[a:b] = bytes(b - a)  # pad of frames lost for good is erased too
        self._low = low
        keep = bisect.bisect_left(self._used, (low, 0))
        while keep and self._used[keep - 1][1] > low:
            keep -= 1
        del self._used[:keep]
        drop = low - self._base
        if drop > 1 << 16:  # drop the erased prefix now and then
            del self._buf[:drop]
            self._base = low

    def close(self) -> None:
        self._buf[:] = bytes(len(self._buf))
        self._buf.clear()
        if self._mac is not None:
            self._mac.forget()
