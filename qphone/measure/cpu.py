"""CPU used by one call endpoint: ``qphone answer`` in its own process, measured from /proc.

:func:`measure_endpoint_cpu` starts the keyserver demo pair (unless given a directory where
one runs), then ``qphone answer`` with a WAV input (the sample repeated to the call's length)
and ``qphone call`` against it, both as subprocesses on 127.0.0.1.  The answerer's CPU time
(user + system, all threads, from ``/proc/<pid>/stat``) is read when it says the call is
connected (the line with the SAS) and when it says the call ended; divided by the wall time
between the two it is the fraction of one core the endpoint used for the call: capture,
Opus encode + protect, transport, unprotect, jitter buffer, decode, playout, rekeying.
Start-up (imports, identity) and teardown are outside that window.  The idle baseline is the
same process while it waits for the call (listening, before any call).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qphone.audio.wav import read_wav, write_wav
from qphone.demo.keyserverprocess import free_port, installed_script, running_keyserver

STARTUP_TIMEOUT = 60.0
SLACK_S = 60.0  # on top of the call's duration, for set-up and hang-up


class CpuMeasureError(RuntimeError):
    """The measurement could not be made (a process failed or said nothing in time)."""


@dataclass(frozen=True)
class CpuResult:
    call_cpu_s: float
    call_wall_s: float
    idle_cpu_s: float
    idle_wall_s: float
    bitrate: int
    bandwidth: str
    frames_sent: int  # by the answerer, from its call summary
    end_reason: str  # of the answerer's call, from its call summary

    @property
    def call_fraction(self) -> float:
        """Fraction of one core used by the endpoint during the call."""
        return self.call_cpu_s / self.call_wall_s

    @property
    def idle_fraction(self) -> float:
        return self.idle_cpu_s / self.idle_wall_s if self.idle_wall_s > 0 else math.nan

    def summary(self) -> dict[str, Any]:
        return {
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()},
            "endpoint_cpu_fraction": round(self.call_fraction, 4),
            "idle_cpu_fraction": round(self.idle_fraction, 4),
        }


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc/<pid>/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError as exc:
        raise CpuMeasureError(f"cannot read the CPU time of process {pid}: {exc}") from exc
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _clock_ticks()


def looped_wav(sample: Path, seconds: float, dest: Path, rate: int = 48000) -> Path:
    """``sample`` repeated to ``seconds`` (so the input never runs out during the call)."""
    pcm, _ = read_wav(sample, rate)
    write_wav(dest, np.resize(pcm, max(1, round(seconds * rate))).astype(np.int16), rate)
    return dest


async def _line_with(
    stream: asyncio.StreamReader, needle: str, deadline: float, seen: list[str]
) -> None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CpuMeasureError(f"no {needle!r} from qphone answer in time: {''.join(seen)}")
        try:
            async with asyncio.timeout(left):
                raw = await stream.readline()
        except TimeoutError:
            continue
        if not raw:
            raise CpuMeasureError(f"qphone answer exited before {needle!r}: {''.join(seen)}")
        line = raw.decode(errors="replace")
        seen.append(line)
        if needle in line:
            return


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await proc.wait()


async def measure_answerer_cpu(
    kme_dir: Path,
    sample: Path,
    seconds: float,
    bitrate: int = 24_000,
    bandwidth: str = "wb",
    idle_seconds: float = 2.0,
    port: int | None = None,
) -> CpuResult:
    """One call of ``seconds`` between two ``qphone`` processes using the profiles (alice.toml,
    bob.toml) in ``kme_dir``; returns the CPU of the answering process (bob)."""
    if not 0 < seconds <= 3600 or idle_seconds < 0:
        raise ValueError("need 0 < seconds <= 3600 and idle_seconds >= 0")
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="qphone-cpu-") as d:
        return await _measure(
            Path(d), kme_dir, sample, seconds, bitrate, bandwidth, idle_seconds, port
        )


async def _measure(
    work: Path,
    kme_dir: Path,
    sample: Path,
    seconds: float,
    bitrate: int,
    bandwidth: str,
    idle_seconds: float,
    port: int,
) -> CpuResult:
    wav = looped_wav(sample, seconds + 2.0, work / "input.wav")
    common = [
        "--input",
        str(wav),
        "--bitrate",
        str(bitrate),
        "--bandwidth",
        bandwidth,
        "--duration",
        f"{seconds:g}",
        "--ice-host",
        "127.0.0.1",
    ]
    deadline = time.monotonic() + seconds + idle_seconds + SLACK_S
    answerer = await asyncio.create_subprocess_exec(
        installed_script("qphone"),
        "answer",
        "--listen",
        f"127.0.0.1:{port}",
        "--profile",
        str(kme_dir / "bob.toml"),
        "--json",
        *common,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    caller: asyncio.subprocess.Process | None = None
    caller_log = open(work / "caller.log", "wb")  # noqa: SIM115 - closed below
    seen: list[str] = []
    try:
        assert answerer.stderr is not None
        await _line_with(
            answerer.stderr, "waiting for a call", time.monotonic() + STARTUP_TIMEOUT, seen
        )
        idle0, t_idle0 = process_cpu_seconds(answerer.pid), time.monotonic()
        await asyncio.sleep(idle_seconds)
        idle1, t_idle1 = process_cpu_seconds(answerer.pid), time.monotonic()
        caller = await asyncio.create_subprocess_exec(
            installed_script("qphone"),
            "call",
            f"127.0.0.1:{port}",
            "--profile",
            str(kme_dir / "alice.toml"),
            *common,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=caller_log,
            stderr=caller_log,
        )
        await _line_with(answerer.stderr, "SAS:", deadline, seen)
        cpu0, t0 = process_cpu_seconds(answerer.pid), time.monotonic()
        await _line_with(answerer.stderr, "call ended", deadline, seen)
        cpu1, t1 = process_cpu_seconds(answerer.pid), time.monotonic()
        rest = max(1.0, deadline - time.monotonic())
        async with asyncio.timeout(rest):
            out, _ = await answerer.communicate()
        async with asyncio.timeout(rest):
            await caller.wait()
        summary = _summary(out)
        if "error" in summary:
            raise CpuMeasureError(f"the call failed: {summary['error']}: {''.join(seen)}")
    finally:
        await _stop(answerer)
        if caller is not None:
            await _stop(caller)
        caller_log.close()
    return CpuResult(
        call_cpu_s=cpu1 - cpu0,
        call_wall_s=t1 - t0,
        idle_cpu_s=idle1 - idle0,
        idle_wall_s=t_idle1 - t_idle0,
        bitrate=bitrate,
        bandwidth=bandwidth,
        frames_sent=int(summary.get("frames_sent", 0)),
        end_reason=str(summary.get("end_reason", "")),
    )


def _summary(stdout: bytes) -> dict[str, Any]:
    """The ``--json`` call summary a qphone process printed last."""
    lines = stdout.decode(errors="replace").strip().splitlines()
    try:
        summary = json.loads(lines[-1]) if lines else None
    except ValueError:
        summary = None
    if not isinstance(summary, dict):
        raise CpuMeasureError(f"qphone answer printed no call summary: {lines[-3:]}")
    return summary


@contextlib.contextmanager
def _keyserver(kme_dir: Path | None) -> Iterator[Path]:
    if kme_dir is not None:
        yield kme_dir
        return
    with (
        tempfile.TemporaryDirectory(prefix="qphone-cpu-kme-") as d,
        running_keyserver(Path(d) / "kme", []) as kme,
    ):
        yield kme


def measure_endpoint_cpu(
    sample: Path,
    seconds: float,
    kme_dir: Path | None = None,
    bitrate: int = 24_000,
    bandwidth: str = "wb",
    idle_seconds: float = 2.0,
) -> CpuResult:
    """CPU of one endpoint for a ``seconds`` call; starts the keyserver pair unless ``kme_dir``
    names the directory of a running ``qkd-keyserver demo`` (its alice.toml and bob.toml)."""
    with _keyserver(kme_dir) as kme:
        return asyncio.run(
            measure_answerer_cpu(kme, sample, seconds, bitrate, bandwidth, idle_seconds)
        )
