"""Opus encoder/decoder wrappers on opuslib (ctypes binding of the system libopus).

One :class:`OpusEncoder` turns one frame of interleaved int16 PCM into one Opus packet; one
:class:`OpusDecoder` turns packets back into PCM and covers the two ways of filling a lost frame:
packet-loss concealment (:meth:`OpusDecoder.conceal`) and in-band FEC recovery from the next
packet (:meth:`OpusDecoder.decode_fec`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import opuslib
import opuslib.api.ctl
import opuslib.api.encoder

from qphone.core.jitterbuffer import PlayoutItem, PlayoutKind

Bandwidth = Literal["nb", "mb", "wb", "swb", "fb"]
Application = Literal["voip", "audio", "restricted_lowdelay"]

SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
FRAME_MS = (10, 20, 40, 60)
MIN_BITRATE = 6000
MAX_BITRATE = 64000

#: audio bandwidth in Hz of each Opus bandwidth setting
BANDWIDTH_HZ: dict[str, int] = {"nb": 4000, "mb": 6000, "wb": 8000, "swb": 12000, "fb": 20000}
_BANDWIDTH_CONST: dict[str, int] = {
    "nb": opuslib.constants.BANDWIDTH_NARROWBAND,
    "mb": opuslib.constants.BANDWIDTH_MEDIUMBAND,
    "wb": opuslib.constants.BANDWIDTH_WIDEBAND,
    "swb": opuslib.constants.BANDWIDTH_SUPERWIDEBAND,
    "fb": opuslib.constants.BANDWIDTH_FULLBAND,
}
_APPLICATIONS = ("voip", "audio", "restricted_lowdelay")
#: the longest frame a packet can hold (120 ms), used as the decode buffer size
_MAX_PACKET_MS = 120
#: a packet of at most this many bytes carries no audio (DTX, RFC 6716 section 3.1 TOC only)
DTX_PACKET_MAX_BYTES = 2


class OpusConfigError(ValueError):
    """An :class:`OpusConfig` field is out of range or inconsistent."""


class OpusCodecError(ValueError):
    """libopus rejected a packet or PCM buffer."""


@dataclasses.dataclass(frozen=True)
class OpusConfig:
    """Parameters of one Opus stream (both ends must agree on sample rate and channels).

    ``bandwidth`` forces the coded audio bandwidth (narrowband 4 kHz ... fullband 20 kHz) and may
    not exceed what ``sample_rate`` can carry. In-band FEC only produces redundancy when
    ``expected_loss_percent`` > 0 and the bitrate is high enough for SILK's LBRR (roughly 12/14/16
    kbit/s for nb/mb/wb), hence the default of 5 %. The redundancy is paid for out of ``bitrate``
    (see docs/media.md for the measured trade-off). ``dtx`` makes the encoder emit 1-2 byte
    packets during silence (see :func:`is_dtx_packet`); the sender may skip sending them.
    """

    sample_rate: int = 48000
    channels: int = 1
    frame_ms: int = 20
    bitrate: int = 24000
    bandwidth: Bandwidth = "wb"
    fec: bool = True
    dtx: bool = False
    expected_loss_percent: int = 5
    application: Application = "voip"
    # 5, not 10: a third of the encode CPU (0.10 vs 0.32 ms per 20 ms frame here) and, on the
    # bundled samples at 24 kbit/s WB, higher PESQ (4.13 vs 3.86, 3.74 vs 3.37)
    complexity: int = 5

    def __post_init__(self) -> None:
        if self.sample_rate not in SAMPLE_RATES:
            raise OpusConfigError(
                f"sample_rate must be one of {SAMPLE_RATES}, got {self.sample_rate}"
            )
        if self.channels not in (1, 2):
            raise OpusConfigError(f"channels must be 1 or 2, got {self.channels}")
        if self.frame_ms not in FRAME_MS:
            raise OpusConfigError(f"frame_ms must be one of {FRAME_MS}, got {self.frame_ms}")
        if isinstance(self.bitrate, bool) or not isinstance(self.bitrate, int):
            raise OpusConfigError(f"bitrate must be an int, got {self.bitrate!r}")
        if not MIN_BITRATE <= self.bitrate <= MAX_BITRATE:
            raise OpusConfigError(
                f"bitrate must be within {MIN_BITRATE}..{MAX_BITRATE} bit/s, got {self.bitrate}"
            )
        if self.bandwidth not in BANDWIDTH_HZ:
            raise OpusConfigError(
                f"bandwidth must be one of {tuple(BANDWIDTH_HZ)}, got {self.bandwidth!r}"
            )
        if 2 * BANDWIDTH_HZ[self.bandwidth] > self.sample_rate and self.bandwidth != "fb":
            raise OpusConfigError(
                f"bandwidth {self.bandwidth!r} ({BANDWIDTH_HZ[self.bandwidth]} Hz) needs a sample "
                f"rate of at least {2 * BANDWIDTH_HZ[self.bandwidth]} Hz, got {self.sample_rate}"
            )
        if self.bandwidth == "fb" and self.sample_rate != 48000:
            raise OpusConfigError(f"bandwidth 'fb' needs sample_rate 48000, got {self.sample_rate}")
        if not isinstance(self.fec, bool) or not isinstance(self.dtx, bool):
            raise OpusConfigError("fec and dtx must be booleans")
        if isinstance(self.expected_loss_percent, bool) or not isinstance(
            self.expected_loss_percent, int
        ):
            raise OpusConfigError("expected_loss_percent must be an int")
        if not 0 <= self.expected_loss_percent <= 100:
            raise OpusConfigError(
                f"expected_loss_percent must be within 0..100, got {self.expected_loss_percent}"
            )
        if self.application not in _APPLICATIONS:
            raise OpusConfigError(
                f"application must be one of {_APPLICATIONS}, got {self.application!r}"
            )
        if not 0 <= self.complexity <= 10:
            raise OpusConfigError(f"complexity must be within 0..10, got {self.complexity}")

    @property
    def samples_per_frame(self) -> int:
        """Samples per channel in one frame."""
        return self.sample_rate * self.frame_ms // 1000

    @property
    def frame_bytes(self) -> int:
        """Bytes of int16 interleaved PCM in one frame."""
        return self.samples_per_frame * self.channels * 2

    @property
    def rtp_timestamp_step(self) -> int:
        """RTP timestamp increment per frame (Opus always uses a 48 kHz RTP clock, RFC 7587)."""
        return 48 * self.frame_ms


def is_dtx_packet(packet: bytes) -> bool:
    """True for the 1-2 byte packets libopus emits in DTX (no audio; need not be sent)."""
    return len(packet) <= DTX_PACKET_MAX_BYTES


class OpusEncoder:
    """Encodes one frame of int16 PCM per call."""

    def __init__(self, config: OpusConfig | None = None) -> None:
        self.config = config or OpusConfig()
        cfg = self.config
        self._enc = opuslib.Encoder(cfg.sample_rate, cfg.channels, cfg.application)
        # Set through opuslib.api.ctl: opuslib 3.0.1's property setters for inband_fec and dtx
        # drop or misroute the value, so every setting is applied here and read back.
        ctl = opuslib.api.ctl
        self._set(ctl.set_bitrate, cfg.bitrate)
        self._set(ctl.set_bandwidth, _BANDWIDTH_CONST[cfg.bandwidth])
        self._set(ctl.set_inband_fec, int(cfg.fec))
        self._set(ctl.set_packet_loss_perc, cfg.expected_loss_percent)
        self._set(ctl.set_dtx, int(cfg.dtx))
        self._set(ctl.set_complexity, cfg.complexity)
        readback = {
            "bitrate": (self._get(ctl.get_bitrate), cfg.bitrate),
            "inband_fec": (self._get(ctl.get_inband_fec), int(cfg.fec)),
            "packet_loss_perc": (self._get(ctl.get_packet_loss_perc), cfg.expected_loss_percent),
            "dtx": (self._get(ctl.get_dtx), int(cfg.dtx)),
            "complexity": (self._get(ctl.get_complexity), cfg.complexity),
        }
        for name, (got, want) in readback.items():
            if got != want:
                raise OpusCodecError(f"libopus did not accept {name}={want} (reads back {got})")

    def _set(self, request: object, value: int) -> None:
        opuslib.api.encoder.encoder_ctl(self._enc.encoder_state, request, value)

    def _get(self, request: object) -> int:
        return int(opuslib.api.encoder.encoder_ctl(self._enc.encoder_state, request))

    def encode(self, pcm: bytes) -> bytes:
        """Encode exactly one frame (``config.frame_bytes`` bytes) of interleaved int16 PCM."""
        if len(pcm) != self.config.frame_bytes:
            raise OpusCodecError(
                f"encode needs exactly one frame: {self.config.frame_bytes} bytes "
                f"({self.config.frame_ms} ms), got {len(pcm)}"
            )
        try:
            packet: bytes = self._enc.encode(bytes(pcm), self.config.samples_per_frame)
        except opuslib.OpusError as exc:
            raise OpusCodecError(f"libopus encode failed: {exc}") from exc
        return packet

    @property
    def lookahead(self) -> int:
        """Encoder delay in samples per channel."""
        return self._get(opuslib.api.ctl.get_lookahead)


class OpusDecoder:
    """Decodes packets; conceals or FEC-recovers lost frames."""

    def __init__(self, config: OpusConfig | None = None) -> None:
        self.config = config or OpusConfig()
        self._dec = opuslib.Decoder(self.config.sample_rate, self.config.channels)
        self._last_frame_samples = self.config.samples_per_frame
        self._max_samples = self.config.sample_rate * _MAX_PACKET_MS // 1000

    def decode(self, packet: bytes) -> bytes:
        """Decode one packet into interleaved int16 PCM (its own frame length)."""
        if not packet:
            raise OpusCodecError("empty packet: use conceal() for a lost frame")
        pcm = self._run(packet, self._max_samples, fec=False)
        self._last_frame_samples = len(pcm) // (2 * self.config.channels)
        return pcm

    def conceal(self, samples: int | None = None) -> bytes:
        """Packet-loss concealment: a frame of ``samples`` (default: last frame length) samples."""
        n = self._check_samples(samples)
        return self._run(b"", n, fec=False)

    def decode_fec(self, next_packet: bytes, samples: int | None = None) -> bytes:
        """Recover the frame lost just before ``next_packet`` from its in-band FEC.

        If ``next_packet`` carries no FEC data libopus falls back to concealment. ``next_packet``
        must still be decoded normally afterwards with :meth:`decode`.
        """
        if not next_packet:
            raise OpusCodecError("decode_fec needs the packet that follows the lost one")
        n = self._check_samples(samples)
        return self._run(next_packet, n, fec=True)

    @staticmethod
    def packet_has_fec(packet: bytes) -> bool:
        """True if the packet's SILK layer carries LBRR (in-band FEC) data for the prior frame."""
        return _packet_has_lbrr(packet)

    def _check_samples(self, samples: int | None) -> int:
        n = self._last_frame_samples if samples is None else samples
        step = self.config.sample_rate // 400  # 2.5 ms granularity
        if n <= 0 or n % step or n > self._max_samples:
            raise OpusCodecError(f"frame length {n} is not a multiple of 2.5 ms up to 120 ms")
        return n

    def _run(self, packet: bytes, frame_size: int, *, fec: bool) -> bytes:
        try:
            pcm: bytes = self._dec.decode(packet, frame_size, decode_fec=fec)
        except opuslib.OpusError as exc:
            raise OpusCodecError(f"libopus rejected the packet: {exc}") from exc
        return pcm


def _packet_has_lbrr(packet: bytes) -> bool:
    """Whether a mono SILK/hybrid Opus packet's first frame has its LBRR flag set.

    Per RFC 6716 section 4.2.3 the SILK header of each channel starts with one VAD flag per SILK
    frame then one LBRR flag, range-coded with uniform probability 1/2, which for the first bits
    amounts to the top bits of the first payload byte. Only the mono, single-SILK-frame case
    (10/20 ms) is decoded exactly; other cases answer False.
    """
    if len(packet) < 2:
        return False
    toc = packet[0]
    config = toc >> 3
    if config >= 16 or toc & 0x04 or toc & 0x03:  # CELT-only, stereo, or multi-frame packet
        return False
    if config < 12 and config % 4 >= 2:  # SILK-only 40/60 ms: 2 or 3 SILK frames
        return False
    # bit 7 = VAD flag of the single frame, bit 6 = LBRR flag
    return bool(packet[1] & 0x40)


def decode_playout(decoder: OpusDecoder, item: PlayoutItem) -> bytes:
    """PCM for one jitter-buffer slot: decode, recover with FEC, or conceal (PLC and DTX)."""
    if item.kind is PlayoutKind.NORMAL and item.payload is not None:
        return decoder.decode(item.payload)
    if item.kind is PlayoutKind.FEC and item.payload is not None:
        return decoder.decode_fec(item.payload)
    return decoder.conceal()
