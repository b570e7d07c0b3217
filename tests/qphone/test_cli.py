"""The command line itself (in process): every default in --help, one-line usage errors with
exit 2 and a --json summary, the same hang-up and exit-status words in every call's help."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from qphone.cli import build_parser, main
from tests.support.paths import SAMPLES


def _help(*command: str) -> str:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    return " ".join(sub[command[0]].format_help().split())


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("call", ["--bitrate BITRATE Opus bitrate, 6000..64000 bit/s (default: 24000)",
                  "(default: 500)", "(default: 10.0)", "(default: 0.5)", "(default: 64)",
                  "--connect-timeout", "default: 'default' in a terminal, else 'silence'",
                  "default: 'default' in a terminal, else 'discard'"]),
        ("answer", ["accept only this mode (default: either)", "(default: 500)"]),
        ("loopback", ["(default: 250)", "half of a call's 500", "(default: 3600.0)",
                      "(default: 0.5)", "(default: aes)"]),
        ("demo", ["(default: 6.0)", "(default: both)", "(default: 10.0)"]),
        ("bench", ["(default: 15)", "(default: all)"]),
    ],
)  # fmt: skip
def test_help_shows_every_default(command: str, shown: list[str]) -> None:
    text = _help(command)
    for part in shown:
        assert part in text, (part, text)
    # an option with a value and a default but no word about it would read "(default: None)"
    assert "(default: None)" not in text and "(default: [])" not in text


def test_call_help_says_how_calls_end_and_the_exit_status() -> None:
    for command in ("call", "answer"):
        text = _help(command)
        assert "Any hang-up ends the call for both sides" in text
        assert "130 interrupted" in text and "2 a bad option" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "-1"], "argument --duration: -1 is out of range: give a positive number"),
        (["--duration", "inf"], "argument --duration: inf is out of range"),
        (["--rotate-frames", "0"], "argument --rotate-frames: 0 is out of range"),
        (["--rotate-seconds", "0"], "argument --rotate-seconds: 0 is out of range"),
        (["--tag-bits", "16"], "argument --tag-bits: invalid choice: 16 (choose from 32, 64, 128)"),
        (["--bitrate", "fast"], "argument --bitrate: 'fast' is not an Opus bitrate"),
        (["--reorder", "-0.1"], "argument --reorder: -0.1 is out of range"),
    ],
)
def test_a_bad_value_is_one_line_exit_2_and_a_json_summary(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    rc = main(["call", "127.0.0.1:7000", "--profile", "p.toml", "--json", *args])
    out, err = capsys.readouterr()
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith(f"qphone call: {message}"), err
    assert "see `qphone call --help`" in err
    summary = json.loads(out)
    assert summary["error"].startswith(message) and summary["end_cause"] == "failure"


def test_a_missing_argument_is_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["answer", "--profile", "p.toml"]) == 2
    _, err = capsys.readouterr()
    assert re.fullmatch(r"qphone answer: the following arguments are required: --listen.*\n", err)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--profile-a", "a.toml", "--profile-b", "b.toml"], "--network starts its own network"),
        (["--eve-fraction", "0.5"], "the topology sets every link's length"),
        (["--distance-km", "50"], "`qkd-keyserver network eve`"),
    ],
)
def test_loopback_network_refuses_what_the_topology_decides(
    capsys: pytest.CaptureFixture[str], extra: list[str], words: str
) -> None:
    """With --network nothing is started and nothing written: one line naming the fix."""
    args = ["loopback", "samples/speech_a_48k.wav", "--out", "/nonexistent/out.wav"]
    rc = main([*args, "--report", "/nonexistent/r.json", "--network", "hefei-metro", *extra])
    _, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and words in err, err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["demo", "--network", "pair", "--distance-km", "50"], "drop --distance-km"),
        (["demo", "--multipath", "2"], "--multipath needs --network TOPOLOGY"),
        (["loopback", "samples/speech_a_48k.wav", "--out", "o.wav", "--report", "r.json",
          "--multipath", "2"], "--multipath needs --network TOPOLOGY"),
    ],
)  # fmt: skip
def test_network_options_without_their_partner_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    assert main(args) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and words in err, err


def _wav(path: Path, promised_s: float, data: bytes) -> Path:
    """A 16 kHz mono 16-bit WAV whose header promises ``promised_s`` seconds, with ``data``."""
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    size = int(promised_s * 32000)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


@pytest.mark.parametrize("case", ["truncated", "silent", "report in /proc", "plot not png"])
def test_loopback_checks_sample_and_outputs_before_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str
) -> None:
    """Refused at once in one line, exit 2, nothing started (no keyserver: it would take
    seconds and print its directory), nothing written."""
    sample, report, plot = str(SAMPLES / "speech_a_16k.wav"), str(tmp_path / "r.json"), None
    if case == "truncated":  # the header says 8 s, the file holds 100 bytes
        sample = str(_wav(tmp_path / "cut.wav", 8, bytes(100)))
        words = "truncated WAV file: its header says 8.00 s of audio but the file holds 0.00 s"
    elif case == "silent":  # a complete file holding no samples
        sample = str(_wav(tmp_path / "empty.wav", 0, b""))
        words = f"SAMPLE {sample}: a WAV file with no audio: give one with sound"
    elif case == "report in /proc":
        report, words = "/proc/r.json", "--report /proc/r.json: no file can be created in /proc"
    else:
        plot, words = str(tmp_path / "p.jpg"), "the plot is a PNG image"
    args = ["loopback", sample, "--out", str(tmp_path / "o.wav"), "--report", report]
    rc = main(args + (["--plot", plot] if plot else []))
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and words in err, err
    inputs = {"truncated": ["cut.wav"], "silent": ["empty.wav"]}
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == inputs.get(case, [])


def test_every_subcommand_and_option_has_help() -> None:
    from tests.support.clihelp import help_gaps, subcommands

    found = {" ".join(path): help_gaps(p) for path, p in subcommands(build_parser())}
    assert {"call", "answer", "demo", "loopback", "devices", "bench"} <= set(found)
    assert {path: gaps for path, gaps in found.items() if gaps} == {}
