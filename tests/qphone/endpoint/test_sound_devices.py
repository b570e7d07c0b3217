"""A call through real sound devices: PortAudio -> a private PulseAudio null sink -> its monitor."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from qphone.audio.devices import AudioDevice
from qphone.audio.opus import OpusConfig
from qphone.audio.wav import frames_to_pcm
from qphone.endpoint.endpoint import CallEndpoint
from qphone.endpoint.options import CallOptions
from qphone.transport.config import LOOPBACK_ADDRESSES, TransportConfig
from tests.support.audiocompare import reference_decode, speech_windows
from tests.support.memorykeysource import memory_profiles, sources
from tests.support.paths import SAMPLES
from tests.support.pulseaudio import PulseServer

pytestmark = [pytest.mark.slow, pytest.mark.sound]


async def test_call_plays_into_sound_device(
    pulse_server: PulseServer, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """Alice's call plays Bob's speech on the "pulse" device; we record the null sink's monitor."""
    alice, bob = memory_profiles(tmp_path)
    ka, kb = sources()  # the keys from memory: what is tested is the sound device
    transport = TransportConfig(host_addresses=LOOPBACK_ADDRESSES)
    a = CallEndpoint(
        alice,
        CallOptions(output="pulse", duration=5.0, transport=transport, status=False),
        key_source=ka,
    )
    b = CallEndpoint(
        bob,
        CallOptions(input=str(SAMPLES / "speech_b_48k.wav"), transport=transport, status=False),
        key_source=kb,
    )
    port = free_port()
    recorded: list[bytes] = []
    async with AudioDevice(input_device="pulse", playback=False) as mic:

        async def record() -> None:
            while True:
                recorded.append(await mic.read_frame())

        rec = asyncio.ensure_future(record())
        answer = asyncio.ensure_future(b.answer("127.0.0.1", port, accept_timeout=20))
        await asyncio.sleep(0.3)
        sa, sb = await asyncio.gather(a.call("127.0.0.1", port), answer)
        await asyncio.sleep(0.3)
        rec.cancel()
    assert sa.frames_received > 200 and sa.sas == sb.sas
    got = np.frombuffer(frames_to_pcm(recorded), dtype=np.int16).astype(float)
    assert np.sqrt(np.mean(got**2)) > 300, "nothing reached the sound device"
    ref = reference_decode(SAMPLES / "speech_b_48k.wav", OpusConfig())
    # A sound device may underrun when the machine is busy, which shifts the rest of the
    # recording: check the content window by window (0.5 s of speech each) instead of globally.
    scores = speech_windows(got, ref)
    assert len(scores) >= 4, scores
    assert np.median(scores) > 0.8, scores
