"""The header of a RIFF/WAVE file, parsed strictly and bounded (sans-I/O: bytes in, layout out).

Accepted: integer PCM of 8 (unsigned), 16, 24 and 32 bits and IEEE float of 32 and 64 bits,
either as a plain ``fmt `` chunk (format tags 1 and 3) or as ``WAVE_FORMAT_EXTENSIBLE`` (tag
0xFFFE, as ``sox -b 24`` and most editors write for more than 16 bits or 2 channels) whose
sub-format GUID is PCM or IEEE float; any rate from 1 kHz to 768 kHz, 1 to 32 channels.  The
chunks before ``data`` must lie in the first :data:`MAX_HEADER_BYTES` of the file (unknown
chunks such as ``LIST`` or ``fact`` are skipped, at most :data:`MAX_CHUNKS` of them); the
``data`` chunk must hold what its header says (a truncated file is refused, naming how much of
it is missing); it may be empty (a file with no sound: the caller decides what that means).
Every refusal is a :class:`WavFormatError` whose message names the fix.

Format reference: Microsoft, "Multiple Channel Audio Data and WAVE Files" (WAVEFORMATEXTENSIBLE,
KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT), and the RIFF WAVE ``fmt ``/``data`` chunk layout.
"""

from __future__ import annotations

import dataclasses
import enum
import struct

MAX_HEADER_BYTES = 1 << 20  # where the data chunk must start
MAX_CHUNKS = 64
MAX_CHANNELS = 32
MIN_RATE, MAX_RATE = 1000, 768_000

TAG_PCM = 0x0001
TAG_FLOAT = 0x0003
TAG_EXTENSIBLE = 0xFFFE
#: bytes 2..15 of the KSDATAFORMAT_SUBTYPE_* GUIDs (the first two are the format tag)
GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_OTHER_TAGS = {
    0x0002: "Microsoft ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0055: "MP3",
}
CONVERT = "convert it to a 16-bit PCM WAV file (e.g. `sox IN.wav -b 16 -e signed-integer OUT.wav`)"


class WavFormatError(ValueError):
    """The file is not a WAV file this module can read; the message names the fix."""


class Encoding(enum.Enum):
    PCM = "integer PCM"
    FLOAT = "IEEE float"


@dataclasses.dataclass(frozen=True)
class WavLayout:
    """What the header says: the samples' format, and where the samples are in the file."""

    encoding: Encoding
    sample_rate: int
    channels: int
    bits: int  # per sample (container size)
    data_offset: int
    data_bytes: int

    @property
    def sample_width(self) -> int:
        return self.bits // 8

    @property
    def frames(self) -> int:
        return self.data_bytes // (self.sample_width * self.channels)

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


@dataclasses.dataclass(frozen=True)
class _Fmt:
    encoding: Encoding
    channels: int
    rate: int
    bits: int


def parse_header(head: bytes, file_size: int) -> WavLayout:
    """The layout of a WAV file from its first bytes (``head``: at least up to the start of
    its ``data`` chunk, at most :data:`MAX_HEADER_BYTES` are looked at) and its size."""
    head = head[:MAX_HEADER_BYTES]
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise WavFormatError("not a WAV file (no RIFF/WAVE header): give a PCM WAV file")
    fmt: _Fmt | None = None
    pos = 12
    for _ in range(MAX_CHUNKS):
        if pos + 8 > len(head):
            break
        cid, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            if fmt is not None:
                raise WavFormatError(f"two fmt chunks: {CONVERT}")
            if body + size > len(head):
                raise WavFormatError(f"its fmt chunk is cut short: {CONVERT}")
            fmt = _parse_fmt(head[body : body + size])
        elif cid == b"data":
            if fmt is None:
                raise WavFormatError(f"its data chunk comes before any fmt chunk: {CONVERT}")
            return _layout(fmt, body, size, file_size)
        pos = body + size + (size & 1)
    if fmt is None:
        raise WavFormatError("not a WAV file (no fmt chunk in its header): give a PCM WAV file")
    raise WavFormatError(
        f"no data chunk within the first {MAX_CHUNKS} chunks or {MAX_HEADER_BYTES >> 20} MiB: "
        f"{CONVERT}"
    )


def _parse_fmt(chunk: bytes) -> _Fmt:
    if len(chunk) < 16:
        raise WavFormatError(f"its fmt chunk is {len(chunk)} bytes, fewer than 16: {CONVERT}")
    tag, channels, rate, byte_rate, block, bits = struct.unpack_from("<HHIIHH", chunk)
    name = "WAVE_FORMAT_EXTENSIBLE " if tag == TAG_EXTENSIBLE else ""
    if tag == TAG_EXTENSIBLE:
        if len(chunk) < 40:
            raise WavFormatError(f"its WAVE_FORMAT_EXTENSIBLE fmt chunk is cut short: {CONVERT}")
        cb_size, valid_bits, _mask = struct.unpack_from("<HHI", chunk, 16)
        guid = chunk[24:40]
        if cb_size < 22 or guid[2:] != GUID_TAIL:
            raise WavFormatError(
                f"its WAVE_FORMAT_EXTENSIBLE sub-format is not PCM or float: {CONVERT}"
            )
        tag = struct.unpack_from("<H", guid)[0]
        if not 0 < valid_bits <= bits:
            raise WavFormatError(
                f"its WAVE_FORMAT_EXTENSIBLE header says {valid_bits} valid bits in {bits}-bit "
                f"samples: {CONVERT}"
            )
    if tag not in (TAG_PCM, TAG_FLOAT):
        what = _OTHER_TAGS.get(tag, f"format {tag:#06x}")
        raise WavFormatError(f"{name}{what} WAV is not supported: {CONVERT}")
    encoding = Encoding.PCM if tag == TAG_PCM else Encoding.FLOAT
    allowed = (8, 16, 24, 32) if encoding is Encoding.PCM else (32, 64)
    if bits not in allowed:
        kind = "float" if encoding is Encoding.FLOAT else "integer PCM"
        raise WavFormatError(f"{name}{bits}-bit {kind} WAV is not supported: {CONVERT}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise WavFormatError(
            f"a WAV file with {channels} channels (1 to {MAX_CHANNELS} are read): {CONVERT}"
        )
    if not MIN_RATE <= rate <= MAX_RATE:
        raise WavFormatError(
            f"a WAV file at {rate} Hz (1 kHz to 768 kHz are read): resample it, e.g. `sox IN.wav "
            "-r 48000 OUT.wav`"
        )
    if block != channels * bits // 8 or byte_rate != rate * block:
        raise WavFormatError(
            f"its header is inconsistent (block {block} bytes for {channels} x {bits} bits, "
            f"{byte_rate} bytes/s at {rate} Hz): {CONVERT}"
        )
    return _Fmt(encoding, channels, rate, bits)


def _layout(fmt: _Fmt, offset: int, size: int, file_size: int) -> WavLayout:
    block = fmt.channels * fmt.bits // 8
    layout = WavLayout(fmt.encoding, fmt.rate, fmt.channels, fmt.bits, offset, size)
    if offset + size > file_size:
        held = max(0, file_size - offset) // block / fmt.rate
        raise WavFormatError(
            f"truncated WAV file: its header says {layout.duration:.2f} s of audio but the file "
            f"holds {held:.2f} s: give the complete file"
        )
    if size % block:
        raise WavFormatError(
            f"its data chunk ({size} bytes) is not a whole number of {block}-byte frames: {CONVERT}"
        )
    return layout
