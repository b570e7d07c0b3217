"""``qphone loopback``: replay a recording through a complete call on this machine and measure it.

Two endpoints in one process (the caller, alice, plays SAMPLE; the answerer, bob, writes what
it plays out to OUT), real WebRTC transport on loopback with a seeded impairment filter on each
receive path (:mod:`qphone.measure.impairmentfilter`), and the keyserver pair (started for the
run unless profiles point at running KMEs).  A :class:`~qphone.measure.callrecorder.CallRecorder`
observes each endpoint.  The report holds mouth-to-ear latency per frame and its parts, frame
counters, QKD key drawn from the KMEs, used and wasted (per side and in total) against the
theoretical need, handshake timing, voice quality against an unencrypted decode of the same
packets, and the link's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from qphone.audio.opus import OpusConfig, OpusDecoder, decode_playout
from qphone.audio.streams import WavSink
from qphone.audio.wav import read_wav, resample, wav_info
from qphone.config.profile import Profile, load_profile
from qphone.core.callparams import CallParams, Mode
from qphone.core.errors import FrameReplayed
from qphone.core.impairment import ImpairmentParams
from qphone.core.jitterbuffer import TS_MOD, PlayoutItem, PlayoutKind
from qphone.demo.calldemo import interrupted
from qphone.demo.keyserverprocess import free_port, running_keyserver, running_network
from qphone.endpoint.console import TextOut
from qphone.endpoint.endpoint import CallEndpoint
from qphone.endpoint.options import CallOptions
from qphone.endpoint.playout import stretch_slot
from qphone.endpoint.state import CallPhase
from qphone.endpoint.summary import CallSummary
from qphone.kmeclient import KmeClient, KmeError
from qphone.measure.callrecorder import CallRecorder
from qphone.measure.impairmentfilter import impairment_filter
from qphone.measure.latency import percentiles
from qphone.transport.config import LOOPBACK_ADDRESSES, TransportConfig


@dataclass
class LoopbackOptions:
    sample: Path
    out: Path
    report: Path | None = None
    plot: Path | None = None
    mode: Mode = Mode.AES
    bitrate: int = 24_000
    frame_ms: int = 20
    loss: float = 0.0
    burst_loss: float = 1.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder: float = 0.0
    duplicate: float = 0.0
    seed: int = 0
    distance_km: float = 10.0
    eve_fraction: float = 0.0
    profile_a: Path | None = None
    profile_b: Path | None = None
    network: str | None = None  # a topology: start that network, call alice -> bob across it
    multipath: int = 1
    rotate_frames: int = 250
    rotate_seconds: float = 3600.0
    pad_lookahead_s: float = 0.5
    tail_s: float = 1.0
    progress: bool = True
    workdir: Path | None = None
    quality: bool = True

    def impairment(self, seed: int) -> ImpairmentParams | None:
        if not (self.loss or self.delay_ms or self.jitter_ms or self.reorder or self.duplicate):
            return None
        return ImpairmentParams(
            loss=self.loss,
            burst_length=self.burst_loss,
            delay_ms=self.delay_ms,
            jitter_ms=self.jitter_ms,
            reorder=self.reorder,
            duplicate=self.duplicate,
            seed=seed,
        )


@dataclass
class Side:
    """One endpoint of the run: what it reported to its recorder, and its call summary."""

    endpoint: CallEndpoint
    log: CallRecorder
    summary: CallSummary


@dataclass
class LoopbackRun:
    report: dict[str, Any]
    caller: Side  # alice: plays the sample
    answerer: Side  # bob: plays out into OUT


def recording_path(answerer: Side, asked: Path) -> Path:
    """Where the answerer's recording is: OUT, or where it moved if OUT's folder vanished."""
    sink = answerer.endpoint.audio.sink
    return sink.path if isinstance(sink, WavSink) else asked


def _pct(values: list[float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in percentiles(values).items()}


@contextlib.contextmanager
def _profiles(
    opts: LoopbackOptions, work: Path, say: Callable[[str], None]
) -> Iterator[tuple[Profile, Profile]]:
    if opts.profile_a and opts.profile_b:
        yield load_profile(opts.profile_a), load_profile(opts.profile_b)
        return
    kme_args = ["--distance-km", str(opts.distance_km), "--seed", str(opts.seed)]
    if opts.eve_fraction:
        kme_args += ["--eve-fraction", str(opts.eve_fraction)]
    if opts.network is None:
        say(f"qphone loopback: starting the keyserver pair in {work / 'kme'} ...")
        waiting = "qphone loopback: waiting for the QKD link's first key ..."
        keyserver = running_keyserver(work / "kme", kme_args, on_wait=lambda: say(waiting))
    else:
        say(f"qphone loopback: starting the {opts.network} network in {work / 'network'} ...")
        waiting = "qphone loopback: waiting until every link on the route holds key ..."
        net_args = ["--seed", str(opts.seed), "--multipath", str(opts.multipath)]
        keyserver = running_network(
            opts.network, work / "network", net_args, on_wait=lambda: say(waiting)
        )
    with keyserver as kme:
        a, b = load_profile(kme / "alice.toml"), load_profile(kme / "bob.toml")
        # identities of this run only: no pins left behind from earlier runs
        yield (
            replace(a, identity_file=work / "alice.id", known_peers=work / "alice.peers.json"),
            replace(b, identity_file=work / "bob.id", known_peers=work / "bob.peers.json"),
        )


def progress_bar(elapsed: float, total: float, width: int = 30) -> str:
    """``[#####     ]   4.5/9.0 s``: the call's progress, always the same length."""
    frac = min(1.0, max(0.0, elapsed / total)) if total > 0 else 1.0
    return f"[{'#' * int(frac * width):<{width}}] {frac * total:5.1f}/{total:.1f} s"


async def _progress(total: float, started: asyncio.Event, done: asyncio.Event, out: TextIO) -> None:
    """The bar, redrawn in place every 0.25 s from the call's start until ``done``."""
    await started.wait()
    t0 = time.monotonic()
    while not done.is_set():
        out.write("\r\x1b[K" + progress_bar(time.monotonic() - t0, total))
        out.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.25):
                await done.wait()
    out.write("\r\x1b[K" + progress_bar(total, total) + "\n")
    out.flush()


async def _run_call(opts: LoopbackOptions, pa: Profile, pb: Profile) -> tuple[Side, Side]:
    duration = wav_info(opts.sample).duration + opts.tail_s

    def options(**kw: Any) -> CallOptions:
        return CallOptions(
            bitrate=opts.bitrate,
            frame_ms=opts.frame_ms,
            rotate_frames=opts.rotate_frames,
            rotate_seconds=opts.rotate_seconds,
            pad_lookahead_s=opts.pad_lookahead_s,
            status=False,
            transport=TransportConfig(host_addresses=LOOPBACK_ADDRESSES),
            realtime=True,  # a measurement: the media path real-time where permitted
            **kw,
        )

    caller_log, answerer_log = CallRecorder(), CallRecorder()
    caller = CallEndpoint(
        pa,
        options(mode=opts.mode, input=str(opts.sample), duration=duration),
        out=_Quiet(),
        observer=caller_log,
        receive_filter=impairment_filter(opts.impairment(opts.seed + 1)),
    )
    answerer = CallEndpoint(
        pb,
        options(output=str(opts.out)),
        out=_Quiet(),
        observer=answerer_log,
        receive_filter=impairment_filter(opts.impairment(opts.seed)),
    )
    port = free_port()
    started, done = asyncio.Event(), asyncio.Event()
    show = opts.progress and sys.stderr.isatty()
    bar = asyncio.ensure_future(_progress(duration, started, done, sys.stderr)) if show else None
    if opts.progress:
        print(
            f"qphone loopback: calling alice -> bob on 127.0.0.1:{port} ({opts.mode.label}, "
            f"{duration:.1f} s) ...",
            file=sys.stderr,
            flush=True,
        )
    caller.phase.subscribe(lambda phase: started.set() if phase is CallPhase.IN_CALL else None)

    async def call() -> CallSummary:
        await asyncio.sleep(0.3)
        return await caller.call("127.0.0.1", port)

    try:
        answering = asyncio.ensure_future(answerer.answer("127.0.0.1", port, accept_timeout=30))
        sa = await call()
        sb = await answering
    finally:
        done.set()
        started.set()
        if bar is not None:
            await bar
    return Side(caller, caller_log, sa), Side(answerer, answerer_log, sb)


class _Quiet(TextOut):
    """Endpoint messages go to a list instead of the terminal (the progress bar owns it)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.extend(t for t in text.splitlines() if t.strip())
        return len(text)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False


def run_loopback(opts: LoopbackOptions) -> LoopbackRun:
    work = opts.workdir or Path(tempfile.mkdtemp(prefix="qphone-loopback-"))
    work.mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:
        if opts.progress:
            print(line, file=sys.stderr, flush=True)

    with _profiles(opts, work, say) as (pa, pb):
        caller, answerer = asyncio.run(_run_call(opts, pa, pb))
        if interrupted(caller.summary, answerer.summary):
            raise KeyboardInterrupt  # SIGINT/SIGTERM hung up the call: no report
        link = asyncio.run(_link_status(pa))
    report = build_report(opts, caller, answerer, link)
    if opts.report is not None:
        opts.report.write_text(json.dumps(report, indent=1) + "\n")
    if opts.plot is not None:
        from qphone.measure.loopbackplot import plot_report

        plot_report(report, opts.plot)
    return LoopbackRun(report, caller, answerer)


async def _link_status(profile: Profile) -> dict[str, Any]:
    try:
        async with KmeClient.from_profile(profile) as kme:
            status = await kme.status(profile.peer_sae_id)
    except KmeError as exc:
        return {"error": str(exc)}
    link = dict(status.link)
    return {
        "qber": link.get("last_qber"),
        "qber_ewma": link.get("qber_ewma"),
        "key_rate_bps": link.get("key_rate_bps"),
        "eavesdropper_alarm": bool(status.eavesdropper_alarm),
        "blocks_ok": link.get("blocks_ok"),
        "blocks_aborted": link.get("blocks_aborted"),
        "last_abort_reason": link.get("last_abort_reason"),
        "stored_key_count": status.stored_key_count,
    }


# ---------------------------------------------------------------------------------- analysis
def _offset(caller: CallRecorder, answerer: CallRecorder) -> int | None:
    """aiortc adds a random offset to RTP timestamps: find it by matching packets."""
    by_packet: dict[bytes, list[int]] = {}
    for f in caller.sent:
        by_packet.setdefault(f.packet, []).append(f.timestamp)
    votes: dict[int, int] = {}
    for r in answerer.received[:200]:
        for ts in by_packet.get(r.packet, []):
            off = (r.rtp_timestamp - ts) % TS_MOD
            votes[off] = votes.get(off, 0) + 1
    return max(votes, key=lambda k: votes[k]) if votes else None


def replay_unencrypted(
    caller: CallRecorder, answerer: CallRecorder, config: OpusConfig, offset: int
) -> bytes:
    """Decode the sender's Opus packets, unencrypted, with the receiver's playout decisions."""
    packets = {(f.timestamp + offset) % TS_MOD: f.packet for f in caller.sent}
    step = config.rtp_timestamp_step
    dec = OpusDecoder(config)
    out = []
    for slot in answerer.played:
        packet = None
        with contextlib.suppress(KeyError):
            if slot.kind is PlayoutKind.NORMAL:
                packet = packets[slot.timestamp]
            elif slot.kind is PlayoutKind.FEC:
                packet = packets[(slot.timestamp + step) % TS_MOD]
        pcm = decode_playout(dec, PlayoutItem(slot.kind, slot.timestamp, 0.0, payload=packet))
        if slot.stretch:  # as the receiver time-stretched it (the same function, deterministic)
            pcm, _ = stretch_slot(pcm, slot.kind, slot.stretch, config)
        out.append(pcm)
    return b"".join(out)


def _theory(opts: LoopbackOptions, caller: Side, answerer: Side) -> dict[str, Any]:
    params = CallParams(
        mode=opts.mode, rotate_frames=opts.rotate_frames, rotate_ms=int(opts.rotate_seconds * 1000)
    )
    sa, sb = caller.summary, answerer.summary
    hs = 0 if sa.pqc_only else params.handshake_qkd_bits
    fps = 1000 / opts.frame_ms
    frames = max(sa.frames_sent, sb.frames_sent)
    nominal: float
    if opts.mode is Mode.AES:
        per_epoch = min(params.rotate_frames, math.ceil(params.rotate_ms / 1000 * fps))
        last_epoch = (frames - 1) // per_epoch if frames else 0
        expected = hs + params.epoch_block_bits * (last_epoch + params.lookahead)
        formula = (
            "handshake + epoch_block_bits * (last epoch + lookahead), last epoch = "
            "floor((frames_sent - 1) / frames per epoch)"
        )
        nominal = expected
    else:
        t = params.otp_tag_bits
        expected = hs
        for side in (caller, answerer):
            counters = side.endpoint.counters
            expected += 8 * counters.payload_bytes_sent + t * (counters.frames_sent + 1)
        formula = (
            "handshake + per direction (8 * Opus payload bytes + tag_bits * (frames + 1 "
            "session hash key))"
        )
        secs = frames / fps
        nominal = hs + 2 * secs * (opts.bitrate + t * fps)
    return {"expected": int(expected), "nominal": int(nominal), "formula": formula}


def _side_keys(s: CallSummary) -> dict[str, int]:
    """One side's draw: every key its KME delivered, what of it was used, what was erased."""
    return {
        "qkd_bits_drawn": s.keys.drawn,
        "qkd_bits_used": s.keys.used,
        "qkd_bits_wasted": s.keys.wasted,
        "erased_unused": s.qkd_bits.get("erased_unused", 0),
    }


def build_report(
    opts: LoopbackOptions, caller: Side, answerer: Side, link: dict[str, Any]
) -> dict[str, Any]:
    cfg = OpusConfig(frame_ms=opts.frame_ms, bitrate=opts.bitrate)
    frame_s = opts.frame_ms / 1000
    sent_log, recv_log = caller.log, answerer.log
    sa, sb = caller.summary, answerer.summary
    offset = _offset(sent_log, recv_log)
    sent_by_ts = {}
    if offset is not None:
        sent_by_ts = {(f.timestamp + offset) % TS_MOD: f for f in sent_log.sent}
    recv_by_ts = {r.rtp_timestamp: r for r in recv_log.received}
    t0 = sent_log.sent[0].captured if sent_log.sent else 0.0

    # concealment inside the stream only: the slots after the last frame, while the call hangs
    # up, are concealed too but conceal nothing (the counters and the plot both leave them out)
    last_ts = max(sent_by_ts, key=lambda t: (t - (offset or 0)) % TS_MOD) if sent_by_ts else None

    def inside(slot: Any) -> bool:
        return (
            last_ts is not None
            and (slot.timestamp - (offset or 0)) % TS_MOD <= (last_ts - (offset or 0)) % TS_MOD
        )

    m2e, parts_proc, parts_net, parts_jb, series = [], [], [], [], []
    loss_events = []
    for slot in recv_log.played:
        if slot.kind in (PlayoutKind.PLC, PlayoutKind.FEC) and inside(slot):
            loss_events.append([round(slot.played - t0, 3), slot.kind.value])
        s, r = sent_by_ts.get(slot.timestamp), recv_by_ts.get(slot.timestamp)
        if slot.kind is not PlayoutKind.NORMAL or s is None or r is None:
            continue
        first_sample = s.captured - frame_s  # the frame's first sample was captured then
        lat = (slot.played - first_sample) * 1000
        m2e.append(lat)
        series.append([round(slot.played - t0, 3), round(lat, 2)])
        parts_proc.append((s.encode_s + s.protect_s + r.unprotect_s + slot.decode_s) * 1000)
        parts_net.append((r.arrival - s.sent) * 1000)
        parts_jb.append((slot.played - r.arrival) * 1000)

    in_stream = [slot.kind for slot in recv_log.played if inside(slot)]
    sent = sa.frames_sent
    received = sb.frames_received
    replays = sb.frames_rejected.get(FrameReplayed.__name__, 0)
    frames = {
        "sent": sent,
        "unsent_no_key": sa.frames_unsent_no_key,  # dropped at the sender for want of pad
        "received": received,
        "lost": sent - received,
        "late": sb.frames_late,
        "concealed": in_stream.count(PlayoutKind.PLC),
        "fec_recovered": in_stream.count(PlayoutKind.FEC),
        "concealed_incl_hangup": sb.frames_concealed,
        "duplicates_dropped": sb.duplicates_dropped,
        "replays_rejected": replays,
        "rejected": sb.frames_rejected,
    }
    lost_ts = sorted(
        (f.timestamp // cfg.rtp_timestamp_step)
        for f in sent_log.sent
        if offset is not None and (f.timestamp + offset) % TS_MOD not in recv_by_ts
    )

    acc_a, acc_b = sa.qkd_bits, sb.qkd_bits
    by_purpose = {
        "handshake": acc_a.get("handshake", 0),
        "epoch": acc_a.get("epoch", 0),
        "pad": acc_a.get("pad", 0) + acc_b.get("pad", 0),
        "mac": acc_a.get("mac", 0) + acc_b.get("mac", 0),
    }
    used = sum(by_purpose.values())
    theory = _theory(opts, caller, answerer)
    need = theory["expected"]
    # every key of the call is drawn first by the caller (the ETSI 014 master SAE, enc_keys) and
    # the same key again by the answerer (dec_keys): the call's total is the caller's draw
    drawn = sa.keys.drawn
    call_s = max(sa.duration_s, 1e-9)
    key = {
        "ratio": round(drawn / need, 6) if need else None,
        "ratio_definition": "QKD bits drawn from the KMEs for the call / the theoretical need",
        "qkd_bits_needed": need,
        "needed_formula": theory["formula"],
        "total": {
            "qkd_bits_drawn": drawn,
            "qkd_bits_used": used,
            "qkd_bits_wasted": drawn - used,
        },
        "alice": _side_keys(sa),
        "bob": _side_keys(sb),
        "used_ratio": round(used / need, 6) if need else None,
        "qkd_bits_used_by_purpose": by_purpose,
        "qkd_bits_nominal_from_bitrate": theory["nominal"],
        "drawn_bits_per_second": round(drawn / call_s, 1),
        "pad_left_bits": {"alice": sa.pad_left_bits, "bob": sb.pad_left_bits}
        if opts.mode is Mode.OTP
        else None,
        "epochs": sa.epochs,
    }

    handshake = {
        "total_ms": round(sa.connect_ms + sa.kme_ms + sa.handshake_ms, 2),
        "signaling_ice_dtls_ms": sa.connect_ms,
        "kme_ms": round(sa.kme_ms + sb.kme_ms, 2),
        "crypto_and_messages_ms": round(max(0.0, sa.handshake_ms - sb.kme_ms), 2),
    }

    quality: dict[str, Any] = {}
    if offset is not None:
        clear = replay_unencrypted(sent_log, recv_log, cfg, offset)
        out_pcm, _ = read_wav(recording_path(answerer, opts.out), cfg.sample_rate)
        got = np.asarray(out_pcm, dtype=np.int16).tobytes()
        quality["bit_identical_to_unencrypted"] = got == clear
        if opts.quality:
            quality.update(_quality(opts.sample, got, clear, cfg.sample_rate))

    m = sorted(m2e)
    report = {
        "sample": str(opts.sample),
        "out": str(recording_path(answerer, opts.out)),
        "config": {
            "mode": opts.mode.label,
            "bitrate": opts.bitrate,
            "frame_ms": opts.frame_ms,
            "loss": opts.loss,
            "burst_loss": opts.burst_loss,
            "delay_ms": opts.delay_ms,
            "jitter_ms": opts.jitter_ms,
            "reorder": opts.reorder,
            "duplicate": opts.duplicate,
            "seed": opts.seed,
            "distance_km": opts.distance_km,
            "eve_fraction": opts.eve_fraction,
            "rotate_frames": opts.rotate_frames,
            "rotate_seconds": opts.rotate_seconds,
        },
        "sas": sa.sas,
        "media_priority": {"alice": sa.media_priority, "bob": sb.media_priority},
        "latency_ms": {
            **_pct(m),
            "frames": len(m),
            "definition": "capture of the frame's first sample to the start of its playout",
            "parts": {
                "packetization": opts.frame_ms,
                "processing": _pct(parts_proc),
                "network": _pct(parts_net),
                "jitter_buffer": _pct(parts_jb),
            },
        },
        "frames": frames,
        "loss_pattern": lost_ts,
        "key": key,
        "handshake_ms": handshake,
        "quality": quality,
        "link": link,
        "route": sa.route.to_json() if sa.route is not None else None,
        "series": {
            "latency": series,
            "key_alice": [[round(t - t0, 3), b] for t, b in sent_log.key_log],
            "key_bob": [[round(t - t0, 3), b] for t, b in recv_log.key_log],
            "key_drawn": [[round(t - t0, 3), b] for t, b in sent_log.drawn_log],
            "rotations": [[round(e.at - t0, 3), e.epoch] for e in sent_log.epochs if e.sending],
            "loss_events": loss_events,
        },
    }
    return report


def _quality(sample: Path, got: bytes, clear: bytes, rate: int) -> dict[str, Any]:
    from qphone.measure.quality import MeasurementUnavailable, measure

    # a narrow-band recording (8 kHz) is scored narrow-band (P.862), anything wider wide-band
    at = 8000 if wav_info(sample).sample_rate <= 8000 else 16000
    key = "pesq_nb" if at == 8000 else "pesq_wb"
    ref, _ = read_wav(sample, at)
    out: dict[str, Any] = {}
    try:
        for name, pcm in (("encrypted", got), ("unencrypted", clear)):
            deg = resample(np.frombuffer(pcm, dtype="<i2"), rate, at)
            q = measure(ref, deg, at)
            out[name] = {
                key: None if q.pesq is None else round(q.pesq, 3),
                "stoi": None if q.stoi is None else round(q.stoi, 4),
                "delay_ms": round(q.delay_ms, 1),
                "correlation": round(q.correlation, 4),
            }
    except MeasurementUnavailable as exc:
        out["unavailable"] = str(exc)
    return out
