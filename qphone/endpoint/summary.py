"""The call summary: one :class:`CallSummary` per call, what ``--json`` prints.

:meth:`CallSummary.to_json` gives the JSON object (field order as documented in the README);
``rtt_ms`` and ``transport`` appear once the transport was set up, ``error`` on failure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from qphone.core.callparams import Mode
from qphone.core.errors import FrameReplayed
from qphone.core.handshake import HandshakeResult
from qphone.core.keyaccounting import KeyAccounting
from qphone.endpoint.keyroute import RouteReport
from qphone.endpoint.outcome import CallEnd
from qphone.endpoint.playout import Playout
from qphone.endpoint.state import CallCounters
from qphone.transport.stats import TransportStats


@dataclass
class SetupTimes:
    """Milliseconds spent setting the call up (filled in by the endpoint as it goes)."""

    connect_ms: float = 0.0  # signaling + ICE + DTLS (+ SCTP)
    handshake_ms: float = 0.0  # the hybrid handshake on the control channel
    kme_ms: float = 0.0  # KME requests before the call (enc_keys or dec_keys)


@dataclass(frozen=True)
class ProcessingTimes:
    """Mean processing time per frame, in µs, by stage."""

    encode: float
    protect: float
    unprotect: float
    decode: float


@dataclass(frozen=True)
class TransportCounts:
    """The transport's own frame counters (before unprotect)."""

    frames_sent: int
    frames_received: int
    frames_lost: int


@dataclass(frozen=True)
class KeyTotals:
    """QKD bits of this side: drawn from its KME, used to protect the call, wasted.

    ``drawn`` counts every key the KME delivered (enc_keys at the caller, dec_keys at the
    answerer; the same keys reach both ends, so the two sides' figures are about equal and the
    call's total is the caller's); ``used`` protected something (handshake, epochs, pad and MAC
    of both directions); ``wasted = drawn - used`` was erased unused (pad held ahead of need at
    hang-up, keys that arrived after it)."""

    drawn: int = 0
    used: int = 0

    @property
    def wasted(self) -> int:
        return self.drawn - self.used


@dataclass(frozen=True)
class PadTimeline:
    """When an OTP call's pad ran short and how long its key took, in seconds after talking
    started (negative: before): each run of frames unsent for want of pad (start, frames) and,
    at the caller, each key fetch (asked, seconds its successful requests took, seconds until
    the keys were delivered, waits for an empty pool included, bits; the handshake key
    first)."""

    unsent: tuple[tuple[float, int], ...]
    key_fetches: tuple[tuple[float, float, float, int], ...]
    hedges: tuple[int, int] = (0, 0)  # second fetches opened beside a late one; in vain

    def to_json(self) -> dict[str, Any]:
        return {
            "unsent": [[round(t, 3), n] for t, n in self.unsent],
            "key_fetches": [
                [round(t, 3), round(took, 3), round(total, 3), bits]
                for t, took, total, bits in self.key_fetches
            ],
            "hedges": list(self.hedges),
        }


def pad_timeline(
    counters: CallCounters,
    fetch_log: list[tuple[float, float, float, int]],
    hedges: tuple[int, int] = (0, 0),
) -> PadTimeline | None:
    """The pad timeline of a call that started talking (None: it never did)."""
    start = counters.talk_started
    if start is None:
        return None
    return PadTimeline(
        tuple(counters.unsent_spells),
        tuple((asked - start, took, total, bits) for asked, took, total, bits in fetch_log),
        hedges,
    )


@dataclass(frozen=True)
class CallSummary:
    sas: str
    mode: str
    role: str | None
    pqc_only: bool
    peer: str
    peer_fingerprint: str | None
    peer_pin: str
    handshake_ms: float
    connect_ms: float
    kme_ms: float
    frames_sent: int
    frames_received: int
    frames_unsent_no_key: int
    frames_lost: int
    frames_concealed: int
    frames_fec_recovered: int
    frames_late: int
    frames_rejected: dict[str, int]
    frames_misplaced: int
    duplicates_dropped: int
    control_ignored: int
    epochs: int
    epochs_tx: list[int]
    epochs_rx: list[int]
    qkd_bits_consumed: int
    qkd_bits: dict[str, int]
    keys: KeyTotals
    pad_left_bits: int
    jitter_buffer_ms: float
    duration_s: float
    processing_us_per_frame: ProcessingTimes
    end: CallEnd | None
    warnings: list[str]
    rtt_ms: float | None = None
    transport: TransportCounts | None = None
    error: str | None = None
    route: RouteReport | None = None  # the caller's: the KMS route of its keys and their cost
    media_priority: str = ""  # real-time, or what it fell back to and why
    pad_timeline: PadTimeline | None = None  # OTP: when pad ran short, how long key took

    @property
    def end_reason(self) -> str:
        return str(self.end) if self.end is not None else ""

    @property
    def ended_by(self) -> str | None:
        return self.end.by.value if self.end is not None else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sas": self.sas,
            "mode": self.mode,
            "role": self.role,
            "pqc_only": self.pqc_only,
            "peer": self.peer,
            "peer_fingerprint": self.peer_fingerprint,
            "peer_pin": self.peer_pin,
            "handshake_ms": self.handshake_ms,
            "connect_ms": self.connect_ms,
            "kme_ms": self.kme_ms,
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
            "frames_unsent_no_key": self.frames_unsent_no_key,
            "frames_lost": self.frames_lost,
            "frames_concealed": self.frames_concealed,
            "frames_fec_recovered": self.frames_fec_recovered,
            "frames_late": self.frames_late,
            "frames_rejected": dict(self.frames_rejected),
            "frames_misplaced": self.frames_misplaced,
            "duplicates_dropped": self.duplicates_dropped,
            "control_ignored": self.control_ignored,
            "epochs": self.epochs,
            "epochs_tx": list(self.epochs_tx),
            "epochs_rx": list(self.epochs_rx),
            "qkd_bits_consumed": self.qkd_bits_consumed,
            "qkd_bits": dict(self.qkd_bits),
            "qkd_bits_drawn": self.keys.drawn,
            "qkd_bits_used": self.keys.used,
            "qkd_bits_wasted": self.keys.wasted,
            "pad_left_bits": self.pad_left_bits,
            "jitter_buffer_ms": self.jitter_buffer_ms,
            "duration_s": self.duration_s,
            "media_priority": self.media_priority,
            "processing_us_per_frame": {
                "encode": self.processing_us_per_frame.encode,
                "protect": self.processing_us_per_frame.protect,
                "unprotect": self.processing_us_per_frame.unprotect,
                "decode": self.processing_us_per_frame.decode,
            },
            "end_reason": self.end_reason,
            "ended_by": self.ended_by,
            "end_cause": self.end.cause.value if self.end is not None else None,
            "warnings": list(self.warnings),
        }
        if self.transport is not None:
            out["rtt_ms"] = self.rtt_ms
            out["transport"] = {
                "frames_sent": self.transport.frames_sent,
                "frames_received": self.transport.frames_received,
                "frames_lost": self.transport.frames_lost,
            }
        if self.route is not None:
            out["route"] = self.route.to_json()
        if self.pad_timeline is not None:
            out["pad_timeline"] = self.pad_timeline.to_json()
        if self.error is not None:
            out["error"] = self.error
        return out


def _per_frame_us(seconds: float, frames: int) -> float:
    return round(seconds / max(1, frames) * 1e6, 1)


def summarize(
    *,
    sas: str,
    mode: Mode,
    result: HandshakeResult | None,
    pqc_only: bool,
    peer_sae_id: str,
    peer_pin: str,
    times: SetupTimes,
    counters: CallCounters,
    accounting: KeyAccounting | None,
    drawn_bits: int = 0,
    dropped_bits: int = 0,
    playout: Playout,
    pad_left_bits: int,
    started: float,
    end: CallEnd | None,
    warnings: list[str],
    transport: TransportStats | None,
    error: str | None,
    route: RouteReport | None = None,
    fetch_log: list[tuple[float, float, float, int]] | None = None,
    hedges: tuple[int, int] = (0, 0),
) -> CallSummary:
    """The summary of a call from what its endpoint holds (``accounting`` None: no session).

    ``drawn_bits`` is every QKD bit the KME delivered, ``dropped_bits`` those that arrived
    after the session had closed (erased at once)."""
    jb = playout.jb.stats()
    slots_decoded = jb.played + jb.fec_recovered + jb.concealed
    return CallSummary(
        sas=sas,
        mode=mode.label,
        role=result.role.value if result else None,
        pqc_only=pqc_only,
        peer=peer_sae_id,
        peer_fingerprint=result.peer.fingerprint() if result else None,
        peer_pin=peer_pin,
        handshake_ms=round(times.handshake_ms, 2),
        connect_ms=round(times.connect_ms, 2),
        kme_ms=round(times.kme_ms, 2),
        frames_sent=counters.frames_sent,
        frames_received=counters.frames_received,
        frames_unsent_no_key=counters.frames_unsent,
        frames_lost=jb.lost,
        frames_concealed=jb.concealed,
        frames_fec_recovered=jb.fec_recovered,
        frames_late=jb.late,
        frames_rejected=dict(counters.rejected),
        frames_misplaced=counters.misplaced,
        duplicates_dropped=jb.duplicates + counters.rejected.get(FrameReplayed.__name__, 0),
        control_ignored=counters.control_ignored,
        epochs=max([0, *counters.epochs_tx, *counters.epochs_rx])
        + (1 if accounting is not None else 0),
        epochs_tx=list(counters.epochs_tx),
        epochs_rx=list(counters.epochs_rx),
        qkd_bits_consumed=accounting.consumed if accounting else 0,
        qkd_bits={**accounting.as_dict(), "dropped": dropped_bits} if accounting else {},
        keys=KeyTotals(drawn_bits, accounting.used if accounting else 0),
        pad_left_bits=pad_left_bits,
        jitter_buffer_ms=round(jb.playout_delay_ms, 1),
        duration_s=round(time.monotonic() - started, 2) if started else 0.0,
        processing_us_per_frame=ProcessingTimes(
            encode=_per_frame_us(counters.encode_seconds, counters.frames_sent),
            protect=_per_frame_us(counters.protect_seconds, counters.frames_sent),
            unprotect=_per_frame_us(counters.unprotect_seconds, counters.frames_received),
            decode=_per_frame_us(playout.stats.decode_seconds, slots_decoded),
        ),
        end=end,
        warnings=list(warnings),
        rtt_ms=(
            round(transport.rtt_s * 1000, 2)
            if transport is not None and transport.rtt_s is not None
            else None
        ),
        transport=(
            TransportCounts(transport.frames_sent, transport.frames_received, transport.frames_lost)
            if transport is not None
            else None
        ),
        error=error,
        route=route,
        media_priority=counters.media_priority,
        pad_timeline=pad_timeline(counters, fetch_log or [], hedges) if mode is Mode.OTP else None,
    )


def not_started(error: str, mode: str | None, peer: str = "") -> CallSummary:
    """The summary of a call refused before anything was attempted (a usage error)."""
    from qphone.audio.opus import OpusConfig
    from qphone.endpoint.outcome import CallEnd, EndCause

    return summarize(
        sas="",
        mode=Mode[mode.upper()] if mode else Mode.AES,
        result=None,
        pqc_only=False,
        peer_sae_id=peer,
        peer_pin="",
        times=SetupTimes(),
        counters=CallCounters(),
        accounting=None,
        playout=Playout(OpusConfig()),
        pad_left_bits=0,
        started=0.0,
        end=CallEnd(error, True, EndCause.FAILURE),
        warnings=[],
        transport=None,
        error=error,
    )
