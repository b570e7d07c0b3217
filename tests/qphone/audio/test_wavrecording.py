"""A call's recording is written second by second and survives its folder vanishing."""

from __future__ import annotations

import asyncio
import shutil
import wave
from pathlib import Path

import numpy as np

from qphone.audio.streams import WavSink
from qphone.audio.wav import read_wav
from qphone.audio.wavrecording import WavRecording, wav_header

RATE = 16_000
FRAME = RATE // 50  # 20 ms


def _frames(seconds: float, start: int = 0) -> list[bytes]:
    """Distinct frames: frame i holds the value start + i in every sample."""
    n = int(seconds * 50)
    return [np.full(FRAME, start + i, dtype="<i2").tobytes() for i in range(n)]


def _samples(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def test_header_is_what_the_wave_module_writes(tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "ref.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(640))
    assert (tmp_path / "ref.wav").read_bytes()[:44] == wav_header(RATE, 640)


def test_the_file_holds_all_but_the_last_second_while_the_call_goes_on(tmp_path: Path) -> None:
    warnings: list[str] = []
    rec = WavRecording(tmp_path / "call.wav", RATE, warnings.append)
    rec.open()
    for frame in _frames(3.5):
        rec.append(frame)
    # not closed (as after a crash): the file is a valid WAV with at least 2.5 s in it
    on_disk = _samples(tmp_path / "call.wav")
    assert 2.5 * RATE <= len(on_disk) <= 3.5 * RATE
    assert np.array_equal(on_disk[::FRAME], np.arange(len(on_disk) // FRAME))
    rec.close()
    assert len(_samples(tmp_path / "call.wav")) == 3.5 * RATE
    assert warnings == []


def test_a_removed_folder_moves_the_recording_and_keeps_all_of_it(tmp_path: Path) -> None:
    folder = tmp_path / "calls"
    folder.mkdir()
    warnings: list[str] = []
    rec = WavRecording(folder / "call.wav", RATE, warnings.append)
    rec.open()
    for frame in _frames(2.0):
        rec.append(frame)
    shutil.rmtree(folder)
    for frame in _frames(2.0, start=100):
        rec.append(frame)
    rec.close()
    assert rec.path != folder / "call.wav" and rec.path.exists()
    assert len(warnings) == 1
    assert warnings[0].startswith(f"recording {folder / 'call.wav'}: its file was removed")
    assert f"it goes on in {rec.path}" in warnings[0]
    got = _samples(rec.path)
    assert len(got) == 4 * RATE
    expected = np.concatenate([np.arange(100), np.arange(100, 200)])
    assert np.array_equal(got[::FRAME], expected)
    rec.path.unlink()


def test_a_folder_gone_before_the_call_moves_it_too(tmp_path: Path) -> None:
    warnings: list[str] = []
    sink = WavSink(tmp_path / "gone" / "call.wav", RATE)
    sink.warn = warnings.append

    async def run() -> None:
        await sink.start()
        for frame in _frames(1.5):
            sink.write_frame(frame)
        await sink.close()

    asyncio.run(run())
    assert sink.path.parent != tmp_path / "gone" and len(warnings) == 1
    assert "cannot create it" in warnings[0]
    pcm, rate = read_wav(sink.path)
    assert rate == RATE and len(pcm) == 1.5 * RATE
    sink.path.unlink()
