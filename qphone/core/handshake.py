"""Hybrid handshake state machines (initiator and responder), sans-I/O.

Three messages on a reliable channel::

    Initiator                                            Responder
    ClientHello  {random, SAS commitment, params,
                  X25519 pk, ML-KEM ek, identity,
                  QKD key IDs}                   ---->
                                              (ResolveQkdKeys -> dec_keys -> provide_qkd_keys)
                                                 <----  ServerHello {random, X25519 pk, ML-KEM ct,
                                                                     identity, signature, confirm}
    ClientFinish {SAS nonce, signature, confirm} ---->

The SAS is derived from the master secret, ClientHello, ServerHello and the initiator's SAS
nonce, to which the ClientHello commits (``H("qphone/1 sas commitment" || 0x00 || nonce)``,
as ZRTP's hash commitment): the responder picks its ServerHello without knowing the nonce, the
initiator picks the nonce before it sees the ServerHello, and nothing either sends later (the
signatures are randomised) enters the SAS, so a man in the middle gets one guess per attempt.

The transcript hash starts with a context holding the protocol label and the channel binding
supplied by the transport (a hash of the DTLS session's two certificates and its RFC 5705 exporter,
:mod:`qphone.core.channelbinding`), then covers every byte of every
message. Each side signs the transcript with its hybrid identity (Ed25519 + ML-DSA-65; both must
verify) and proves possession of the combined key with an HMAC (key confirmation in both
directions). The master secret is CatKDF(QKD || ML-KEM || X25519) bound to the transcript.
Any failure raises :class:`HandshakeFailed` and closes the handshake: it fails closed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from qphone.core.callparams import TAG_BITS, CallParams, Mode
from qphone.core.combiner import combine
from qphone.core.errors import (
    HandshakeFailed,
    MalformedMessage,
    PeerIdentityMismatch,
    ProposalRefused,
    UnexpectedMessage,
)
from qphone.core.events import (
    HandshakeComplete,
    HandshakeEvent,
    KeyPurpose,
    ResolveQkdKeys,
    SendControl,
)
from qphone.core.identity import (
    PUBLIC_LEN,
    SIGNATURE_LEN,
    Identity,
    PublicIdentity,
    SignatureInvalid,
)
from qphone.core.kdf import erase, hkdf_expand, hkdf_extract
from qphone.core.qkd import QkdKey
from qphone.core.sas import SAS_BYTES, sas_words
from qphone.core.wire import Reader, Writer

VERSION = 1
CLIENT_HELLO = 1
SERVER_HELLO = 2
CLIENT_FINISH = 3
RANDOM_LEN = 32
SAS_NONCE_LEN = 32
COMMITMENT_LEN = 32
X25519_LEN = 32
MLKEM_EK_LEN = 1184
MLKEM_CT_LEN = 1088
CONFIRM_LEN = 32
MAX_QKD_KEYS = 16
MAX_BINDING = 255
_LABEL = b"qphone/1 handshake"
_COMMITMENT_LABEL = b"qphone/1 sas commitment\x00"
_MITM = "(altered message, channel-binding mismatch or a man in the middle)"


class Role(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class HandshakeState(Enum):
    """Where a handshake object is; DONE and FAILED are final (keys handed over or dropped)."""

    START = "start"  # initiator: ClientHello built, not sent
    WAIT_SERVER_HELLO = "wait_server_hello"  # initiator
    WAIT_CLIENT_HELLO = "wait_client_hello"  # responder
    WAIT_QKD = "wait_qkd"  # responder: ResolveQkdKeys emitted, waiting for provide_qkd_keys
    WAIT_FINISH = "wait_finish"  # responder: ServerHello sent
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, repr=False)
class SessionSecrets:
    """Per-session secrets, all erasable buffers: the session's key schedule takes ownership of
    ``chain0`` and its control channel of the control keys, and each erases them when the
    session closes (hang-up); :meth:`erase` does it for a result no session was made of."""

    chain0: bytearray = field(repr=False)
    control_i2r: bytearray = field(repr=False)
    control_r2i: bytearray = field(repr=False)

    def erase(self) -> None:
        """Zero every secret (idempotent)."""
        for buf in (self.chain0, self.control_i2r, self.control_r2i):
            erase(buf)

    @property
    def erased(self) -> bool:
        return not any(self.chain0) and not any(self.control_i2r) and not any(self.control_r2i)


@dataclass(frozen=True)
class HandshakeResult:
    role: Role
    params: CallParams
    peer: PublicIdentity
    sas: str
    transcript_hash: bytes
    qkd_key_ids: tuple[uuid.UUID, ...]
    qkd_bits: int
    secrets: SessionSecrets = field(repr=False)


_FINAL = (HandshakeState.DONE, HandshakeState.FAILED)


@dataclass(frozen=True)
class ClientHello:
    random: bytes
    sas_commitment: bytes
    params: CallParams
    x25519: bytes
    mlkem_ek: bytes
    identity: PublicIdentity
    qkd_key_ids: tuple[uuid.UUID, ...]

    def encode(self) -> bytes:
        return (
            Writer()
            .u8(CLIENT_HELLO)
            .u8(VERSION)
            .fixed(self.random, RANDOM_LEN)
            .fixed(self.sas_commitment, COMMITMENT_LEN)
            .fixed(self.params.encode(), len(self.params.encode()))
            .fixed(self.x25519, X25519_LEN)
            .fixed(self.mlkem_ek, MLKEM_EK_LEN)
            .fixed(self.identity.encode(), PUBLIC_LEN)
            .uuids(self.qkd_key_ids)
            .finish()
        )

    @staticmethod
    def decode(data: bytes) -> ClientHello:
        r = Reader(data, "ClientHello")
        _expect_header(r, CLIENT_HELLO)
        msg = ClientHello(
            r.fixed(RANDOM_LEN, "random"),
            r.fixed(COMMITMENT_LEN, "sas_commitment"),
            CallParams.read(r),
            r.fixed(X25519_LEN, "x25519"),
            r.fixed(MLKEM_EK_LEN, "mlkem_ek"),
            PublicIdentity.decode(r.fixed(PUBLIC_LEN, "identity")),
            r.uuids("qkd_key_ids", MAX_QKD_KEYS),
        )
        r.end()
        return msg


@dataclass(frozen=True)
class ServerHello:
    random: bytes
    x25519: bytes
    mlkem_ct: bytes
    identity: PublicIdentity
    signature: bytes = b""
    confirm: bytes = b""

    def encode_core(self) -> bytes:
        return (
            Writer()
            .u8(SERVER_HELLO)
            .u8(VERSION)
            .fixed(self.random, RANDOM_LEN)
            .fixed(self.x25519, X25519_LEN)
            .fixed(self.mlkem_ct, MLKEM_CT_LEN)
            .fixed(self.identity.encode(), PUBLIC_LEN)
            .finish()
        )

    def encode(self) -> bytes:
        return self.encode_core() + self.signature + self.confirm

    @staticmethod
    def decode(data: bytes) -> ServerHello:
        r = Reader(data, "ServerHello")
        _expect_header(r, SERVER_HELLO)
        msg = ServerHello(
            r.fixed(RANDOM_LEN, "random"),
            r.fixed(X25519_LEN, "x25519"),
            r.fixed(MLKEM_CT_LEN, "mlkem_ct"),
            PublicIdentity.decode(r.fixed(PUBLIC_LEN, "identity")),
            r.fixed(SIGNATURE_LEN, "signature"),
            r.fixed(CONFIRM_LEN, "confirm"),
        )
        r.end()
        return msg


@dataclass(frozen=True)
class ClientFinish:
    sas_nonce: bytes
    signature: bytes
    confirm: bytes

    def encode(self) -> bytes:
        return bytes((CLIENT_FINISH, VERSION)) + self.sas_nonce + self.signature + self.confirm

    @staticmethod
    def decode(data: bytes) -> ClientFinish:
        r = Reader(data, "ClientFinish")
        _expect_header(r, CLIENT_FINISH)
        msg = ClientFinish(
            r.fixed(SAS_NONCE_LEN, "sas_nonce"),
            r.fixed(SIGNATURE_LEN, "signature"),
            r.fixed(CONFIRM_LEN, "confirm"),
        )
        r.end()
        return msg


def _expect_header(r: Reader, msg_type: int) -> None:
    got = r.u8("type")
    if got != msg_type:
        raise MalformedMessage(f"expected message type {msg_type}, got {got}")
    version = r.u8("version")
    if version != VERSION:
        raise MalformedMessage(f"unsupported protocol version {version} (this is {VERSION})")


def channel_context(channel_binding: bytes) -> bytes:
    if not 16 <= len(channel_binding) <= MAX_BINDING:
        raise ValueError(
            "channel binding must be 16..255 bytes (e.g. the transport's DTLS session binding)"
        )
    return _LABEL + b"\x00" + bytes((len(channel_binding),)) + channel_binding


def _h(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


@dataclass
class _KeyMaterial:
    master: bytes
    fin_i: bytes
    fin_r: bytes


def _derive_master(
    context: bytes, qkd: bytes, mlkem_ss: bytes, x_ss: bytes, ch: bytes, sh_core: bytes
) -> _KeyMaterial:
    master = combine(qkd=qkd, mlkem=mlkem_ss, x25519=x_ss, context=context, ma=ch, mb=sh_core)
    return _KeyMaterial(
        master,
        hkdf_expand(master, b"qphone/1 finished initiator"),
        hkdf_expand(master, b"qphone/1 finished responder"),
    )


def sas_commitment(sas_nonce: bytes) -> bytes:
    """What the ClientHello carries: a hash commitment to the initiator's SAS nonce."""
    return hashlib.sha256(_COMMITMENT_LABEL + sas_nonce).digest()


def derive_sas(master: bytes, context: bytes, ch: bytes, sh: bytes, sas_nonce: bytes) -> str:
    """The SAS words: from the master secret and what was fixed before either side could see
    the other's contribution (CH with its commitment, SH, the committed nonce), nothing else."""
    prk = hkdf_extract(_h(context, ch, sh, sas_nonce), master)
    return sas_words(hkdf_expand(prk, b"qphone/1 sas", SAS_BYTES))


def _session(
    role: Role,
    params: CallParams,
    peer: PublicIdentity,
    keys: _KeyMaterial,
    transcript: bytes,
    qkd_ids: tuple[uuid.UUID, ...],
    sas: str,
) -> HandshakeComplete:
    prk = hkdf_extract(transcript, keys.master)
    secrets = SessionSecrets(
        bytearray(hkdf_expand(prk, b"qphone/1 chain 0")),
        bytearray(hkdf_expand(prk, b"qphone/1 control i2r")),
        bytearray(hkdf_expand(prk, b"qphone/1 control r2i")),
    )
    return HandshakeComplete(
        HandshakeResult(
            role, params, peer, sas, transcript, qkd_ids, params.handshake_qkd_bits, secrets
        )
    )


def _describe(exc: Exception) -> str:
    """An exception's text; its type too when it is not one of the expected rejections."""
    if isinstance(exc, MalformedMessage | SignatureInvalid | ValueError) and str(exc):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _exchange(private: x25519.X25519PrivateKey, public: bytes, where: str) -> bytes:
    """X25519, refusing a low-order public key (all-zero shared secret) with a clear message."""
    try:
        return private.exchange(x25519.X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:
        raise HandshakeFailed(
            f"{where} has an invalid X25519 public key (a low-order point: the shared secret "
            "would be zero)"
        ) from exc


def _check_peer(expected: PublicIdentity | None, got: PublicIdentity) -> None:
    if expected is not None and not hmac.compare_digest(expected.encode(), got.encode()):
        raise PeerIdentityMismatch(got.fingerprint(), expected.fingerprint())


def _qkd_secret(ids: tuple[uuid.UUID, ...], keys: Sequence[QkdKey], bits: int, who: str) -> bytes:
    if tuple(k.key_id for k in keys) != ids:
        raise HandshakeFailed(f"{who}: QKD keys do not match the key IDs of the handshake")
    material = b"".join(k.material for k in keys)
    if len(material) * 8 != bits:
        raise HandshakeFailed(f"{who}: QKD keys hold {len(material) * 8} bits, need {bits}")
    return material


class Initiator:
    """The calling side. It brings the QKD key IDs its KME handed out (ETSI 014 master SAE)."""

    def __init__(
        self,
        identity: Identity,
        params: CallParams,
        qkd_keys: Sequence[QkdKey],
        channel_binding: bytes,
        expected_peer: PublicIdentity | None = None,
    ) -> None:
        self._identity = identity
        self._params = params
        self._context = channel_context(channel_binding)
        self._expected_peer = expected_peer
        ids = tuple(k.key_id for k in qkd_keys)
        if len(ids) > MAX_QKD_KEYS:
            raise ValueError(f"at most {MAX_QKD_KEYS} QKD keys per handshake")
        self._qkd = (
            b""
            if params.pqc_only
            else _qkd_secret(ids, qkd_keys, params.handshake_qkd_bits, "initiator")
        )
        if params.pqc_only and ids:
            raise ValueError("a PQC-only call takes no QKD keys")
        # ephemeral keys: dropped when the handshake ends (OpenSSL frees and cleanses them)
        x = x25519.X25519PrivateKey.generate()
        kem = mlkem.MLKEM768PrivateKey.generate()
        self._x: x25519.X25519PrivateKey | None = x
        self._kem: mlkem.MLKEM768PrivateKey | None = kem
        self._sas_nonce = os.urandom(SAS_NONCE_LEN)  # revealed in the ClientFinish
        self._hello = ClientHello(
            os.urandom(RANDOM_LEN),
            sas_commitment(self._sas_nonce),
            params,
            x.public_key().public_bytes_raw(),
            kem.public_key().public_bytes_raw(),
            identity.public,
            ids,
        ).encode()
        self._state = HandshakeState.START

    @property
    def state(self) -> HandshakeState:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state in _FINAL

    def start(self) -> bytes:
        if self._state is not HandshakeState.START:
            raise UnexpectedMessage("handshake already started")
        self._state = HandshakeState.WAIT_SERVER_HELLO
        return self._hello

    def receive(self, data: bytes) -> list[HandshakeEvent]:
        """Take the ServerHello; any failure (of a parser, of the crypto library, of a check)
        raises HandshakeFailed and closes the handshake."""
        if self._state is not HandshakeState.WAIT_SERVER_HELLO:
            raise UnexpectedMessage(f"initiator got a message in state {self._state.value}")
        try:
            return self._on_server_hello(data)
        except HandshakeFailed:
            self._fail()
            raise
        except Exception as exc:
            self._fail()
            raise HandshakeFailed(f"ServerHello rejected: {_describe(exc)}") from exc

    def fail(self, reason: str) -> None:
        """Abort from outside (e.g. the transport failed); raises HandshakeFailed."""
        self._fail()
        raise HandshakeFailed(reason)

    def _fail(self) -> None:
        self._state = HandshakeState.FAILED
        self._forget()

    def _forget(self) -> None:
        self._qkd = b""
        self._sas_nonce = b""
        self._x = self._kem = None

    def _on_server_hello(self, data: bytes) -> list[HandshakeEvent]:
        sh = ServerHello.decode(data)
        _check_peer(self._expected_peer, sh.identity)
        core = sh.encode_core()
        assert self._x is not None and self._kem is not None
        x_ss = _exchange(self._x, sh.x25519, "ServerHello")
        kem_ss = self._kem.decapsulate(sh.mlkem_ct)
        keys = _derive_master(self._context, self._qkd, kem_ss, x_ss, self._hello, core)
        try:
            sh.identity.verify(
                sh.signature, _h(self._context, self._hello, core), b"qphone/1 responder"
            )
        except SignatureInvalid as exc:
            raise HandshakeFailed(
                f"responder's transcript signature failed: {exc} {_MITM}"
            ) from None
        expect = hmac.new(
            keys.fin_r, _h(self._context, self._hello, core, sh.signature), "sha256"
        ).digest()
        if not hmac.compare_digest(expect, sh.confirm):
            raise HandshakeFailed(
                "key confirmation from responder failed: different QKD keys at the two KMEs "
                + _MITM
            )
        nonce = self._sas_nonce
        th = _h(self._context, self._hello, data, nonce)
        sig = self._identity.sign(th, b"qphone/1 initiator")
        confirm = hmac.new(keys.fin_i, _h(self._context, self._hello, data, nonce, sig), "sha256")
        finish = ClientFinish(nonce, sig, confirm.digest()).encode()
        transcript = _h(self._context, self._hello, data, finish)
        done = _session(
            Role.INITIATOR,
            self._params,
            sh.identity,
            keys,
            transcript,
            ClientHello.decode(self._hello).qkd_key_ids,
            derive_sas(keys.master, self._context, self._hello, data, nonce),
        )
        self._state = HandshakeState.DONE
        self._forget()
        return [SendControl(finish), done]


MAX_FRAME_MS = 60  # the longest frame qphone sends: an epoch of n frames lasts at most n x this


@dataclass(frozen=True)
class ResponderPolicy:
    """What the answering side accepts; a proposal outside it raises ProposalRefused whose
    ``setting`` names the rule (the profile's ``[policy]`` keys, ``mode``, ``allow_pqc_only``).

    The defaults are safe: tags of at least 64 bits, epochs of at most 60 s and 3000 frames.
    """

    allowed_modes: frozenset[Mode] = frozenset({Mode.AES, Mode.OTP})
    allow_pqc_only: bool = False
    expected_peer: PublicIdentity | None = None
    required_mode: Mode | None = None  # e.g. --mode otp on the answering side: refuse anything else
    min_otp_tag_bits: int = 64
    max_epoch_ms: int = 60_000  # AES: the longest an epoch may last
    max_epoch_frames: int = 3000  # AES: the most frames an epoch may hold

    @staticmethod
    def anything_valid() -> ResponderPolicy:
        """Accept every proposal CallParams allows (in-memory demos and benchmarks only)."""
        return ResponderPolicy(
            allow_pqc_only=True,
            min_otp_tag_bits=min(TAG_BITS),
            max_epoch_ms=86_400_000,
            max_epoch_frames=1 << 31,
        )

    def check(self, params: CallParams) -> None:
        """Raise ProposalRefused unless ``params`` are within this policy."""
        if params.mode not in self.allowed_modes or (
            self.required_mode is not None and params.mode is not self.required_mode
        ):
            raise ProposalRefused(
                f"caller asked for mode {params.mode.label}, which is not allowed", "mode"
            )
        if params.pqc_only and not self.allow_pqc_only:
            raise ProposalRefused(
                "caller offers a PQC-only call (no QKD key); "
                "answer with --allow-pqc-only to accept",
                "allow_pqc_only",
            )
        if params.mode is Mode.OTP and params.otp_tag_bits < self.min_otp_tag_bits:
            raise ProposalRefused(
                f"caller proposes {params.otp_tag_bits}-bit OTP tags, shorter than the "
                f"{self.min_otp_tag_bits} bits this side accepts",
                "min_otp_tag_bits",
            )
        if params.mode is Mode.AES:
            lasts = min(params.rotate_ms, params.rotate_frames * MAX_FRAME_MS)
            if lasts > self.max_epoch_ms:
                raise ProposalRefused(
                    f"caller proposes key epochs of up to {lasts / 1000:g} s, longer than the "
                    f"{self.max_epoch_ms / 1000:g} s this side accepts",
                    "max_epoch_seconds",
                )
            if params.rotate_frames > self.max_epoch_frames:
                raise ProposalRefused(
                    f"caller proposes key epochs of {params.rotate_frames} frames, more than "
                    f"the {self.max_epoch_frames} this side accepts",
                    "max_epoch_frames",
                )


class Responder:
    """The answering side. It resolves the initiator's QKD key IDs through its own KME."""

    def __init__(
        self, identity: Identity, channel_binding: bytes, policy: ResponderPolicy | None = None
    ) -> None:
        self._identity = identity
        self._context = channel_context(channel_binding)
        self._policy = policy or ResponderPolicy()
        self._state = HandshakeState.WAIT_CLIENT_HELLO
        self._hello = b""
        self._ch: ClientHello | None = None
        self._sh = b""
        self._keys: _KeyMaterial | None = None

    @property
    def state(self) -> HandshakeState:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state in _FINAL

    def _fail(self) -> None:
        self._state = HandshakeState.FAILED
        self._keys = None

    def receive(self, data: bytes) -> list[HandshakeEvent]:
        handlers = {
            HandshakeState.WAIT_CLIENT_HELLO: self._on_client_hello,
            HandshakeState.WAIT_FINISH: self._on_finish,
        }
        handler = handlers.get(self._state)
        if handler is None:
            state = self._state
            self._fail()
            raise UnexpectedMessage(f"responder got a message in state {state.value}")
        try:
            return handler(data)
        except HandshakeFailed:
            self._fail()
            raise
        except Exception as exc:
            self._fail()
            raise HandshakeFailed(f"handshake message rejected: {_describe(exc)}") from exc

    def _on_client_hello(self, data: bytes) -> list[HandshakeEvent]:
        ch = ClientHello.decode(data)
        params, policy = ch.params, self._policy
        policy.check(params)
        if not params.pqc_only and not ch.qkd_key_ids:
            raise HandshakeFailed("ClientHello carries no QKD key IDs")
        _check_peer(policy.expected_peer, ch.identity)
        self._hello, self._ch = bytes(data), ch
        if params.pqc_only:
            return self._reply(b"")
        self._state = HandshakeState.WAIT_QKD
        return [ResolveQkdKeys(KeyPurpose.HANDSHAKE, ch.qkd_key_ids, params.handshake_qkd_bits)]

    def provide_qkd_keys(self, keys: Sequence[QkdKey]) -> list[HandshakeEvent]:
        """Hand in the QKD keys resolved for the :class:`~qphone.core.events.ResolveQkdKeys`;
        returns the ServerHello."""
        if self._state is not HandshakeState.WAIT_QKD or self._ch is None:
            raise UnexpectedMessage(f"no QKD keys expected in state {self._state.value}")
        try:
            qkd = _qkd_secret(
                self._ch.qkd_key_ids, keys, self._ch.params.handshake_qkd_bits, "responder"
            )
            return self._reply(qkd)
        except HandshakeFailed:
            self._fail()
            raise
        except Exception as exc:
            self._fail()
            raise HandshakeFailed(f"handshake failed: {_describe(exc)}") from exc

    def fail(self, reason: str) -> None:
        """Abort from outside (e.g. the KME could not resolve the key IDs)."""
        self._fail()
        raise HandshakeFailed(reason)

    def _reply(self, qkd: bytes) -> list[HandshakeEvent]:
        assert self._ch is not None
        ch = self._ch
        x = x25519.X25519PrivateKey.generate()
        x_ss = _exchange(x, ch.x25519, "ClientHello")
        try:
            kem_ss, ct = mlkem.MLKEM768PublicKey.from_public_bytes(ch.mlkem_ek).encapsulate()
        except ValueError as exc:
            raise HandshakeFailed(f"ClientHello has an invalid ML-KEM key: {exc}") from exc
        sh = ServerHello(
            os.urandom(RANDOM_LEN), x.public_key().public_bytes_raw(), ct, self._identity.public
        )
        core = sh.encode_core()
        keys = _derive_master(self._context, qkd, kem_ss, x_ss, self._hello, core)
        sig = self._identity.sign(_h(self._context, self._hello, core), b"qphone/1 responder")
        confirm = hmac.new(keys.fin_r, _h(self._context, self._hello, core, sig), "sha256")
        self._sh = core + sig + confirm.digest()
        self._keys = keys
        self._state = HandshakeState.WAIT_FINISH
        return [SendControl(self._sh)]

    def _on_finish(self, data: bytes) -> list[HandshakeEvent]:
        assert self._ch is not None and self._keys is not None
        fin = ClientFinish.decode(data)
        if not hmac.compare_digest(sas_commitment(fin.sas_nonce), self._ch.sas_commitment):
            raise HandshakeFailed(
                "the initiator's SAS nonce does not match the commitment in its ClientHello "
                + _MITM
            )
        nonce = fin.sas_nonce
        th = _h(self._context, self._hello, self._sh, nonce)
        try:
            self._ch.identity.verify(fin.signature, th, b"qphone/1 initiator")
        except SignatureInvalid as exc:
            raise HandshakeFailed(
                f"initiator's transcript signature failed: {exc} {_MITM}"
            ) from None
        expect = hmac.new(
            self._keys.fin_i,
            _h(self._context, self._hello, self._sh, nonce, fin.signature),
            "sha256",
        ).digest()
        if not hmac.compare_digest(expect, fin.confirm):
            raise HandshakeFailed("key confirmation from initiator failed " + _MITM)
        transcript = _h(self._context, self._hello, self._sh, data)
        done = _session(
            Role.RESPONDER,
            self._ch.params,
            self._ch.identity,
            self._keys,
            transcript,
            self._ch.qkd_key_ids,
            derive_sas(self._keys.master, self._context, self._hello, self._sh, nonce),
        )
        self._state = HandshakeState.DONE
        self._keys = None
        return [done]
