"""SFrame-style frame header (RFC 9605 section 4.3): key id and counter, compact encoding.

First byte ``X|K(3)|Y|C(3)``: a KID or CTR of 0..7 sits in its 3-bit field; a larger value follows
in the fewest big-endian bytes (the field holds length-1, the flag is set). KID bytes come first,
then CTR bytes. The header is authenticated as AAD, never encrypted.

qphone puts the epoch and the mode in the KID (``kid = epoch * 2 + mode_bit``, mode bit 0 = AES,
1 = OTP) and, in AES mode, the frame counter in CTR; in OTP mode CTR is the pad offset in bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from qphone.core.errors import FrameMalformed

MAX_FIELD = (1 << 64) - 1
MAX_HEADER_LEN = 17


def _field(value: int) -> tuple[int, bytes]:
    """Return (flag|3-bit field, extra bytes) for one value."""
    if value < 8:
        return value, b""
    size = (value.bit_length() + 7) // 8
    return 0x8 | (size - 1), value.to_bytes(size, "big")


@dataclass(frozen=True, slots=True)
class FrameHeader:
    kid: int
    ctr: int

    def encode(self) -> bytes:
        if not (0 <= self.kid <= MAX_FIELD and 0 <= self.ctr <= MAX_FIELD):
            raise ValueError("KID and CTR must fit in 64 bits")
        k, kid_bytes = _field(self.kid)
        c, ctr_bytes = _field(self.ctr)
        return bytes(((k << 4) | c,)) + kid_bytes + ctr_bytes

    @staticmethod
    def decode(frame: bytes) -> tuple[FrameHeader, int]:
        """Parse the header at the start of ``frame``; return it and its length in bytes."""
        kid, ctr, size = parse_header(frame)
        return FrameHeader(kid, ctr), size


def parse_header(frame: bytes) -> tuple[int, int, int]:
    """Return (KID, CTR, header length) of the header at the start of ``frame``.

    Strict: a value that would fit in fewer bytes (non-minimal encoding) is refused, so every
    header has exactly one encoding. (A plain function returning a tuple: it runs for every
    received frame.)
    """
    if not frame:
        raise FrameMalformed("frame is empty")
    config = frame[0]
    if not config & 0x80:  # fast paths: KID 0..7 inline (the common case)
        if not config & 0x08:
            return config >> 4, config & 0x7, 1
        end = (config & 0x7) + 2
        if end > len(frame):
            raise FrameMalformed("frame header is truncated")
        ctr = int.from_bytes(frame[1:end], "big")
        if frame[1] == 0 or ctr < 8:
            raise FrameMalformed("frame header uses a non-minimal encoding")
        return config >> 4, ctr, end
    if config & 0x08:  # fast path: KID and CTR both extended (OTP frames, AES from epoch 4)
        ks = ((config >> 4) & 0x7) + 1
        split = 1 + ks
        end = split + (config & 0x7) + 1
        if end > len(frame):
            raise FrameMalformed("frame header is truncated")
        kid = int.from_bytes(frame[1:split], "big")
        ctr = int.from_bytes(frame[split:end], "big")
        if frame[1] == 0 or frame[split] == 0 or kid < 8 or ctr < 8:
            raise FrameMalformed("frame header uses a non-minimal encoding")
        return kid, ctr, end
    pos = 1
    values = []
    for nibble in (config >> 4, config & 0x0F):
        if nibble & 0x8:
            size = (nibble & 0x7) + 1
            if pos + size > len(frame):
                raise FrameMalformed("frame header is truncated")
            value = int.from_bytes(frame[pos : pos + size], "big")
            if value < 8 or (value.bit_length() + 7) >> 3 != size:
                raise FrameMalformed("frame header uses a non-minimal encoding")
            pos += size
        else:
            value = nibble
        values.append(value)
    return values[0], values[1], pos
