"""qphone command line: parses and checks the options, then runs the command.

``call``/``answer`` check everything before any network activity: every option's value and
range (argparse types below), the input and output (a WAV file read and decoded, a device found
and its format checked, an output directory writable), the profile file; then one ETSI 014
``status`` request checks that the profile fits its KME (no key is taken).  Anything wrong is
one line on stderr naming the option and the fix, and exit 2.  Exit codes (also in
``qphone call --help``): 0 the call took place and was hung up, 1 a failure, 2 a usage error,
130 interrupted before a call was established.  With ``--json`` the summary (with ``error`` on
failure) is printed on stdout in every case.  A traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from qphone.audio.streams import CallAudio
    from qphone.core.impairment import ImpairmentParams
    from qphone.endpoint.options import CallOptions
    from qphone.endpoint.summary import CallSummary

EXIT_CODES = (
    "exit status: 0 the call took place and was hung up (by either side, Ctrl-C included); "
    "1 a failure ended the call or kept it from starting; 2 a bad option, file, device or "
    "profile (nothing was attempted); 130 interrupted (Ctrl-C, SIGTERM) before a call was "
    "established."
)
RUN_EXIT_CODES = (
    "exit status: 0 done; 1 a failure; 2 a bad option or file (nothing was started); 130 "
    "interrupted by Ctrl-C or SIGTERM (`timeout`, `kill`): the call in progress is hung up, "
    "the keyserver this command started is stopped with all its processes, and no summary or "
    "report is written."
)
HANG_UP = (
    "Hang-up: a side hangs up when its --duration passes or, without --duration, when its WAV "
    "input ends (0.5 s later); Ctrl-C or SIGTERM hangs up at once. Any hang-up ends the call "
    "for both sides with an authenticated bye, so the call lasts as long as the side that "
    "stops first: give --duration or --loop to keep talking after a WAV ends."
)


# ------------------------------------------------------------------------------ the parser
class _BadArguments(Exception):
    """A usage error found by argparse (main() prints it in one line and exits 2)."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (and exit 2, see main())."""

    def error(self, message: str) -> NoReturn:
        raise _BadArguments(self.prog, message)


class _Help(argparse.RawDescriptionHelpFormatter):
    """Shows every default that is not None/False in the help (others say it in words)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or default == []:
            return text
        return text + " (default: %(default)s)"


def _number(
    kind: Callable[[str], float],
    low: float | None,
    high: float | None,
    what: str,
    example: str,
    *,
    low_open: bool = False,
) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` within [low, high] ((low, high] when ``low_open``)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} (e.g. {example})") from None
        bad = not math.isfinite(value)
        if low is not None:
            bad = bad or (value <= low if low_open else value < low)
        if high is not None:
            bad = bad or value > high
        if bad:
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: give {what} (e.g. {example})"
            )
        return value

    return parse


_SECONDS = _number(float, 0, 86_400, "a positive number of seconds", "10", low_open=True)
_PROB = _number(float, 0, 1, "a probability from 0 to 1", "0.05")
_MS = _number(float, 0, 10_000, "milliseconds from 0 to 10000", "20")


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:7000)")
    return host.strip("[]") or "127.0.0.1", int(port)


def _sub(sub: Any, name: str, help: str, **kw: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=kw.pop("description", help), formatter_class=_Help, **kw
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks and library logs on failure"
    )
    return parser


# ------------------------------------------------------------------------------ call / answer
def _terminal() -> bool:
    """A call runs in a terminal (then the system's sound devices are the default)."""
    return sys.stdin.isatty()


def _call_options(args: argparse.Namespace) -> CallOptions:
    """The endpoint's options from the command line (ValueError names the option)."""
    from qphone.audio.streams import DISCARD, SILENCE
    from qphone.core.callparams import Mode
    from qphone.endpoint.options import CallOptions
    from qphone.transport.config import IceServer, TransportConfig

    ice = tuple(IceServer(urls=(u,)) for u in args.ice_server)
    hosts = tuple(args.ice_host) if args.ice_host else None
    terminal = _terminal()
    options = CallOptions(
        mode=Mode[args.mode.upper()] if args.mode else None,
        bitrate=args.bitrate,
        frame_ms=args.frame_ms,
        bandwidth=args.bandwidth,
        fec=not args.no_fec,
        dtx=args.dtx,
        rotate_frames=args.rotate_frames,
        rotate_seconds=args.rotate_seconds,
        otp_tag_bits=args.tag_bits,
        pad_lookahead_s=args.pad_lookahead,
        input=args.input or ("default" if terminal else SILENCE),
        output=args.output or ("default" if terminal else DISCARD),
        loop_input=args.loop,
        duration=args.duration,
        allow_pqc_only=args.allow_pqc_only,
        trust_new_identity=args.trust_new_identity,
        status=True if args.status else None,
        transport=TransportConfig(
            ice_servers=ice,
            host_addresses=hosts,
            connect_timeout=args.connect_timeout,
            signaling_timeout=args.connect_timeout,
        ),
        handshake_timeout=args.handshake_timeout,
    )
    try:
        options.opus()  # validates the codec settings together
        options.call_params()
    except ValueError as exc:
        raise ValueError(f"--bitrate/--frame-ms/--bandwidth/--rotate-*: {exc}") from None
    return options


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


class _Usage(Exception):
    """A bad value found before anything was attempted: exit 2."""


def _open_audio(options: CallOptions) -> CallAudio:
    from qphone.audio.streams import AudioSpecError, CallAudio, open_sink, open_source

    cfg = options.opus()
    try:
        source, paced = open_source(options.input, cfg, options.loop_input)
    except AudioSpecError as exc:
        raise _Usage(f"--input {options.input}: {exc}") from None
    try:
        sink = open_sink(options.output, cfg)
    except AudioSpecError as exc:
        raise _Usage(f"--output {options.output}: {exc}") from None
    return CallAudio(source, paced, sink)


def _run_call(args: argparse.Namespace, answer: bool) -> int:
    import asyncio
    import dataclasses

    from qphone.config.profile import ProfileError, load_profile
    from qphone.endpoint.summary import not_started
    from qphone.measure.impairmentfilter import impairment_filter

    prog = f"qphone {'answer' if answer else 'call'}"

    def emit(summary: CallSummary) -> None:
        if args.json:
            print(json.dumps(summary.to_json()), flush=True)

    # 1. everything local: options, profile file, input and output (no network yet)
    try:
        options = _call_options(args)
        profile = load_profile(args.profile)
        audio = _open_audio(options)
        receive_filter = impairment_filter(_impairment(args))
    except (_Usage, ProfileError, ValueError, ImportError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        emit(not_started(str(exc), args.mode))
        return 2
    from qphone.config.identityfile import IdentityFileError
    from qphone.core.callparams import Mode
    from qphone.endpoint.endpoint import CallEndpoint
    from qphone.endpoint.outcome import (
        EXIT_FAILED,
        EXIT_INTERRUPTED,
        EXIT_USAGE,
        CallFailed,
        CallInterrupted,
        exit_code,
    )
    from qphone.endpoint.preflight import ProfileMismatch, check_profile

    # 2. the profile against its KME (one status request, no key taken)
    try:
        kme = asyncio.run(check_profile(profile))
    except ProfileMismatch as exc:
        print(f"{prog}: --profile {args.profile}: {exc}", file=sys.stderr)
        emit(not_started(str(exc), args.mode, profile.peer_sae_id))
        return EXIT_USAGE
    pqc_fallback = options.allow_pqc_only and options.mode is not Mode.OTP
    if kme.problem is not None and not pqc_fallback:
        # no QKD key can come: say so before ringing the other terminal
        hint = (
            "" if options.mode is Mode.OTP else " (or allow a PQC-only call with --allow-pqc-only)"
        )
        print(f"call failed: {kme.problem}{hint}", file=sys.stderr)
        emit(not_started(kme.problem + hint, args.mode, profile.peer_sae_id))
        return EXIT_FAILED
    if kme.status is not None:
        options = dataclasses.replace(options, kme_limits=kme.status)
        if not answer and options.mode is Mode.OTP and not kme.status.eavesdropper_alarm:
            # can the key route carry this OTP call?  (qphone/endpoint/keycapacity.py)
            from qphone.endpoint.keycapacity import otp_capacity

            o = options
            cap = otp_capacity(o.bitrate, o.otp_tag_bits, o.frame_ms, kme.status)
            short = cap.problem(o.duration)
            if short is not None and o.duration is not None:
                print(f"call failed: {short}", file=sys.stderr)
                emit(not_started(short, args.mode, profile.peer_sae_id))
                return EXIT_FAILED
            if cap.problem(None) is not None:
                print(f"{prog}: warning: {cap.problem(None)}", file=sys.stderr)
    try:
        endpoint = CallEndpoint(profile, options, receive_filter=receive_filter, audio=audio)
    except (IdentityFileError, ValueError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        emit(not_started(str(exc), args.mode, profile.peer_sae_id))
        return EXIT_USAGE
    # 3. the call
    host, port = args.listen if answer else args.target
    try:
        if answer:
            summary = asyncio.run(endpoint.answer(host, port, keep_waiting=True))
        else:
            summary = asyncio.run(endpoint.call(host, port))
    except CallFailed:
        emit(endpoint.summary())
        return EXIT_FAILED
    except CallInterrupted:
        emit(endpoint.summary())
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        emit(endpoint.summary())
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        emit(dataclasses.replace(endpoint.summary(), error=f"internal error: {exc}"))
        return EXIT_FAILED
    if args.json:
        emit(summary)
    else:
        print(_summary_line(summary))
    return exit_code(endpoint.end)


def _summary_line(s: CallSummary) -> str:
    return (
        f"call summary: SAS '{s.sas}', {s.frames_sent} frames sent, {s.frames_received} "
        f"received, {s.frames_lost} lost, {s.epochs} epochs, QKD {s.keys.drawn} bits drawn, "
        f"{s.keys.used} used, {s.keys.wasted} wasted; ended by {s.ended_by}: {s.end_reason}"
    )


def _cmd_call(args: argparse.Namespace) -> int:
    return _run_call(args, answer=False)


def _cmd_answer(args: argparse.Namespace) -> int:
    return _run_call(args, answer=True)


def _add_call_options(p: argparse.ArgumentParser, answer: bool) -> None:
    p.add_argument("--profile", required=True, help="profile TOML (qkd-keyserver demo writes one)")
    p.add_argument(
        "--mode",
        choices=["aes", "otp"],
        help=(
            "accept only this mode (default: either)"
            if answer
            else "aes or otp, the mode to propose (default: aes)"
        ),
    )
    p.add_argument(
        "--bitrate",
        type=_number(int, 6000, 64000, "an Opus bitrate in bit/s from 6000 to 64000", "24000"),
        default=24_000,
        help="Opus bitrate, 6000..64000 bit/s",
    )
    p.add_argument("--frame-ms", type=int, default=20, choices=[10, 20, 40, 60], help="frame ms")
    p.add_argument(
        "--bandwidth", default="wb", choices=["nb", "mb", "wb", "swb", "fb"], help="audio bandwidth"
    )
    p.add_argument("--no-fec", action="store_true", help="disable Opus in-band FEC")
    p.add_argument("--dtx", action="store_true", help="enable Opus DTX")
    p.add_argument(
        "--rotate-frames",
        type=_number(int, 1, 1 << 31, "a number of frames from 1 to 2^31", "500"),
        default=500,
        help="AES: new key after N frames",
    )
    p.add_argument(
        "--rotate-seconds",
        type=_number(float, 0.02, 86_400, "seconds from 0.02 to 86400", "10"),
        default=10.0,
        help="AES: ... or after S seconds, whichever comes first",
    )
    p.add_argument(
        "--tag-bits", type=int, default=64, choices=[32, 64, 128], help="OTP: MAC tag bits"
    )
    p.add_argument(
        "--pad-lookahead",
        type=_number(float, 0.05, 10, "seconds of talk from 0.05 to 10", "0.5"),
        default=0.5,
        help="OTP: one-time pad held ahead of need, in seconds of talk (less wastes less QKD "
        "key at hang-up; more rides out a slow KME); on the caller",
    )
    p.add_argument(
        "--input",
        metavar="SPEC",
        help="'default' (the system's default input device), 'silence', a WAV file, or a "
        "device name or index from `qphone devices` (default: 'default' in a terminal, else "
        "'silence')",
    )
    p.add_argument(
        "--output",
        metavar="SPEC",
        help="'default' (the system's default output device), 'discard', a WAV file, or a "
        "device (default: 'default' in a terminal, else 'discard')",
    )
    p.add_argument("--loop", action="store_true", help="repeat the WAV input until the call ends")
    p.add_argument("--duration", type=_SECONDS, help="hang up after SECONDS (default: no limit)")
    p.add_argument(
        "--connect-timeout",
        type=_SECONDS,
        default=10.0,
        help="seconds to reach the other terminal and get its answer (signaling), and again "
        "for ICE + DTLS",
    )
    p.add_argument(
        "--handshake-timeout",
        type=_SECONDS,
        default=15.0,
        help="seconds to wait for each handshake message of the other terminal (a silent one "
        "fails the call; an answerer then waits for the next call)",
    )
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
    p.add_argument(
        "--ice-server",
        action="append",
        default=[],
        help="STUN/TURN URL (repeatable; default: none)",
    )
    p.add_argument(
        "--ice-host", action="append", default=[], help="only gather on this address (repeatable)"
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="force the live status line on stderr (default: on when stderr is a terminal, "
        "with or without --json)",
    )
    _add_impairment_options(
        p.add_argument_group("network impairment of what this side receives (for testing)")
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the call summary as one JSON object on stdout (also on failure, with error)",
    )


def _add_impairment_options(g: Any) -> None:
    g.add_argument("--loss", type=_PROB, default=0.0, help="packet loss probability")
    g.add_argument(
        "--burst-loss",
        type=_number(float, 1, 1000, "a mean burst length of at least 1", "2"),
        default=1.0,
        help="mean loss burst length (packets)",
    )
    g.add_argument("--delay", type=_MS, default=0.0, help="added one-way delay (ms)")
    g.add_argument("--jitter", type=_MS, default=0.0, help="delay jitter (ms)")
    g.add_argument("--reorder", type=_PROB, default=0.0, help="reordering probability")
    g.add_argument("--duplicate", type=_PROB, default=0.0, help="duplication probability")
    g.add_argument("--seed", type=int, default=0, help="seed of the impairment RNG")


# ------------------------------------------------------------------------------ other commands
@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the command as Ctrl-C does (KeyboardInterrupt: every ``finally`` runs, so
    the keyserver the command started is stopped); a call's endpoint takes the signal over
    while it runs and hangs up."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _progress_stream(args: argparse.Namespace) -> Any:
    """Where a command's progress and human summary go: stderr with --json (stdout holds the
    JSON alone), else stdout."""
    return sys.stderr if args.json else sys.stdout


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        with _sigterm_interrupts():
            return _demo(args)
    except KeyboardInterrupt:
        print("qphone demo: interrupted (everything it started is stopped)", file=sys.stderr)
        return 130


def _demo(args: argparse.Namespace) -> int:
    if args.core:
        from qphone.demo.coredemo import run_core_demo

        stream = _progress_stream(args)
        summary = run_core_demo(
            seconds=args.seconds, out=lambda line: print(line, file=stream, flush=True)
        )
    else:
        from pathlib import Path

        from qphone.config.profile import ProfileError
        from qphone.demo.calldemo import run_call_demo
        from qphone.endpoint.outcome import CallFailed, CallInterrupted

        modes = ["aes", "otp"] if args.mode == "both" else [args.mode]
        if args.network is not None and args.distance_km is not None:
            print(
                "qphone demo: with --network the topology sets every link's length; drop "
                "--distance-km",
                file=sys.stderr,
            )
            return 2
        if args.network is None and args.multipath != 1:
            print("qphone demo: --multipath needs --network TOPOLOGY", file=sys.stderr)
            return 2
        kme_args = ["--distance-km", str(args.distance_km or 10.0)]
        if args.network is not None:
            kme_args = ["--multipath", str(args.multipath)]
        try:
            summary = run_call_demo(
                args.seconds,
                modes,
                Path(args.dir) if args.dir else None,
                kme_args,
                network=args.network,
                out=_progress_stream(args),
            )
        except CallInterrupted:
            print("qphone demo: interrupted", file=sys.stderr)
            return 130
        except (CallFailed, ProfileError, RuntimeError, OSError) as exc:
            if args.debug:
                raise
            print(f"qphone demo failed: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(summary))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from qphone.measure import bench

    result = bench.run_benchmarks([args.what], rounds=args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        print(bench.format_table(result))
    return 0


def _cmd_loopback(args: argparse.Namespace) -> int:
    try:
        with _sigterm_interrupts():
            return _loopback(args)
    except KeyboardInterrupt:
        print("qphone loopback: interrupted (everything it started is stopped)", file=sys.stderr)
        return 130


def _loopback(args: argparse.Namespace) -> int:
    from pathlib import Path

    from qphone.audio.streams import AudioSpecError, check_writable
    from qphone.audio.wav import WavFormatError, wav_info

    if (args.profile_a is None) != (args.profile_b is None):
        print("qphone loopback: give both --profile-a and --profile-b, or neither", file=sys.stderr)
        return 2
    if args.network is None and args.multipath != 1:
        print("qphone loopback: --multipath needs --network TOPOLOGY", file=sys.stderr)
        return 2
    if args.network is not None and (args.eve_fraction or args.distance_km is not None):
        print(
            "qphone loopback: with --network the topology sets every link's length; drop "
            "--distance-km/--eve-fraction (put Eve on a link with `qkd-keyserver network eve`)",
            file=sys.stderr,
        )
        return 2
    if args.network is not None and args.profile_a is not None:
        print(
            "qphone loopback: --network starts its own network; drop --profile-a/--profile-b "
            "(or drop --network to use running KMEs)",
            file=sys.stderr,
        )
        return 2
    try:
        if wav_info(args.sample).frames == 0:
            raise WavFormatError(f"{args.sample}: a WAV file with no audio: give one with sound")
    except WavFormatError as exc:
        print(f"qphone loopback: SAMPLE {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"qphone loopback: SAMPLE {args.sample}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for option, path in (("--out", args.out), ("--report", args.report), ("--plot", args.plot)):
        if path is None:
            continue
        try:
            check_writable(Path(path))
        except AudioSpecError as exc:
            print(f"qphone loopback: {option} {path}: {exc}", file=sys.stderr)
            return 2
    if args.plot is not None:
        if Path(args.plot).suffix.lower() != ".png":
            print(
                f"qphone loopback: --plot {args.plot}: the plot is a PNG image: give a file "
                "name ending in .png",
                file=sys.stderr,
            )
            return 2
        try:
            import matplotlib  # noqa: F401 - the plot needs it: say so before the run
        except ImportError:
            print(
                "qphone loopback: --plot needs matplotlib: install the measure extras "
                "(`.venv/bin/pip install -e '.[measure]'`) or drop --plot",
                file=sys.stderr,
            )
            return 2
    from qphone.core.callparams import Mode
    from qphone.endpoint.outcome import CallFailed
    from qphone.measure.loopback import LoopbackOptions, run_loopback

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
        distance_km=10.0 if args.distance_km is None else args.distance_km,
        eve_fraction=args.eve_fraction,
        profile_a=Path(args.profile_a) if args.profile_a else None,
        profile_b=Path(args.profile_b) if args.profile_b else None,
        network=args.network,
        multipath=args.multipath,
        rotate_frames=args.rotate_frames,
        rotate_seconds=args.rotate_seconds,
        pad_lookahead_s=args.pad_lookahead,
        progress=not args.quiet,
    )
    try:
        run = run_loopback(opts)
    except (CallFailed, RuntimeError, ValueError, OSError) as exc:
        if args.debug:
            raise
        print(f"qphone loopback failed: {exc}", file=sys.stderr)
        return 1
    r = run.report
    if args.json:
        print(json.dumps(r), flush=True)
    text = _progress_stream(args)
    lat, fr, key = r["latency_ms"], r["frames"], r["key"]
    q = r["quality"].get("encrypted", {})
    total = key["total"]
    print(
        f"mouth-to-ear p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms | frames "
        f"sent {fr['sent']}, lost {fr['lost']}, concealed {fr['concealed']}, FEC "
        f"{fr['fec_recovered']} | QKD drawn {total['qkd_bits_drawn']} bits for a need of "
        f"{key['qkd_bits_needed']} (ratio {key['ratio']}), used {total['qkd_bits_used']}, "
        f"wasted {total['qkd_bits_wasted']} | "
        + ("PESQ-NB " + str(q["pesq_nb"]) if "pesq_nb" in q else f"PESQ {q.get('pesq_wb')}")
        + f" STOI {q.get('stoi')} | "
        f"report {args.report}" + (f", plot {args.plot}" if args.plot else ""),
        file=text,
    )
    if run.caller.summary.route is not None:
        print(run.caller.summary.route.describe(), file=text)
    return 0


def _cmd_devices(args: argparse.Namespace) -> int:
    from qphone.audio.devices import AudioDeviceError, format_devices, list_devices

    try:
        devices = list_devices()
    except AudioDeviceError as exc:
        print(f"qphone devices: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([d.__dict__ for d in devices]))
    else:
        print(format_devices(devices))
    return 0


def _add_network_options(p: argparse.ArgumentParser) -> None:
    """``--network`` and ``--multipath`` of ``demo`` and ``loopback``."""
    p.add_argument(
        "--network",
        metavar="TOPOLOGY",
        help="start this network of trusted nodes instead of one link (beijing-hefei: 16 "
        "hops, 1,070 km; hefei-metro; pair; or a topology file) and call from alice's site "
        "to bob's; the summary gives the key route",
    )
    p.add_argument(
        "--multipath",
        type=_number(int, 1, 8, "a number of node-disjoint routes from 1 to 8", "1"),
        default=1,
        help="with --network: split every key over this many node-disjoint routes",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="qphone", description="Quantum-safe voice calls.", formatter_class=_Help)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = _sub(
        sub,
        "demo",
        "a real encrypted call between two endpoints on this machine (no setup)",
        epilog=RUN_EXIT_CODES,
    )
    d.add_argument("--seconds", type=_SECONDS, default=6.0, help="length of each call")
    d.add_argument("--mode", choices=["aes", "otp", "both"], default="both", help="which calls")
    d.add_argument(
        "--dir",
        help="keep the keyserver PKI, profiles and recordings here (default: a new "
        "temporary directory)",
    )
    d.add_argument(
        "--distance-km",
        type=_number(float, 0, 300, "a fibre length in km from 0 to 300", "10"),
        help="simulated fibre length of the pair's link; a --network topology sets its own "
        "(default: 10.0)",
    )
    _add_network_options(d)
    d.add_argument(
        "--core", action="store_true", help="only the security core, in memory (no network)"
    )
    d.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON object on stdout (progress goes to stderr)",
    )
    d.set_defaults(func=_cmd_demo)
    b = _sub(sub, "bench", "benchmarks against same-run baselines")
    b.add_argument(
        "what",
        nargs="?",
        default="all",
        choices=["crypto", "handshake", "latency", "speech", "load", "all"],
        help="which benchmark (speech: PESQ on recorded human speech; load: both modes beside "
        "two busy-loop processes)",
    )
    b.add_argument("--json", action="store_true", help="one JSON object on stdout")
    b.add_argument(
        "--rounds",
        type=_number(int, 1, 10_000, "a number of rounds of at least 1", "15"),
        default=15,
        help="measurement rounds (median)",
    )
    b.set_defaults(func=_cmd_bench)
    c = _sub(
        sub,
        "call",
        "call a terminal that runs `qphone answer`",
        epilog=HANG_UP + "\n\n" + EXIT_CODES,
    )
    c.add_argument("target", type=_hostport, help="HOST:PORT of the answering terminal")
    _add_call_options(c, answer=False)
    c.set_defaults(func=_cmd_call)
    a = _sub(
        sub,
        "answer",
        "wait for a call",
        description="Wait for a call and take it. A call that fails before it is up because of "
        "the caller (options this side's policy refuses, the caller hanging up or vanishing in "
        "the handshake) is said in one line, the caller is told which option to change, and "
        "the terminal waits for the next call; a changed identity of the caller ends it.",
        epilog=HANG_UP + "\n\n" + EXIT_CODES,
    )
    a.add_argument("--listen", type=_hostport, required=True, help="HOST:PORT to listen on")
    _add_call_options(a, answer=True)
    a.set_defaults(func=_cmd_answer)
    lb = _sub(
        sub,
        "loopback",
        "replay a recording through a full call and measure it",
        epilog=RUN_EXIT_CODES,
    )
    lb.add_argument("sample", help="WAV file to play through the call")
    lb.add_argument("--out", required=True, help="WAV file: what the far end played out")
    lb.add_argument("--report", required=True, help="JSON report")
    lb.add_argument("--plot", help="PNG plot of the report (default: none)")
    lb.add_argument("--mode", choices=["aes", "otp"], default="aes", help="the call's mode")
    lb.add_argument(
        "--bitrate",
        type=_number(int, 6000, 64000, "an Opus bitrate in bit/s from 6000 to 64000", "24000"),
        default=24_000,
        help="Opus bitrate",
    )
    lb.add_argument("--frame-ms", type=int, default=20, choices=[10, 20, 40, 60], help="frame ms")
    _add_impairment_options(lb.add_argument_group("the network between the two endpoints"))
    lb.add_argument(
        "--distance-km",
        type=_number(float, 0, 300, "a fibre length in km from 0 to 300", "10"),
        help="simulated fibre length of the pair's link; a --network topology sets its own "
        "(default: 10.0)",
    )
    lb.add_argument("--eve-fraction", type=_PROB, default=0.0, help="intercept-resend fraction")
    lb.add_argument(
        "--rotate-frames",
        type=_number(int, 1, 1 << 31, "a number of frames from 1 to 2^31", "250"),
        default=250,
        help="AES: new key after N frames (250, half of a call's 500, so that a bundled 8 s "
        "sample rotates; with --rotate-seconds 3600 rotation is counted in frames only, which "
        "makes the report's key figures the same on every run)",
    )
    lb.add_argument(
        "--rotate-seconds",
        type=_number(float, 0.02, 86_400, "seconds from 0.02 to 86400", "10"),
        default=3600.0,
        help="AES: ... or after S seconds",
    )
    lb.add_argument(
        "--pad-lookahead",
        type=_number(float, 0.05, 10, "seconds of talk from 0.05 to 10", "0.5"),
        default=0.5,
        help="OTP: pad held ahead of need, in seconds of talk",
    )
    _add_network_options(lb)
    lb.add_argument("--profile-a", help="caller profile of running KMEs (default: start a pair)")
    lb.add_argument("--profile-b", help="answerer profile of running KMEs")
    lb.add_argument("--quiet", action="store_true", help="no progress bar")
    lb.add_argument(
        "--json",
        action="store_true",
        help="print the report as one JSON object on stdout (the summary line goes to stderr)",
    )
    lb.set_defaults(func=_cmd_loopback)
    dv = _sub(sub, "devices", "list sound devices")
    dv.add_argument("--json", action="store_true", help="one JSON array on stdout")
    dv.set_defaults(func=_cmd_devices)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except _BadArguments as exc:
        print(f"{exc.prog}: {exc} (see `{exc.prog} --help`)", file=sys.stderr)
        if "--json" in argv and exc.prog.split()[-1] in ("call", "answer"):
            from qphone.endpoint.summary import not_started

            print(json.dumps(not_started(str(exc), None).to_json()))
        return 2
    # one clear line per failure: library logs (aiortc, aioice, the KME client's retries) only
    # with --debug
    logging.basicConfig(
        level=logging.INFO if args.debug else logging.CRITICAL + 1,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"qphone {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
