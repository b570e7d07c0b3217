"""qphone command line: parses and checks the options, then runs the command.

``call``/``answer`` build the endpoint's :class:`~qphone.endpoint.options.CallOptions` (and the
test impairment of what this side receives) before any network activity; a bad value exits 2.
A failed call exits 1 and, with ``--json``, still prints the summary with ``error``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qphone.core.impairment import ImpairmentParams
    from qphone.endpoint.options import CallOptions


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.core:
        from qphone.demo.coredemo import run_core_demo

        summary = run_core_demo(seconds=args.seconds)
    else:
        from pathlib import Path

        from qphone.demo.calldemo import run_call_demo
        from qphone.endpoint.outcome import CallFailed

        modes = ["aes", "otp"] if args.mode == "both" else [args.mode]
        kme_args = ["--distance-km", str(args.distance_km)]
        try:
            summary = run_call_demo(
                args.seconds, modes, Path(args.dir) if args.dir else None, kme_args
            )
        except (CallFailed, RuntimeError) as exc:
            print(f"qphone demo failed: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(summary))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from qphone.measure import bench

    which = ["crypto", "handshake", "latency"] if args.what == "all" else [args.what]
    result: dict[str, object] = {}
    for name in which:
        if name == "crypto":
            result.update(bench.bench_crypto(rounds=args.rounds))
        elif name == "handshake":
            result.update(bench.bench_handshake())
        elif name == "latency":
            result.update(bench.bench_latency(rounds=max(1, args.rounds // 5)))
    if args.json:
        print(json.dumps(result))
    else:
        print(bench.format_table(result))
    return 0


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:7000)")
    return host.strip("[]") or "127.0.0.1", int(port)


def _call_options(args: argparse.Namespace) -> CallOptions:
    """The endpoint's options from the command line (raises ValueError for bad values)."""
    from qphone.core.callparams import Mode
    from qphone.endpoint.options import CallOptions
    from qphone.transport.config import IceServer, TransportConfig

    ice = tuple(IceServer(urls=(u,)) for u in args.ice_server)
    hosts = tuple(args.ice_host) if args.ice_host else None
    return CallOptions(
        mode=Mode[args.mode.upper()] if args.mode else None,
        bitrate=args.bitrate,
        frame_ms=args.frame_ms,
        bandwidth=args.bandwidth,
        fec=not args.no_fec,
        dtx=args.dtx,
        rotate_frames=args.rotate_frames,
        rotate_seconds=args.rotate_seconds,
        otp_tag_bits=args.tag_bits,
        input=args.input,
        output=args.output,
        duration=args.duration,
        allow_pqc_only=args.allow_pqc_only,
        trust_new_identity=args.trust_new_identity,
        status=False if args.json and not args.status else (True if args.status else None),
        transport=TransportConfig(ice_servers=ice, host_addresses=hosts),
    )


def _impairment(args: argparse.Namespace) -> ImpairmentParams | None:
    """The test impairment of what this side receives, if any option asks for one."""
    if not (args.loss or args.delay or args.jitter or args.reorder or args.duplicate):
        return None
    from qphone.core.impairment import ImpairmentParams

    return ImpairmentParams(
        loss=args.loss,
        burst_length=args.burst_loss,
        delay_ms=args.delay,
        jitter_ms=args.jitter,
        reorder=args.reorder,
        duplicate=args.duplicate,
        seed=args.seed,
    )


def _run_call(args: argparse.Namespace, answer: bool) -> int:
    import asyncio

    from qphone.endpoint.endpoint import CallEndpoint
    from qphone.endpoint.outcome import CallFailed
    from qphone.measure.impairmentfilter import impairment_filter
    from qphone.profile import ProfileError, load_profile

    try:
        profile = load_profile(args.profile)
        options = _call_options(args)
        receive_filter = impairment_filter(_impairment(args))
        endpoint = CallEndpoint(profile, options, receive_filter=receive_filter)
    except (ProfileError, ValueError, OSError, ImportError) as exc:
        print(f"qphone: {exc}", file=sys.stderr)
        return 2
    host, port = args.listen if answer else args.target
    try:
        if answer:
            summary = asyncio.run(endpoint.answer(host, port))
        else:
            summary = asyncio.run(endpoint.call(host, port))
    except CallFailed:
        if args.json:
            print(json.dumps(endpoint.summary().to_json()))
        return 1
    if args.json:
        print(json.dumps(summary.to_json()))
    else:
        print(
            f"call summary: SAS '{summary.sas}', {summary.frames_sent} frames sent, "
            f"{summary.frames_received} received, {summary.frames_lost} lost, "
            f"{summary.epochs} epochs, {summary.qkd_bits_consumed} QKD bits"
        )
    return 0


def _cmd_call(args: argparse.Namespace) -> int:
    return _run_call(args, answer=False)


def _cmd_answer(args: argparse.Namespace) -> int:
    return _run_call(args, answer=True)


def _cmd_loopback(args: argparse.Namespace) -> int:
    from pathlib import Path

    from qphone.core.callparams import Mode
    from qphone.endpoint.outcome import CallFailed
    from qphone.measure.loopback import LoopbackOptions, run_loopback

    if (args.profile_a is None) != (args.profile_b is None):
        print("qphone loopback: give both --profile-a and --profile-b, or neither", file=sys.stderr)
        return 2
    opts = LoopbackOptions(
        sample=Path(args.sample),
        out=Path(args.out),
        report=Path(args.report),
        plot=Path(args.plot) if args.plot else None,
        mode=Mode[args.mode.upper()],
        bitrate=args.bitrate,
        frame_ms=args.frame_ms,
        loss=args.loss,
        burst_loss=args.burst_loss,
        delay_ms=args.delay,
        jitter_ms=args.jitter,
        reorder=args.reorder,
        duplicate=args.duplicate,
        seed=args.seed,
        distance_km=args.distance_km,
        eve_fraction=args.eve_fraction,
        profile_a=Path(args.profile_a) if args.profile_a else None,
        profile_b=Path(args.profile_b) if args.profile_b else None,
        rotate_frames=args.rotate_frames,
        rotate_seconds=args.rotate_seconds,
        progress=not args.quiet,
    )
    try:
        run = run_loopback(opts)
    except (CallFailed, RuntimeError, ValueError, OSError) as exc:
        print(f"qphone loopback failed: {exc}", file=sys.stderr)
        return 1
    r = run.report
    lat, fr, key = r["latency_ms"], r["frames"], r["key"]
    q = r["quality"].get("encrypted", {})
    print(
        f"mouth-to-ear p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms | frames "
        f"sent {fr['sent']}, lost {fr['lost']}, concealed {fr['concealed']}, FEC "
        f"{fr['fec_recovered']} | QKD {key['qkd_bits_consumed']} bits (expected "
        f"{key['qkd_bits_expected']}, ratio {key['ratio']}) | PESQ {q.get('pesq_wb')} "
        f"STOI {q.get('stoi')} | report {args.report}"
        + (f", plot {args.plot}" if args.plot else "")
    )
    return 0


def _cmd_devices(args: argparse.Namespace) -> int:
    from qphone.audio.devices import AudioDeviceError, format_devices, list_devices

    try:
        devices = list_devices()
    except AudioDeviceError as exc:
        print(f"qphone: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([d.__dict__ for d in devices]))
    else:
        print(format_devices(devices))
    return 0


def _add_call_options(p: argparse.ArgumentParser, answer: bool) -> None:
    p.add_argument("--profile", required=True, help="profile TOML (qkd-keyserver demo writes one)")
    p.add_argument(
        "--mode",
        choices=["aes", "otp"],
        help="aes (default) or otp" + ("; on answer: accept only this mode" if answer else ""),
    )
    p.add_argument("--bitrate", type=int, default=24_000, help="Opus bitrate, 6000..64000")
    p.add_argument("--frame-ms", type=int, default=20, choices=[10, 20, 40, 60])
    p.add_argument("--bandwidth", default="wb", choices=["nb", "mb", "wb", "swb", "fb"])
    p.add_argument("--no-fec", action="store_true", help="disable Opus in-band FEC")
    p.add_argument("--dtx", action="store_true", help="enable Opus DTX")
    p.add_argument("--rotate-frames", type=int, default=500, help="new key after N frames")
    p.add_argument("--rotate-seconds", type=float, default=10.0, help="... or after S seconds")
    p.add_argument("--tag-bits", type=int, default=64, choices=[32, 64, 128], help="OTP MAC tag")
    p.add_argument("--input", help="WAV file or sound device (name or index); default silence")
    p.add_argument("--output", help="WAV file or sound device; default: discard")
    p.add_argument("--duration", type=float, help="end the call after SECONDS")
    p.add_argument(
        "--allow-pqc-only",
        action="store_true",
        help="if the KME fails, continue on ML-KEM + X25519 alone (said on screen and in summary)",
    )
    p.add_argument(
        "--trust-new-identity",
        action="store_true",
        help="accept and re-pin a peer whose identity key changed (verify it first!)",
    )
    p.add_argument("--ice-server", action="append", default=[], help="STUN/TURN URL (repeatable)")
    p.add_argument("--ice-host", action="append", default=[], help="only gather on this address")
    p.add_argument("--status", action="store_true", help="force the live status line")
    _add_impairment_options(
        p.add_argument_group("network impairment of what this side receives (for testing)")
    )
    p.add_argument("--json", action="store_true", help="print a JSON call summary at the end")


def _add_impairment_options(g: Any) -> None:
    g.add_argument("--loss", type=float, default=0.0, help="packet loss probability")
    g.add_argument("--burst-loss", type=float, default=1.0, help="mean loss burst length")
    g.add_argument("--delay", type=float, default=0.0, help="added one-way delay (ms)")
    g.add_argument("--jitter", type=float, default=0.0, help="delay jitter (ms)")
    g.add_argument("--reorder", type=float, default=0.0, help="reordering probability")
    g.add_argument("--duplicate", type=float, default=0.0, help="duplication probability")
    g.add_argument("--seed", type=int, default=0, help="seed of the impairment RNG")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qphone", description="Quantum-safe voice calls.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "demo", help="a real encrypted call between two endpoints on this machine (no setup)"
    )
    d.add_argument("--seconds", type=float, default=6.0, help="length of each call")
    d.add_argument("--mode", choices=["aes", "otp", "both"], default="both")
    d.add_argument("--dir", help="keep the keyserver PKI, profiles and recordings here")
    d.add_argument("--distance-km", type=float, default=10.0, help="simulated fibre length")
    d.add_argument(
        "--core", action="store_true", help="only the security core, in memory (no network)"
    )
    d.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    d.set_defaults(func=_cmd_demo)
    b = sub.add_parser("bench", help="benchmarks against same-run baselines")
    b.add_argument(
        "what", nargs="?", default="all", choices=["crypto", "handshake", "latency", "all"]
    )
    b.add_argument("--json", action="store_true", help="one JSON object on stdout")
    b.add_argument("--rounds", type=int, default=15, help="measurement rounds (median)")
    b.set_defaults(func=_cmd_bench)
    c = sub.add_parser("call", help="call a terminal that runs `qphone answer`")
    c.add_argument("target", type=_hostport, help="HOST:PORT of the answering terminal")
    _add_call_options(c, answer=False)
    c.set_defaults(func=_cmd_call)
    a = sub.add_parser("answer", help="wait for a call")
    a.add_argument("--listen", type=_hostport, required=True, help="HOST:PORT to listen on")
    _add_call_options(a, answer=True)
    a.set_defaults(func=_cmd_answer)
    lb = sub.add_parser("loopback", help="replay a recording through a full call and measure it")
    lb.add_argument("sample", help="WAV file to play through the call")
    lb.add_argument("--out", required=True, help="WAV file: what the far end played out")
    lb.add_argument("--report", required=True, help="JSON report")
    lb.add_argument("--plot", help="PNG plot of the report")
    lb.add_argument("--mode", choices=["aes", "otp"], default="aes")
    lb.add_argument("--bitrate", type=int, default=24_000)
    lb.add_argument("--frame-ms", type=int, default=20, choices=[10, 20, 40, 60])
    _add_impairment_options(lb.add_argument_group("the network between the two endpoints"))
    lb.add_argument("--distance-km", type=float, default=10.0, help="simulated fibre length")
    lb.add_argument("--eve-fraction", type=float, default=0.0, help="intercept-resend fraction")
    lb.add_argument("--rotate-frames", type=int, default=250)
    lb.add_argument("--rotate-seconds", type=float, default=3600.0)
    lb.add_argument("--profile-a", help="caller profile of running KMEs (else a pair is started)")
    lb.add_argument("--profile-b", help="answerer profile of running KMEs")
    lb.add_argument("--quiet", action="store_true", help="no progress bar")
    lb.set_defaults(func=_cmd_loopback)
    dv = sub.add_parser("devices", help="list sound devices")
    dv.add_argument("--json", action="store_true")
    dv.set_defaults(func=_cmd_devices)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
