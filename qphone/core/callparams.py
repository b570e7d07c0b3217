"""Call parameters agreed in the handshake: mode, rotation, block sizes, OTP tag length.

The initiator proposes them; they travel in the ClientHello, are covered by the transcript and
both signatures, and the responder either accepts them exactly or aborts (no negotiation, so no
downgrade).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from qphone.core.errors import MalformedMessage
from qphone.core.wire import Reader, Writer


class Mode(IntEnum):
    AES = 1  # AES-256-GCM, key rotated with every QKD block
    OTP = 2  # one-time pad + Wegman-Carter MAC

    @property
    def label(self) -> str:
        return self.name.lower()


TAG_BITS = (32, 64, 128)
ENCODED_LEN = 1 + 4 + 4 + 2 + 2 + 4 + 2 + 1 + 4 + 2 + 1


@dataclass(frozen=True)
class CallParams:
    mode: Mode = Mode.AES
    rotate_frames: int = 500  # an epoch ends after this many frames ...
    rotate_ms: int = 10_000  # ... or this many milliseconds, whichever comes first
    epoch_block_bits: int = 256  # QKD bits mixed into the chain per epoch
    otp_tag_bits: int = 64  # Wegman-Carter tag length (32, 64 or 128)
    pad_block_bits: int = 65_536  # size of the QKD keys that feed the pad stream
    handshake_qkd_bits: int = 256  # QKD bits in the handshake combiner (0 = PQC-only)
    lookahead: int = 2  # epochs (AES) or pad blocks per direction (OTP) fetched ahead of need
    grace_ms: int = 2_000  # old receive keys are kept this long after the new epoch is seen
    replay_window: int = 2_048  # frames
    pqc_only: bool = False  # True: no QKD at all (only with --allow-pqc-only)

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.rotate_frames <= 1 << 31:
            problems.append("rotate_frames must be 1..2^31")
        if not 20 <= self.rotate_ms <= 86_400_000:
            problems.append("rotate_ms must be 20 ms..24 h")
        if self.epoch_block_bits % 8 or not 128 <= self.epoch_block_bits <= 4096:
            problems.append("epoch_block_bits must be a multiple of 8 in 128..4096")
        if self.otp_tag_bits not in TAG_BITS:
            problems.append("otp_tag_bits must be 32, 64 or 128")
        if self.pad_block_bits % 8 or not 1024 <= self.pad_block_bits <= 1 << 20:
            problems.append("pad_block_bits must be a multiple of 8 in 1024..2^20")
        if self.pqc_only and self.handshake_qkd_bits:
            problems.append("a PQC-only call uses no handshake QKD bits")
        if not self.pqc_only and (
            self.handshake_qkd_bits % 8 or not 128 <= self.handshake_qkd_bits <= 4096
        ):
            problems.append("handshake_qkd_bits must be a multiple of 8 in 128..4096")
        if self.pqc_only and self.mode is Mode.OTP:
            problems.append("OTP mode needs QKD key; it cannot run PQC-only")
        if not 1 <= self.lookahead <= 16:
            problems.append("lookahead must be 1..16")
        if not 0 <= self.grace_ms <= 60_000:
            problems.append("grace_ms must be 0..60000")
        if not 64 <= self.replay_window <= 1 << 16:
            problems.append("replay_window must be 64..65536")
        if problems:
            raise ValueError("invalid call parameters: " + "; ".join(problems))

    def encode(self) -> bytes:
        return (
            Writer()
            .u8(int(self.mode))
            .u32(self.rotate_frames)
            .u32(self.rotate_ms)
            .u16(self.epoch_block_bits)
            .u16(self.otp_tag_bits)
            .u32(self.pad_block_bits)
            .u16(self.handshake_qkd_bits)
            .u8(self.lookahead)
            .u32(self.grace_ms)
            .u16(self.replay_window & 0xFFFF)
            .u8(int(self.pqc_only))
            .finish()
        )

    @staticmethod
    def read(reader: Reader) -> CallParams:
        mode = reader.u8("mode")
        if mode not in (1, 2):
            raise MalformedMessage(f"unknown mode {mode}")
        fields = (
            reader.u32("rotate_frames"),
            reader.u32("rotate_ms"),
            reader.u16("epoch_block_bits"),
            reader.u16("otp_tag_bits"),
            reader.u32("pad_block_bits"),
            reader.u16("handshake_qkd_bits"),
            reader.u8("lookahead"),
            reader.u32("grace_ms"),
            reader.u16("replay_window") or 1 << 16,
        )
        pqc = reader.u8("pqc_only")
        if pqc > 1:
            raise MalformedMessage("pqc_only flag must be 0 or 1")
        try:
            return CallParams(Mode(mode), *fields, pqc_only=bool(pqc))
        except ValueError as exc:
            raise MalformedMessage(str(exc)) from exc
