"""Messages of the post-processing protocol on the classical channel, and their strict wire codec.

Every message is a frozen dataclass with a :class:`MessageType`; its wire form is one type byte
followed by its fields in declaration order: unsigned integers big-endian (``u8``/``u16``/``u32``/
``u64``), ``f64`` IEEE-754 (finite only), ``bool`` one byte 0/1, and byte strings / text with a
``u32`` length prefix bounded per field. Decoding is strict: unknown types, values out of range,
lengths over their bound, trailing bytes and non-UTF-8 text are refused with
:class:`MessageError` (the channel then drops the message; no state changes).

What each message discloses is in docs/bb84.md ("Messages"). No message carries key bits: the
only secret-dependent contents are Alice's parities (Cascade), the verification tag, and the
X-basis (test) bits, all counted or discarded.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass, fields
from typing import Any, ClassVar

MAX_MESSAGE_BYTES = 96 << 20
MAX_BLOB = 64 << 20
MAX_TEXT = 4096


class MessageError(ValueError):
    """A classical-channel message that does not decode (refused; nothing changes)."""


class MessageType(enum.IntEnum):
    HELLO = 1
    DETECTIONS = 2
    SIFTING = 3
    ESTIMATE = 4
    PARITY_REQUEST = 5
    PARITY_ANSWER = 6
    RECONCILED = 7
    VERIFY = 8
    CONFIRM = 9
    COMMIT = 10
    ABORT = 11
    HEARTBEAT = 12
    BLOCK_REPORT = 13


class AbortReason(enum.IntEnum):
    """Why a block yields no key (the status extension shows the lower-case name)."""

    QBER_ABOVE_THRESHOLD = 1
    NO_KEY_BOUND = 2
    NO_SECRET_KEY = 3
    VERIFICATION_FAILED = 4
    RECONCILIATION_FAILED = 5
    PROTOCOL_ERROR = 6
    CONNECTION_LOST = 7
    TOO_FEW_DETECTIONS = 8

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def eavesdropper(self) -> bool:
        return self in (AbortReason.QBER_ABOVE_THRESHOLD, AbortReason.NO_KEY_BOUND)


# field kinds: name -> (struct format or None for length-prefixed, bound)
_INTS = {"u8": ">B", "u16": ">H", "u32": ">I", "u64": ">Q"}


@dataclass(frozen=True)
class Hello:
    TYPE: ClassVar[MessageType] = MessageType.HELLO
    SPEC: ClassVar[tuple[str, ...]] = ("text", "text", "bytes", "u64", "u64", "text")
    link: str
    role: str  # a Role value (the peer's claim: the module compares it with Role)
    nonce: bytes  # the peer's connection nonce (binds this session's first message)
    committed_below: int  # transmitter: every block it stored is below this (1 + the last one)
    stock: int  # keys stocked for the northbound API
    protocol: str  # transmitter: the protocol parameters (canonical JSON); receiver: ""


@dataclass(frozen=True)
class Detections:
    """Bob -> Alice: which pulses clicked (first position + u32 gaps) and Bob's bases."""

    TYPE: ClassVar[MessageType] = MessageType.DETECTIONS
    SPEC: ClassVar[tuple[str, ...]] = ("u64", "u32", "u32", "bool", "u64", "u32", "bytes", "bytes")
    block: int
    batch: int
    frames_upto: int  # the batch covers the block's frames below this number
    last: bool  # the last batch of the block
    first_position: int
    count: int
    gaps: bytes  # (count - 1) little-endian u32: position[i+1] - position[i]
    bases: bytes  # packed bits, 1 = X


@dataclass(frozen=True)
class Sifting:
    """Alice -> Bob: her bases, the intensity of each basis-matched click, her X (test) bits."""

    TYPE: ClassVar[MessageType] = MessageType.SIFTING
    SPEC: ClassVar[tuple[str, ...]] = ("u64", "u32", "bytes", "bytes", "bytes")
    block: int
    batch: int
    bases: bytes  # packed bits per detection, 1 = X
    intensities: bytes  # one byte per matched detection (0 mu, 1 nu, 2 vacuum)
    x_bits: bytes  # packed: Alice's bits of the matched X detections (disclosed, discarded)


@dataclass(frozen=True)
class Estimate:
    """Bob -> Alice: errors he found among the X-basis bits, per intensity."""

    TYPE: ClassVar[MessageType] = MessageType.ESTIMATE
    SPEC: ClassVar[tuple[str, ...]] = ("u64", "u64", "u64", "u64", "bytes")
    block: int
    x_errors_mu: int
    x_errors_nu: int
    x_errors_vacuum: int
    cascade_seed: bytes  # public random seed of the Cascade permutations (Bob's CSPRNG)


@dataclass(frozen=True)
class ParityRequest:
    """Bob -> Alice: start a Cascade pass, or parities of ranges of a pass's shuffled string."""

    TYPE: ClassVar[MessageType] = MessageType.PARITY_REQUEST
    SPEC: ClassVar[tuple[str, ...]] = ("u64", "u32", "u32", "u32", "bytes", "bytes", "bytes")
    block: int
    group: int
    round: int
    start_block: int  # > 0: start the next pass with top-level blocks of this size
    passes: bytes  # u8 per range
    lo: bytes  # little-endian u32 per range
    hi: bytes  # little-endian u32 per range


@dataclass(frozen=True)
class ParityAnswer:
    TYPE: ClassVar[MessageType] = MessageType.PARITY_ANSWER
    SPEC: ClassVar[tuple[str, ...]] = ("u64", "u32", "u32", "u32", "bytes")
    block: int
    group: int
    round: int
    count: int
    parities: bytes  # packed bits (the leak)


@dataclass(frozen=True)
class Reconciled:
    """Bob -> Alice: Cascade finished; the number of errors it corrected (the exact QBER)."""

    TYPE: ClassVar[MessageType] = MessageType.RECONCILED
    SPEC: ClassVar[tuple[str, ...]] = ("u64", "u64", "u64")
    block: int
    errors: int
    leaked_bits: int


@dataclass(frozen=True)
class Verify:
    """Alice -> Bob: verification hash (Poly1305 key and tag), the PA seed and the key plan."""

    TYPE: ClassVar[MessageType] = MessageType.VERIFY
    SPEC: ClassVar[tuple[str, ...]] = ("u64", "bytes", "bytes", "u64", "u64", "bytes")
    block: int
    hash_key: bytes  # 32 random bytes: the hash function (public once the strings are fixed)
    tag: bytes  # 16 bytes: Poly1305 of Alice's key-basis string
    secret_bits: int  # the finite-key length l
    auth_refill_bits: int  # of l, taken for the classical channel's authentication
    pa_seed: bytes  # a || b of the multiply-add-shift hash, 2 (n + l) bits


@dataclass(frozen=True)
class Confirm:
    """Bob -> Alice: the block's key is stored at the receiver (ok), or why not."""

    TYPE: ClassVar[MessageType] = MessageType.CONFIRM
    SPEC: ClassVar[tuple[str, ...]] = ("u64", "bool", "u8", "u64")
    block: int
    ok: bool
    reason: int  # AbortReason when not ok, else 0
    stock: int


@dataclass(frozen=True)
class Commit:
    """Alice -> Bob: the transmitter stored the block too; its keys may be delivered."""

    TYPE: ClassVar[MessageType] = MessageType.COMMIT
    SPEC: ClassVar[tuple[str, ...]] = ("u64",)
    block: int


@dataclass(frozen=True)
class Abort:
    TYPE: ClassVar[MessageType] = MessageType.ABORT
    SPEC: ClassVar[tuple[str, ...]] = ("u64", "u8")
    block: int
    reason: int


@dataclass(frozen=True)
class Heartbeat:
    TYPE: ClassVar[MessageType] = MessageType.HEARTBEAT
    SPEC: ClassVar[tuple[str, ...]] = ("u64",)
    stock: int


@dataclass(frozen=True)
class BlockReport:
    """Transmitter -> receiver, emulated fidelity: a block's public statistics and decision
    (``keyserver.qkd.emulation``). ``reason`` 0 = key; ``test`` = a block run while the stock
    is full, whose key is discarded (its statistics still feed the alarm)."""

    TYPE: ClassVar[MessageType] = MessageType.BLOCK_REPORT
    SPEC: ClassVar[tuple[str, ...]] = ("u64",) * 15 + ("u8", "bool")
    block: int
    pulses: int
    n_z0: int
    n_z1: int
    n_z2: int
    n_x0: int
    n_x1: int
    n_x2: int
    m_x0: int
    m_x1: int
    m_x2: int
    errors_z: int
    leaked_bits: int
    secret_bits: int
    auth_refill_bits: int
    reason: int
    test: bool


Message = (
    Hello
    | Detections
    | Sifting
    | Estimate
    | ParityRequest
    | ParityAnswer
    | Reconciled
    | Verify
    | Confirm
    | Commit
    | Abort
    | Heartbeat
    | BlockReport
)
MESSAGE_CLASSES: tuple[type[Any], ...] = (
    Hello,
    Detections,
    Sifting,
    Estimate,
    ParityRequest,
    ParityAnswer,
    Reconciled,
    Verify,
    Confirm,
    Commit,
    Abort,
    Heartbeat,
    BlockReport,
)
_BY_TYPE: dict[int, type[Any]] = {int(c.TYPE): c for c in MESSAGE_CLASSES}


def _check_spec() -> None:
    for cls in MESSAGE_CLASSES:
        if len(fields(cls)) != len(cls.SPEC):
            raise AssertionError(f"{cls.__name__}: SPEC does not match its fields")


_check_spec()


_PLANS: dict[type[Any], tuple[tuple[str, str], ...]] = {
    cls: tuple((f.name, kind) for f, kind in zip(fields(cls), cls.SPEC, strict=True))
    for cls in MESSAGE_CLASSES
}


def encode(message: Message) -> bytes:
    """Wire form of ``message`` (raises MessageError for a value its field cannot carry)."""
    return b"".join(encode_parts(message))


def encode_parts(message: Message) -> list[bytes]:
    """The wire form as pieces (joined once by the caller, e.g. with the frame around it)."""
    out = [bytes([int(message.TYPE)])]
    for name, kind in _PLANS[type(message)]:
        value = getattr(message, name)
        if kind in _INTS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise MessageError(f"{name} must be an integer")
            try:
                out.append(struct.pack(_INTS[kind], value))
            except struct.error:
                raise MessageError(f"{name} out of range for {kind}") from None
        elif kind == "bool":
            out.append(b"\x01" if value else b"\x00")
        elif kind == "f64":
            if not math.isfinite(value):
                raise MessageError(f"{name} must be finite")
            out.append(struct.pack(">d", value))
        else:
            data = value.encode("utf-8") if kind == "text" else bytes(value)
            bound = MAX_TEXT if kind == "text" else MAX_BLOB
            if len(data) > bound:
                raise MessageError(f"{name} longer than {bound} bytes")
            out.append(struct.pack(">I", len(data)))
            out.append(data)
    return out


def decode(data: bytes | memoryview) -> Message:
    """Strictly decode one message; MessageError for anything malformed."""
    if not data:
        raise MessageError("empty message")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError("message too long")
    cls = _BY_TYPE.get(data[0])
    if cls is None:
        raise MessageError(f"unknown message type {data[0]}")
    pos = 1
    values: list[Any] = []
    view = memoryview(data)
    for name, kind in _PLANS[cls]:
        if kind in _INTS:
            size = struct.calcsize(_INTS[kind])
            if pos + size > len(data):
                raise MessageError(f"{cls.__name__}.{name}: truncated")
            values.append(struct.unpack_from(_INTS[kind], data, pos)[0])
            pos += size
        elif kind == "bool":
            if pos >= len(data) or data[pos] > 1:
                raise MessageError(f"{cls.__name__}.{name}: not a boolean")
            values.append(data[pos] == 1)
            pos += 1
        elif kind == "f64":
            if pos + 8 > len(data):
                raise MessageError(f"{cls.__name__}.{name}: truncated")
            v = struct.unpack_from(">d", data, pos)[0]
            if not math.isfinite(v):
                raise MessageError(f"{cls.__name__}.{name}: not finite")
            values.append(v)
            pos += 8
        else:
            if pos + 4 > len(data):
                raise MessageError(f"{cls.__name__}.{name}: truncated")
            (length,) = struct.unpack_from(">I", data, pos)
            pos += 4
            bound = MAX_TEXT if kind == "text" else MAX_BLOB
            if length > bound or pos + length > len(data):
                raise MessageError(f"{cls.__name__}.{name}: bad length")
            chunk = bytes(view[pos : pos + length])
            pos += length
            if kind == "text":
                try:
                    values.append(chunk.decode("utf-8"))
                except UnicodeDecodeError:
                    raise MessageError(f"{cls.__name__}.{name}: not UTF-8") from None
            else:
                values.append(chunk)
    if pos != len(data):
        raise MessageError(f"{cls.__name__}: {len(data) - pos} trailing bytes")
    message: Message = cls(*values)
    return message
