"""qphone.audio.devices: real PortAudio streams through a private PulseAudio null sink."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from qphone.audio.devices import (
    AudioDevice,
    AudioDeviceError,
    DeviceInfo,
    format_devices,
    list_devices,
    resolve_device,
)
from qphone.audio.level import level_dbfs
from qphone.audio.wav import frames_to_pcm, iter_frames, read_wav
from qphone.measure.quality import estimate_delay, overlap
from tests.support.paths import SAMPLES
from tests.support.pulseaudio import PulseServer
from tests.support.signals import tone

RATE = 48000
FRAME = 960


# ------------------------------------------------------------------ without devices


DEVICES = [
    DeviceInfo(0, "hw:Mic", 2, 0, 44100.0, "ALSA"),
    DeviceInfo(1, "pulse", 32, 32, 44100.0, "ALSA"),
    DeviceInfo(2, "default", 32, 32, 44100.0, "ALSA", True, True),
    DeviceInfo(3, "pulse-echo", 0, 2, 48000.0, "ALSA"),
]


def test_resolve_device() -> None:
    assert resolve_device(DEVICES, None, output=True) is None
    assert resolve_device(DEVICES, 1, output=True) == 1
    assert resolve_device(DEVICES, "2", output=False) == 2
    assert resolve_device(DEVICES, "pulse", output=True) == 1  # exact name wins
    assert resolve_device(DEVICES, "echo", output=True) == 3
    assert resolve_device(DEVICES, "mic", output=False) == 0
    with pytest.raises(AudioDeviceError, match="index 0"):
        resolve_device(DEVICES, 0, output=True)  # input-only device
    with pytest.raises(AudioDeviceError, match="exactly one"):
        resolve_device(DEVICES, "ul", output=True)
    with pytest.raises(AudioDeviceError, match="exactly one"):
        resolve_device(DEVICES, "nothing", output=False)


def test_default_and_missing_devices() -> None:
    assert resolve_device(DEVICES, "default", output=False) == 2  # the device marked default
    no_default = [DeviceInfo(0, "hw:Mic", 2, 0, 44100.0, "ALSA")]
    with pytest.raises(AudioDeviceError, match=r"no default sound input device.*qphone devices"):
        resolve_device(no_default, "default", output=False)
    with pytest.raises(AudioDeviceError, match=r"no sound output device found.*--output FILE"):
        resolve_device(no_default, "default", output=True)
    assert format_devices([]).startswith("no sound devices found")


def test_format_devices_marks_defaults() -> None:
    text = format_devices(DEVICES)
    assert "default (ALSA)<>" in text and "hw:Mic (ALSA)  " in text


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        AudioDevice(capture=False, playback=False)
    with pytest.raises(ValueError):
        AudioDevice(frame_samples=0)


# ------------------------------------------------------ through the PulseAudio null sink


@pytest.mark.sound
def test_devices_listed_through_pulse(pulse_server: PulseServer) -> None:
    devices = list_devices()
    pulse = [d for d in devices if d.name == "pulse"]
    assert pulse, format_devices(devices)
    assert pulse[0].max_input_channels > 0 and pulse[0].max_output_channels > 0
    assert "pulse" in format_devices(devices)


async def _play_and_record(
    pcm: np.ndarray, record_s: float, meter: list[float] | None = None
) -> tuple[np.ndarray, AudioDevice]:
    frames = list(iter_frames(pcm, FRAME))
    async with AudioDevice(
        rate=RATE,
        frame_samples=FRAME,
        input_device="pulse",
        output_device="pulse",
        max_queue_frames=len(frames) + 50,
    ) as dev:
        recorded: list[bytes] = []
        for f in frames:
            dev.write_frame(f)
        while len(recorded) < int(record_s * RATE / FRAME):
            recorded.append(await asyncio.wait_for(dev.read_frame(), timeout=5))
            if meter is not None:
                meter.append(dev.input_level_dbfs)

        async def keep_reading() -> None:
            while True:
                await dev.read_frame()

        pending = asyncio.ensure_future(keep_reading())
    # closing wakes a waiting reader (after any frames still queued) with a clear error,
    # and later reads fail the same way
    with pytest.raises(AudioDeviceError, match="closed"):
        await asyncio.wait_for(pending, timeout=5)
    with pytest.raises(AudioDeviceError, match="closed"):
        await dev.read_frame()
    assert all(len(f) == 2 * FRAME for f in recorded)
    return frames_to_pcm(recorded), dev


@pytest.mark.sound
async def test_play_into_null_sink_and_record_from_monitor(pulse_server: PulseServer) -> None:
    speech, _ = read_wav(SAMPLES / "speech_b_48k.wav", RATE)
    clip = speech[int(0.2 * RATE) : int(2.7 * RATE)]  # 2.5 s of speech
    recording, dev = await _play_and_record(clip, record_s=4.0)
    a = estimate_delay(clip, recording, RATE, max_delay_s=2.0)
    # the null sink is lossless: what the monitor gives back is what was played, bit for bit up
    # to where the recording starts (the record stream may attach after playback has begun)
    assert a.correlation > 0.95, (a, pulse_server.log()[-2000:])
    ref, rec = overlap(clip, recording, a.delay)
    assert len(ref) > 0.8 * len(clip)
    assert np.array_equal(ref[FRAME:-FRAME], rec[FRAME:-FRAME]) or a.correlation > 0.99
    assert dev.stats.frames_played >= len(clip) // FRAME
    assert dev.stats.frames_captured >= 200
    assert dev.stats.capture_overruns == 0


@pytest.mark.sound
async def test_input_level_meter_follows_the_signal(pulse_server: PulseServer) -> None:
    signal = tone(440.0, 2.0, -18.0)
    meter: list[float] = []
    recording, dev = await _play_and_record(signal, record_s=3.5, meter=meter)
    levels = [level_dbfs(f) for f in iter_frames(recording, FRAME)]
    loud = [x for x in levels if x > -30]
    assert max(levels) == pytest.approx(-18.0, abs=1.0)
    assert 70 <= len(loud) <= 101  # about 2 s of 20 ms frames (the start may be missed)
    # the meter follows the input: by the end of the recording the tone is over
    assert levels[-1] < -60
    assert dev.input_level_dbfs < -60
    assert max(meter) == pytest.approx(-18.0, abs=1.0)
    assert sum(x > -30 for x in meter) >= 50
