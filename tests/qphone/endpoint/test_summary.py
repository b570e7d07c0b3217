"""The call summary: the JSON fields `--json` prints, in order, from a typed CallSummary."""

from __future__ import annotations

import json

from qphone.audio.opus import OpusConfig
from qphone.core.callparams import Mode
from qphone.core.keyaccounting import KeyAccounting
from qphone.endpoint.outcome import CallEnd, EndCause
from qphone.endpoint.playout import Playout
from qphone.endpoint.state import MAX_UNSENT_SPELLS, CallCounters
from qphone.endpoint.summary import CallSummary, SetupTimes, summarize
from qphone.transport.stats import TransportStats

FIELDS = [
    "sas", "mode", "role", "pqc_only", "peer", "peer_fingerprint", "peer_pin",
    "handshake_ms", "connect_ms", "kme_ms",
    "frames_sent", "frames_received", "frames_unsent_no_key", "frames_lost", "frames_concealed",
    "frames_fec_recovered", "frames_late", "frames_rejected", "frames_misplaced",
    "duplicates_dropped", "control_ignored",
    "epochs", "epochs_tx", "epochs_rx", "qkd_bits_consumed", "qkd_bits",
    "qkd_bits_drawn", "qkd_bits_used", "qkd_bits_wasted", "pad_left_bits",
    "jitter_buffer_ms", "duration_s", "media_priority", "processing_us_per_frame",
    "end_reason", "ended_by", "end_cause", "warnings",
]  # fmt: skip


def _summary(**kw: object) -> CallSummary:
    args: dict[str, object] = {
        "sas": "",
        "mode": Mode.OTP,
        "result": None,
        "pqc_only": False,
        "peer_sae_id": "bob",
        "peer_pin": "",
        "times": SetupTimes(),
        "counters": CallCounters(),
        "accounting": None,
        "playout": Playout(OpusConfig()),
        "pad_left_bits": 0,
        "started": 0.0,
        "end": None,
        "warnings": [],
        "transport": None,
        "error": None,
    }
    args.update(kw)
    return summarize(**args)  # type: ignore[arg-type]


def test_fields_of_a_call_that_never_connected() -> None:
    s = _summary(
        end=CallEnd("cannot get a QKD key from the KME: down", True, EndCause.FAILURE), error="x"
    )
    out = s.to_json()
    assert list(out) == [*FIELDS, "error"]
    assert out["mode"] == "otp" and out["role"] is None and out["epochs"] == 0
    assert out["end_reason"] == "failed: cannot get a QKD key from the KME: down"
    assert out["qkd_bits"] == {} and out["error"] == "x"
    assert out["ended_by"] == "this side" and out["end_cause"] == "failure"
    assert out["qkd_bits_drawn"] == out["qkd_bits_used"] == out["qkd_bits_wasted"] == 0
    json.dumps(out)


def test_fields_once_the_transport_ran() -> None:
    counters = CallCounters(frames_sent=10, payload_bytes_sent=600, encode_seconds=0.001)
    counters.rejected["FrameReplayed"] += 2
    counters.epochs_tx.append(1)
    stats = TransportStats("closed", "rtp", 10, 900, 9, 800, 1, 0.1, 0, 0, 0, 0, 0.0021, None, 0, 0)
    s = _summary(
        counters=counters,
        accounting=KeyAccounting(handshake=256, epoch=512, fetched=768),
        drawn_bits=1024,  # 256 bits arrived after the session had closed
        transport=stats,
        end=CallEnd.duration(2),
    )
    out = s.to_json()
    assert list(out) == [*FIELDS, "rtt_ms", "transport"]
    assert out["rtt_ms"] == 2.1 and out["transport"] == {
        "frames_sent": 10,
        "frames_received": 9,
        "frames_lost": 1,
    }
    assert out["duplicates_dropped"] == 2 and out["frames_rejected"] == {"FrameReplayed": 2}
    assert out["epochs"] == 2 and out["qkd_bits_consumed"] == 768
    assert (out["qkd_bits_drawn"], out["qkd_bits_used"], out["qkd_bits_wasted"]) == (1024, 768, 256)
    assert out["qkd_bits"]["consumed"] == 768 and out["processing_us_per_frame"]["encode"] == 100.0
    assert out["end_reason"] == "duration of 2 s reached" == s.end_reason


def test_an_otp_calls_pad_timeline_says_when_pad_ran_short_and_what_key_took() -> None:
    """Runs of unsent frames (seconds after talking started), at most MAX_UNSENT_SPELLS of
    them, and the key fetches relative to the same start: when the pad ran short."""
    counters = CallCounters()
    assert _summary(counters=counters).pad_timeline is None  # never talked: nothing to say
    counters.talk_started = 100.0
    for i in range(3):  # one run of 3 frames at 2 s
        counters.count_unsent(102.0 + 0.02 * i, new_spell=i == 0)
    counters.count_unsent(105.5, new_spell=True)
    for k in range(MAX_UNSENT_SPELLS + 5):  # more runs than are recorded: all counted
        counters.count_unsent(110.0 + k, new_spell=True)
        counters.count_unsent(110.02 + k, new_spell=False)
    log = [(99.2, 0.3, 0.31, 256), (101.5, 0.05, 0.06, 7600)]
    out = _summary(counters=counters, fetch_log=log, hedges=(3, 1)).to_json()
    timeline = out["pad_timeline"]
    assert timeline["unsent"][:2] == [[2.0, 3], [5.5, 1]]
    assert len(timeline["unsent"]) == MAX_UNSENT_SPELLS and timeline["unsent"][-1][1] == 2
    assert out["frames_unsent_no_key"] == 4 + 2 * (MAX_UNSENT_SPELLS + 5)
    assert timeline["key_fetches"] == [[-0.8, 0.3, 0.31, 256], [1.5, 0.05, 0.06, 7600]]
    assert timeline["hedges"] == [3, 1]
    assert "pad_timeline" not in _summary(mode=Mode.AES, counters=counters).to_json()
    json.dumps(out)
