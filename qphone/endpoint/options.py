"""The options of one call endpoint (what ``qphone call`` / ``qphone answer`` take)."""

from __future__ import annotations

from dataclasses import dataclass, field

from qphone.audio.opus import OpusConfig
from qphone.core.callparams import CallParams, Mode
from qphone.transport.config import TransportConfig


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
    pad_block_bits: int = 65_536
    input: str | None = None  # WAV path, sound device (name/index, "device:" prefix), None=silence
    output: str | None = None  # WAV path, sound device, None = discard
    duration: float | None = None
    allow_pqc_only: bool = False
    trust_new_identity: bool = False
    status: bool | None = None  # None: live status line when stderr is a terminal
    transport: TransportConfig = field(default_factory=TransportConfig)
    kme_wait: float = 10.0  # seconds to wait for key when the KME's pool is empty

    def opus(self) -> OpusConfig:
        return OpusConfig(
            frame_ms=self.frame_ms,
            bitrate=self.bitrate,
            bandwidth=self.bandwidth,  # type: ignore[arg-type]
            fec=self.fec,
            dtx=self.dtx,
        )

    def call_params(self, pqc_only: bool = False) -> CallParams:
        """What the caller proposes in its ClientHello."""
        return CallParams(
            mode=self.mode or Mode.AES,
            rotate_frames=self.rotate_frames,
            rotate_ms=int(self.rotate_seconds * 1000),
            otp_tag_bits=self.otp_tag_bits,
            pad_block_bits=self.pad_block_bits,
            pqc_only=pqc_only,
            handshake_qkd_bits=0 if pqc_only else 256,
        )
