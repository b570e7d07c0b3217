"""The call recorder: what the endpoint's observer hears, as the loopback report reads it."""

from __future__ import annotations

from qphone.core.jitterbuffer import PlayoutKind
from qphone.endpoint.observer import CallObserver, EpochChange, ReceivedPayload, SentFrame
from qphone.endpoint.playout import PlayoutSlot
from qphone.measure.callrecorder import KEY_SAMPLE_FRAMES, CallRecorder


def test_records_everything_and_samples_the_key() -> None:
    rec = CallRecorder()
    observer: CallObserver = rec  # it is an observer
    for i in range(12):
        observer.on_sent(
            SentFrame(i, 960 * i, 1.0 + i / 50, 1.0 + i / 50, 1e-4, 1e-5, 256 + i, b"p")
        )
    observer.on_received(ReceivedPayload(123, 7, 2.0, 1e-5, b"p"))
    observer.on_epoch(EpochChange(1.5, True, 1))
    observer.on_playout(PlayoutSlot(123, 2.05, PlayoutKind.FEC, 1e-4, b"\0\0"))
    assert rec.send_log[:2] == [(0, 1.0), (960, 1.02)]
    assert [b for _, b in rec.key_log] == [256 + i for i in range(0, 12, KEY_SAMPLE_FRAMES)]
    assert rec.playout_log == [(123, 2.05, "fec")]
    assert rec.received[0].sequence == 7 and rec.epochs == [EpochChange(1.5, True, 1)]
