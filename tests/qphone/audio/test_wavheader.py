"""WAV files in every bit depth, plain and WAVE_FORMAT_EXTENSIBLE; truncated files refused.

The files are built here byte by byte (the layout the Microsoft WAVEFORMATEXTENSIBLE document
gives), and, when sox is installed, made by sox as a user would (``sox -b 24``).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qphone.audio.wav import WavFormatError, read_wav, wav_info
from qphone.audio.wavheader import GUID_TAIL, Encoding, parse_header

RATE = 16_000
TONE = 0.5 * np.sin(2 * np.pi * 440 * np.arange(RATE // 4) / RATE)  # 0.25 s at half scale


def _samples(encoding: Encoding, bits: int, x: np.ndarray) -> bytes:
    if encoding is Encoding.FLOAT:
        return x.astype("<f4" if bits == 32 else "<f8").tobytes()
    if bits == 8:
        return np.round(x * 127 + 128).astype(np.uint8).tobytes()
    v = np.round(x * (2 ** (bits - 1) - 1)).astype(np.int64)
    return (
        b"".join((v & 0xFF_FFFF).astype("<u4").tobytes()[i * 4 : i * 4 + 3] for i in range(len(v)))
        if bits == 24
        else v.astype(f"<i{bits // 8}").tobytes()
    )


def _wav(
    encoding: Encoding,
    bits: int,
    channels: int = 1,
    *,
    extensible: bool = False,
    data: bytes | None = None,
    extra_chunk: bool = False,
    data_size: int | None = None,
) -> bytes:
    tag = 1 if encoding is Encoding.PCM else 3
    block = channels * bits // 8
    fmt = struct.pack(
        "<HHIIHH", 0xFFFE if extensible else tag, channels, RATE, RATE * block, block, bits
    )
    if extensible:
        fmt += struct.pack("<HHI", 22, bits, 0x4) + struct.pack("<H", tag) + GUID_TAIL
    if data is None:
        data = _samples(encoding, bits, np.repeat(TONE, channels))
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if extra_chunk:
        body += b"LIST" + struct.pack("<I", 5) + b"abcde" + b"\0"  # odd size: padded
    body += b"data" + struct.pack("<I", len(data) if data_size is None else data_size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


FORMATS = [(Encoding.PCM, b) for b in (8, 16, 24, 32)] + [(Encoding.FLOAT, b) for b in (32, 64)]


@pytest.mark.parametrize("encoding,bits", FORMATS, ids=[f"{e.name}{b}" for e, b in FORMATS])
@pytest.mark.parametrize("extensible", [False, True], ids=["plain", "extensible"])
def test_every_bit_depth_reads_as_the_same_tone(
    tmp_path: Path, encoding: Encoding, bits: int, extensible: bool
) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(_wav(encoding, bits, 2, extensible=extensible, extra_chunk=True))
    info = wav_info(path)
    assert (info.sample_rate, info.channels, info.sample_width * 8) == (RATE, 2, bits)
    assert info.encoding is encoding and info.frames == len(TONE)
    pcm, rate = read_wav(path)
    assert rate == RATE and len(pcm) == len(TONE)
    error = np.max(np.abs(pcm - TONE * 32767))
    assert error <= (300 if bits == 8 else 2)


def test_a_truncated_file_is_refused_at_once_in_one_line(tmp_path: Path) -> None:
    """The header says 8 s, the file holds 100 bytes: refused before anything is started."""
    path = tmp_path / "cut.wav"
    head = _wav(Encoding.PCM, 16, data=b"", data_size=8 * RATE * 2)
    path.write_bytes(head + bytes(100))
    for reader in (wav_info, read_wav):
        with pytest.raises(WavFormatError) as info:
            reader(path)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{path}: truncated WAV file")
        assert "says 8.00 s of audio but the file holds 0.00 s" in message


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
@pytest.mark.parametrize(
    "args",
    [["-b", "24"], ["-b", "32", "-e", "floating-point"], ["-b", "16", "-c", "4"], ["-b", "8"]],
)
def test_files_made_by_sox_are_read(tmp_path: Path, args: list[str]) -> None:
    src = tmp_path / "src.wav"
    src.write_bytes(_wav(Encoding.PCM, 16))
    out = tmp_path / "out.wav"
    subprocess.run(["sox", str(src), *args, str(out)], check=True, timeout=30)
    pcm, rate = read_wav(out)
    assert rate == RATE and len(pcm) == len(TONE)
    # sox dithers when it reduces the depth: 8 bits are a step of 256 plus the dither
    assert np.max(np.abs(pcm - TONE * 32767)) <= (800 if args == ["-b", "8"] else 300)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 1 << 33))
def test_any_bytes_give_a_layout_or_one_wav_format_error(head: bytes, size: int) -> None:
    for data in (head, b"RIFF\0\0\0\0WAVE" + head, _wav(Encoding.PCM, 16)[:44] + head):
        try:
            layout = parse_header(data, size)
        except WavFormatError as exc:
            assert "\n" not in str(exc) and str(exc)
        else:
            assert layout.data_offset + layout.data_bytes <= size
            assert layout.data_bytes % (layout.channels * layout.sample_width) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(FORMATS),
    st.integers(1, 8),
    st.booleans(),
    st.booleans(),
    st.integers(0, 50),
)
def test_headers_built_to_the_spec_parse_back(
    fmt: tuple[Encoding, int], channels: int, extensible: bool, extra: bool, frames: int
) -> None:
    encoding, bits = fmt
    data = bytes(frames * channels * bits // 8)
    raw = _wav(encoding, bits, channels, extensible=extensible, extra_chunk=extra, data=data)
    layout = parse_header(raw, len(raw))
    assert (layout.encoding, layout.bits, layout.channels) == (encoding, bits, channels)
    assert layout.frames == frames and raw[layout.data_offset :] == data
    with pytest.raises(WavFormatError, match="truncated WAV file"):
        if data:
            parse_header(raw, len(raw) - 1)
        else:
            raise WavFormatError("truncated WAV file (nothing to cut)")


def test_a_call_names_the_conversions_of_its_wav_input(tmp_path: Path) -> None:
    from qphone.audio.opus import OpusConfig
    from qphone.audio.streams import open_sink, open_source

    path = tmp_path / "in.wav"
    path.write_bytes(_wav(Encoding.PCM, 24, 2, extensible=True))
    source, _ = open_source(str(path), OpusConfig())
    assert source.description == (
        f"WAV file {path} (16 kHz, 2 channels, 24-bit PCM: downmixed to mono, resampled to "
        "48 kHz, converted to 16-bit)"
    )
    sink = open_sink(str(tmp_path / "out.wav"), OpusConfig())
    assert sink.description == f"WAV file {tmp_path / 'out.wav'} (mono 16-bit PCM, 48 kHz)"
