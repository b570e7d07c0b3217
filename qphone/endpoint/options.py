"""The options of one call endpoint (what ``qphone call`` / ``qphone answer`` take).

:meth:`CallOptions.call_params` is what the caller proposes.  In OTP mode the pad comes in blocks
of :data:`PAD_BLOCK_S` of talk at the call's nominal rate (Opus bitrate plus one tag per frame),
at least the KME's ``min_key_size`` and at most its ``max_key_size``; the caller holds
``pad_lookahead_s`` of talk ahead of need (:mod:`qphone.core.paddemand`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from qphone.audio.opus import OpusConfig
from qphone.core.callparams import CallParams, Mode
from qphone.kmeclient import KmeStatus
from qphone.transport.config import TransportConfig

PAD_BLOCK_S = 0.25  # OTP: seconds of talk per pad block (at most half the lookahead)
PAD_BLOCK_LIMITS = (1024, 1 << 20)  # what CallParams accepts for pad_block_bits
MAX_LOOKAHEAD_BLOCKS = 16


@dataclass
class CallOptions:
    mode: Mode | None = None  # caller: proposed (default aes); answerer: required (None = any)
    bitrate: int = 24_000
    frame_ms: int = 20
    bandwidth: str = "wb"
    fec: bool = True
    dtx: bool = False
    rotate_frames: int = 500
    rotate_seconds: float = 10.0
    otp_tag_bits: int = 64
    pad_lookahead_s: float = 0.5  # OTP: seconds of talk of pad held ahead of need (caller)
    input: str | None = None  # qphone.audio.streams spec: WAV path, device, "default", None=silence
    output: str | None = None  # WAV path, sound device, "default", None = discard
    loop_input: bool = False  # repeat a WAV input until the call ends
    duration: float | None = None
    allow_pqc_only: bool = False
    trust_new_identity: bool = False
    status: bool | None = None  # None: live status line when stderr is a terminal
    transport: TransportConfig = field(default_factory=TransportConfig)
    kme_wait: float = 10.0  # seconds to wait for key when the KME's pool is empty
    # seconds to wait for each handshake message of the peer (a silent peer: the call fails)
    handshake_timeout: float = 15.0
    kme_limits: KmeStatus | None = None  # the KME's status (key sizes, keys per request)
    # real-time scheduling (SCHED_RR) for the media thread where permitted, never with a sound
    # device; else nice -10 (endpoint/priority.py). On for qphone loopback and its benches; off
    # for calls: beside PortAudio's callback threads it garbled a default-device call's
    # playout in 3 of 5 runs, and 1 of 8 with the device end alone at nice -10 (docs/media.md)
    realtime: bool = False

    def opus(self) -> OpusConfig:
        return OpusConfig(
            frame_ms=self.frame_ms,
            bitrate=self.bitrate,
            bandwidth=self.bandwidth,  # type: ignore[arg-type]
            fec=self.fec,
            dtx=self.dtx,
        )

    def _fit(self, bits: int, low: int, high: int) -> int:
        """``bits`` rounded up to a multiple of 8 within [low, high] and the KME's sizes."""
        k = self.kme_limits
        if k is not None:
            low, high = max(low, k.min_key_size), min(high, k.max_key_size)
        bits = max(low, min(high, bits))
        return bits + (-bits) % 8 if bits + (-bits) % 8 <= high else bits - bits % 8

    def pad_block_bits(self) -> int:
        """OTP: bits per pad block, :data:`PAD_BLOCK_S` (at most half the lookahead) of talk."""
        per_second = self.bitrate + self.otp_tag_bits * 1000 / self.frame_ms
        seconds = min(PAD_BLOCK_S, self.pad_lookahead_s / 2)
        return self._fit(math.ceil(per_second * seconds), *PAD_BLOCK_LIMITS)

    def call_params(self, pqc_only: bool = False) -> CallParams:
        """What the caller proposes in its ClientHello."""
        mode = self.mode or Mode.AES
        block = self.pad_block_bits()
        per_second = self.bitrate + self.otp_tag_bits * 1000 / self.frame_ms
        lookahead = math.ceil(self.pad_lookahead_s * per_second / block - 1e-9)
        return CallParams(
            mode=mode,
            rotate_frames=self.rotate_frames,
            rotate_ms=int(self.rotate_seconds * 1000),
            epoch_block_bits=self._fit(256, 128, 4096),
            otp_tag_bits=self.otp_tag_bits,
            pad_block_bits=block,
            pqc_only=pqc_only,
            handshake_qkd_bits=0 if pqc_only else self._fit(256, 128, 4096),
            lookahead=max(1, min(MAX_LOOKAHEAD_BLOCKS, lookahead)) if mode is Mode.OTP else 2,
        )
