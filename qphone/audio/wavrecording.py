"""A call's recording: a mono 16-bit PCM WAV file written as the call goes, never lost.

The file is opened when the call starts and every second of audio is appended and the header's
sizes updated, so at any time the file on disk is a valid WAV holding all but at most the last
second (a crash or SIGKILL loses no more).  A recording never ends a call: if its file cannot
be written (the folder was removed, the disk is full) or was unlinked under it (``rm -r`` of
its folder while it is open), the recording goes on in a new file in the system's temporary
directory, with what was already recorded copied there, and one warning says where.  If even
that fails, the warning says so and the rest of the call is not recorded.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: bytes of the header :func:`wav_header` writes (RIFF, fmt, data chunk headers)
HEADER_BYTES = 44
#: a WAV file's sizes are 32-bit: stop recording before the data chunk would overflow
MAX_DATA_BYTES = 0xFFFF_FFFF - HEADER_BYTES


def wav_header(rate: int, data_bytes: int, channels: int = 1) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV file holding ``data_bytes`` of samples."""
    block = 2 * channels
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class WavRecording:
    """Appends int16 PCM to ``path`` second by second (see the module docstring).

    ``warn`` gets one line when the recording had to move or stopped; :attr:`path` is where the
    recording is (after a move, the new file)."""

    def __init__(self, path: Path, rate: int, warn: Callable[[str], None]) -> None:
        self.path = path
        self.rate = rate
        self.warn = warn
        self._file: BinaryIO | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._written = 0  # bytes of samples in the file
        self._moved = False
        self._stopped = False

    @property
    def recorded_bytes(self) -> int:
        return self._written + self._pending_bytes

    def open(self) -> None:
        try:
            self._file = self._create(self.path)
        except OSError as exc:
            self._move(f"cannot create it ({exc.strerror or exc})")

    def append(self, pcm: bytes) -> None:
        if self._stopped:
            return
        self._pending.append(pcm)
        self._pending_bytes += len(pcm)
        if self._pending_bytes >= 2 * self.rate:  # a second of audio
            self.flush()

    def flush(self) -> None:
        """Write what is pending and the header's sizes; check the file is still there."""
        if self._stopped or self._file is None:
            return
        if self._written + self._pending_bytes > MAX_DATA_BYTES:
            self._stop("it reached the 4 GiB limit of a WAV file")
            return
        try:
            self._write_pending(self._file)
            if os.fstat(self._file.fileno()).st_nlink == 0:  # its folder (or it) was removed
                self._move("its file was removed during the call")
        except OSError as exc:
            self._move(f"writing it failed ({exc.strerror or exc})")

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self.warn(f"recording {self.path}: closing it failed ({exc.strerror or exc})")
            self._file = None

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _create(path: Path) -> BinaryIO:
        f = open(path, "w+b")  # noqa: SIM115 - kept open for the call, closed by close()
        return f

    def _write_pending(self, f: BinaryIO) -> None:
        if f.tell() == 0:
            f.write(wav_header(self.rate, 0))
        data = b"".join(self._pending)
        f.seek(HEADER_BYTES + self._written)
        f.write(data)
        self._written += len(data)
        self._pending, self._pending_bytes = [], 0
        f.seek(0)
        f.write(wav_header(self.rate, self._written))
        f.flush()

    def _move(self, reason: str) -> None:
        """Go on in a new file in the temporary directory, with what was written so far."""
        old, old_path = self._file, self.path
        self._file = None
        earlier = b""
        if old is not None:
            try:
                old.seek(HEADER_BYTES)
                earlier = old.read(self._written)
            except OSError:
                earlier = b""
            with contextlib.suppress(OSError):
                old.close()
        if self._moved:
            self._stop(reason)
            return
        self._moved = True
        fd, name = tempfile.mkstemp(prefix=f"qphone-{old_path.stem}-", suffix=".wav")
        os.close(fd)
        new_path = Path(name)
        lost = self._written - len(earlier)
        self._written = 0
        self._pending.insert(0, earlier)
        self._pending_bytes += len(earlier)
        try:
            self._file = self._create(new_path)
            self._write_pending(self._file)
        except OSError as exc:
            self._stop(f"{reason}, and {new_path} failed too ({exc.strerror or exc})")
            return
        self.path = new_path
        gap = f" ({lost / (2 * self.rate):.1f} s of it could not be read back)" if lost else ""
        self.warn(f"recording {old_path}: {reason}; it goes on in {new_path}{gap}")

    def _stop(self, reason: str) -> None:
        self._stopped = True
        self._pending, self._pending_bytes = [], 0
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self.warn(f"recording {self.path}: {reason}; the rest of the call is not recorded")
