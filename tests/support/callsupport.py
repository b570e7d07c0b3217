"""Shared helpers for call tests: a real keyserver demo pair, qphone processes, references."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from qphone.calldemo import free_port as free_port  # re-exported for the tests
from qphone.calldemo import running_keyserver
from qphone.opuscodec import OpusConfig, OpusDecoder, OpusEncoder
from qphone.wavio import iter_frames, read_wav

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
BIN = Path(sys.executable).parent


@contextlib.contextmanager
def keyserver_demo(directory: Path, *extra: str, timeout: float = 90.0) -> Iterator[Path]:
    """Run `qkd-keyserver demo` (two KME processes + the simulated link) until the block ends."""
    with running_keyserver(directory, ["--seed", "7", *extra], timeout) as d:
        yield d


def qphone(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "qphone"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def answering(*args: str, timeout: float = 60.0) -> tuple[subprocess.Popen[bytes], list[str]]:
    """Start `qphone answer ...` and return once it listens (its stderr says so)."""
    proc = qphone("answer", *args)
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        if not line:
            break
        seen.append(line)
        if "waiting for a call" in line:
            return proc, seen
    proc.kill()
    raise RuntimeError("qphone answer did not start listening: " + "".join(seen))


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, dict, str]:
    out, err = proc.communicate(timeout=timeout)
    text = out.decode().strip().splitlines()
    summary = json.loads(text[-1]) if text and text[-1].startswith("{") else {}
    return proc.returncode, summary, err.decode()


def reference_decode(wav: Path, config: OpusConfig) -> np.ndarray:
    """The same Opus stream encoded and decoded without any network or encryption."""
    pcm, _ = read_wav(wav, config.sample_rate)
    enc, dec = OpusEncoder(config), OpusDecoder(config)
    out = [dec.decode(enc.encode(f)) for f in iter_frames(pcm, config.samples_per_frame)]
    return np.frombuffer(b"".join(out), dtype="<i2").astype(np.float64)


def wav_array(path: Path) -> np.ndarray:
    pcm, _ = read_wav(path, 48000)
    return np.asarray(pcm, dtype=np.float64)


def private_profile(demo: Path, name: str, tmp: Path) -> Path:
    """A copy of the demo's profile for ``name`` with its own identity and pin files."""
    text = (demo / f"{name}.toml").read_text()
    text = text.replace(str(demo / f"{name}.identity"), str(tmp / f"{name}.identity"))
    text = text.replace(
        str(demo / f"{name}.known_peers.json"), str(tmp / f"{name}.known_peers.json")
    )
    out = tmp / f"{name}.toml"
    out.write_text(text)
    return out
