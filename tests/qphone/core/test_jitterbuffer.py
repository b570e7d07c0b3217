"""qphone.core.jitterbuffer: ordering, gap filling, lateness, duplicates, wrap, adaptation."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qphone.core.jitterbuffer import (
    JitterBuffer,
    JitterBufferConfig,
    PlayoutItem,
    PlayoutKind,
    PushOutcome,
)

FRAME = 0.02
TICKS = 960
MAX_EXAMPLES = 250
# a call's defaults: starts at the margin, silent slots played shorter or longer
CALL = JitterBufferConfig.for_frame_ms(20)
# starts a frame above the margin and time-stretches (stretching is off by default)
ADAPTIVE = dataclasses.replace(CALL, max_stretch_ms=5, initial_delay_ms=25.0)


@dataclasses.dataclass(frozen=True)
class Packet:
    index: int  # position in the sender's stream
    seq: int
    ts: int
    arrival: float

    @property
    def payload(self) -> bytes:
        return self.index.to_bytes(4, "big")


def make_stream(
    n: int,
    seq0: int,
    ts0: int,
    delays: list[float],
    lost: set[int],
    dups: dict[int, list[float]] | None = None,
    ts_gaps: dict[int, int] | None = None,
) -> list[Packet]:
    """Packets of an n-frame stream; ``ts_gaps[i]`` extra slots of silence (DTX) before frame i."""
    packets = []
    slot = 0
    for i in range(n):
        slot += (ts_gaps or {}).get(i, 0)
        send = slot * FRAME
        seq = (seq0 + i) % 65536
        ts = (ts0 + slot * TICKS) % (1 << 32)
        if i not in lost:
            packets.append(Packet(i, seq, ts, send + delays[i]))
            for extra in (dups or {}).get(i, []):
                packets.append(Packet(i, seq, ts, send + delays[i] + extra))
        slot += 1
    return packets


def run(
    jb: JitterBuffer,
    packets: list[Packet],
    end: float,
    phase: float = 0.0,
    silent: Callable[[PlayoutItem], bool] = lambda item: True,
) -> list[PlayoutItem]:
    """Push packets at their arrival times and pop at a steady 20 ms device clock; a slot the
    buffer asks to stretch only if silent is played whole when ``silent`` says it is not (the
    items returned carry the stretch played)."""
    events: list[tuple[float, int, Packet | None]] = [(p.arrival, 0, p) for p in packets]
    k = 0
    while k * FRAME + phase <= end:
        events.append((k * FRAME + phase, 1, None))
        k += 1
    items: list[PlayoutItem] = []
    for t, _, p in sorted(events, key=lambda e: (e[0], e[1])):
        if p is not None:
            jb.push(p.seq, p.ts, p.payload, t)
        else:
            while (item := jb.pop(t)) is not None:
                if item.silence_only and not silent(item):
                    jb.stretched(item, 0)
                    item = dataclasses.replace(item, stretch=0)
                items.append(item)
    return items


def labelled(items: list[PlayoutItem]) -> list[PlayoutItem]:
    return [i for i in items if i.ext_seq is not None]


def check_invariants(jb: JitterBuffer, items: list[PlayoutItem], packets: list[Packet]) -> None:
    st_ = jb.stats()
    by_index = {p.index: p for p in packets}
    distinct = len(by_index)
    # packet accounting
    assert st_.received == distinct
    assert st_.duplicates == len(packets) - distinct
    assert st_.received == st_.played + st_.late + st_.discarded + st_.overflow + st_.buffered
    # sequence accounting
    passed = jb.next_ext_seq - jb.first_ext_seq
    assert passed == st_.played + st_.lost + st_.discarded
    # item counts match stats
    kinds = [i.kind for i in items]
    assert kinds.count(PlayoutKind.NORMAL) == st_.played
    assert kinds.count(PlayoutKind.FEC) == st_.fec_recovered
    assert kinds.count(PlayoutKind.PLC) == st_.concealed
    assert kinds.count(PlayoutKind.DTX) == st_.dtx
    # every sequence number at most once, in order
    ext = [i.ext_seq for i in items if i.ext_seq is not None]
    assert ext == sorted(ext)
    assert len(ext) == len(set(ext))
    for i in items:
        assert (i.seq is None) == (i.ext_seq is None)
        if i.ext_seq is not None:
            assert i.seq == i.ext_seq % 65536
    offsets = set()  # ext_seq - stream index must be one constant (unwrap is consistent)
    for i in items:
        if i.kind is PlayoutKind.NORMAL:
            assert i.ext_seq is not None and i.payload is not None
            src = by_index[int.from_bytes(i.payload, "big")]
            offsets.add(i.ext_seq - src.index)
            assert i.seq == src.seq and i.timestamp == src.ts
        elif i.kind is PlayoutKind.FEC:
            # the payload is the packet right after the recovered one
            assert i.ext_seq is not None and i.payload is not None
            nxt = by_index[int.from_bytes(i.payload, "big")]
            offsets.add(i.ext_seq + 1 - nxt.index)
        else:
            assert i.payload is None
    assert len(offsets) <= 1
    # slot timestamps advance by one frame, or repeat once when the delay grows
    # (or skip frames when it shrinks)
    steps = [(b.timestamp - a.timestamp) % (1 << 32) for a, b in itertools.pairwise(items)]
    assert all(s_ % TICKS == 0 and s_ <= 2 * TICKS for s_ in steps)
    assert sum(s_ // TICKS - 1 for s_ in steps if s_) == st_.skipped + st_.discarded
    assert steps.count(0) in (st_.expanded, st_.expanded - 1)
    # each slot lasts a frame, give or take the time-stretch it was played with
    limit = max(jb.config.max_stretch_ms, jb.config.silence_stretch_ms) * 48
    assert all(abs(i.stretch) <= limit and i.stretch % 48 == 0 for i in items)
    assert all(
        b.due - a.due == pytest.approx((TICKS + a.stretch) / 48000)
        for a, b in itertools.pairwise(items)
    )
    assert st_.stretched == sum(1 for i in items if i.stretch)


def gaps_filled(items: list[PlayoutItem]) -> None:
    """Between two consecutive normal frames a and b there are exactly b - a - 1 concealment slots,
    and those that name a sequence number name one in (a, b), in order."""
    normal = [k for k, i in enumerate(items) if i.kind is PlayoutKind.NORMAL]
    for k0, k1 in itertools.pairwise(normal):
        a, b = items[k0].ext_seq, items[k1].ext_seq
        assert a is not None and b is not None
        between = items[k0 + 1 : k1]
        assert len(between) == b - a - 1
        assert all(i.kind is not PlayoutKind.NORMAL for i in between)
        named = [i.ext_seq for i in between if i.ext_seq is not None]
        assert named == sorted(named) and all(a < x < b for x in named)


# ------------------------------------------------------------------------ property tests

stream_params = st.fixed_dictionaries(
    {
        "n": st.integers(1, 120),
        "seq0": st.integers(0, 65535),
        "ts0": st.integers(0, (1 << 32) - 1),
        "seed": st.integers(0, 2**32 - 1),
        "loss": st.floats(0, 0.5),
        "dup": st.floats(0, 0.3),
        "jitter": st.floats(0, 0.15),
        "phase": st.floats(0, FRAME),
        "dtx": st.floats(0, 0.1),
    }
)


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_params)
def test_any_arrival_pattern_keeps_order_and_accounts_everything(p: dict[str, float]) -> None:
    rng = random.Random(p["seed"])
    n = int(p["n"])
    delays = [0.03 + rng.random() * p["jitter"] for _ in range(n)]
    lost = {i for i in range(n) if rng.random() < p["loss"]}
    dups = {i: [rng.random() * 0.2] for i in range(n) if rng.random() < p["dup"]}
    gaps = {i: rng.randint(1, 30) for i in range(1, n) if rng.random() < p["dtx"]}
    packets = make_stream(n, int(p["seq0"]), int(p["ts0"]), delays, lost, dups, gaps)
    # whole slots only; time-stretching; a call's (silent slots stretched, some slots voiced)
    for config in (JitterBufferConfig(), ADAPTIVE, CALL):
        jb = JitterBuffer(config)
        end = (n + sum(gaps.values())) * FRAME + 1.0
        items = run(jb, packets, end=end, phase=p["phase"], silent=lambda _: rng.random() < 0.3)
        if packets:
            check_invariants(jb, items, packets)
            assert jb.stats().buffered == 0  # everything drained by the end
        else:
            assert items == []


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(2, 150),
    seq0=st.integers(0, 65535),
    ts0=st.integers(0, (1 << 32) - 1),
    lost=st.sets(st.integers(1, 149), max_size=60),
    delay=st.floats(0.0, 0.3),
)
def test_constant_delay_with_loss_fills_every_gap_with_fec_or_plc(
    n: int, seq0: int, ts0: int, lost: set[int], delay: float
) -> None:
    lost = {i for i in lost if i < n - 1}  # first and last frame arrive
    packets = make_stream(n, seq0, ts0, [delay] * n, lost)
    jb = JitterBuffer()
    items = run(jb, packets, end=n * FRAME + 1.0 + delay, phase=0.007)
    check_invariants(jb, items, packets)
    gaps_filled(items)
    st_ = jb.stats()
    assert st_.late == 0 and st_.discarded == 0
    assert st_.played == n - len(lost)
    assert st_.lost == len(lost)
    normal = [i.ext_seq for i in items if i.kind is PlayoutKind.NORMAL]
    assert len(normal) == n - len(lost)
    # exactly the losses followed by a received packet are recovered with FEC
    fec = set()
    for i in items:
        if i.kind is PlayoutKind.FEC:
            assert i.ext_seq is not None
            fec.add(i.ext_seq - jb.first_ext_seq)
    assert fec == {i for i in lost if i + 1 not in lost}


# ------------------------------------------------------------------------- example tests


def test_in_order_stream_plays_every_frame_normally() -> None:
    packets = make_stream(200, 100, 5000, [0.05] * 200, set())
    jb = JitterBuffer()
    items = run(jb, packets, end=5.0)
    last = max(k for k, i in enumerate(items) if i.kind is PlayoutKind.NORMAL)
    speech = items[: last + 1]
    assert [i.kind for i in speech] == [PlayoutKind.NORMAL] * 200
    # after the stream ends: a few frames of concealment, then silence
    tail = [i.kind for i in items[last + 1 :]]
    assert tail[:5] == [PlayoutKind.PLC] * 5 and set(tail[5:]) == {PlayoutKind.DTX}
    assert [i.seq for i in speech] == list(range(100, 300))
    assert jb.stats().lost == jb.stats().late == jb.stats().fec_recovered == 0
    assert jb.stats().concealed == 5  # the tail only
    check_invariants(jb, items, packets)


def test_sequence_and_timestamp_wrap() -> None:
    packets = make_stream(100, 65500, (1 << 32) - 20 * TICKS, [0.04] * 100, {40})
    jb = JitterBuffer()
    items = run(jb, packets, end=4.0)
    lab = labelled(items)
    assert [i.seq for i in lab] == [(65500 + k) % 65536 for k in range(100)]
    assert [i.ext_seq for i in lab] == list(range(65500, 65600))
    assert lab[40].kind is PlayoutKind.FEC and lab[40].seq == 4
    assert lab[30].timestamp == ((1 << 32) - 20 * TICKS + 30 * TICKS) % (1 << 32)
    check_invariants(jb, items, packets)


def test_duplicates_dropped_and_counted() -> None:
    jb = JitterBuffer()
    assert jb.push(7, 960, b"a", 0.0) is PushOutcome.ACCEPTED
    assert jb.push(7, 960, b"a", 0.001) is PushOutcome.DUPLICATE
    items = jb.pop_all(1.0)
    assert items[0].kind is PlayoutKind.NORMAL and items[0].payload == b"a"
    assert jb.push(7, 960, b"a", 1.0) is PushOutcome.DUPLICATE  # already played
    assert jb.stats().duplicates == 2
    assert jb.stats().played == 1


def test_late_frame_dropped_and_counted() -> None:
    cfg = JitterBufferConfig(initial_delay_ms=40, min_delay_ms=20)
    jb = JitterBuffer(cfg)
    jb.push(0, 0, b"0", 0.0)
    jb.push(2, 2 * TICKS, b"2", 0.04)
    assert [i.kind for i in jb.pop_all(0.04)] == [PlayoutKind.NORMAL]  # slot 0 due at 0.04
    item = jb.pop(0.06)  # slot 1: seq 1 missing, seq 2 buffered behind it -> FEC
    assert item is not None and item.kind is PlayoutKind.FEC and item.seq == 1
    assert item.payload == b"2"
    assert jb.push(1, TICKS, b"1", 0.065) is PushOutcome.LATE
    item = jb.pop(0.08)
    assert item is not None and item.kind is PlayoutKind.NORMAL and item.seq == 2
    st_ = jb.stats()
    assert (st_.late, st_.lost, st_.fec_recovered, st_.played) == (1, 1, 1, 2)


def test_underrun_conceals_then_goes_silent_and_a_late_packet_is_late() -> None:
    cfg = JitterBufferConfig(initial_delay_ms=20, min_delay_ms=20, max_plc_frames=3, warmup=0)
    jb = JitterBuffer(cfg)
    jb.push(0, 0, b"0", 0.0)
    kinds = [i.kind for i in jb.pop_all(0.2)]
    assert kinds[0] is PlayoutKind.NORMAL
    assert kinds[1:4] == [PlayoutKind.PLC] * 3
    assert set(kinds[4:]) == {PlayoutKind.DTX}
    assert jb.push(1, TICKS, b"1", 0.2) is PushOutcome.LATE
    assert jb.stats().lost == 1


def test_dtx_gap_with_contiguous_sequence_numbers() -> None:
    # frames 0-9, then 1 s of sender silence (seq continues, timestamp jumps), frames 10-19
    packets = make_stream(20, 0, 0, [0.03] * 20, set(), ts_gaps={10: 50})
    jb = JitterBuffer()
    items = run(jb, packets, end=3.0)
    lab = labelled(items)
    assert [i.kind for i in lab] == [PlayoutKind.NORMAL] * 20
    first_after = next(k for k, i in enumerate(items) if i.seq == 10)
    last_before = next(k for k, i in enumerate(items) if i.seq == 9)
    gap = items[last_before + 1 : first_after]
    # the receiver cannot tell silence from an underrun at first: up to max_plc_frames of
    # concealment that name no sequence number, then comfort noise
    assert [i.kind for i in gap] == [PlayoutKind.PLC] * 5 + [PlayoutKind.DTX] * (len(gap) - 5)
    assert all(i.seq is None for i in gap) and len(gap) >= 45
    assert jb.stats().lost == 0 and jb.stats().late == 0
    check_invariants(jb, items, packets)


def test_target_delay_follows_jitter() -> None:
    rng = random.Random(1)
    n = 500
    calm = make_stream(n, 0, 0, [0.03 + rng.random() * 0.002 for _ in range(n)], set())
    jb_calm = JitterBuffer()
    run(jb_calm, calm, end=n * FRAME + 1)
    rng = random.Random(2)
    rough = make_stream(n, 0, 0, [0.03 + rng.random() * 0.1 for _ in range(n)], set())
    jb_rough = JitterBuffer()
    items = run(jb_rough, rough, end=n * FRAME + 1)
    calm_st, rough_st = jb_calm.stats(), jb_rough.stats()
    assert calm_st.target_delay_ms == pytest.approx(20.0)  # clamped at min_delay_ms
    # 95th percentile of U(0, 100 ms) + 5 ms margin
    assert 85 < rough_st.target_delay_ms < 110
    assert rough_st.jitter_ms > 10 * calm_st.jitter_ms
    # once adapted, few frames are late (the first second is warm-up at the initial delay)
    assert rough_st.late < 0.1 * n
    assert rough_st.playout_delay_ms == pytest.approx(rough_st.target_delay_ms, abs=25)
    check_invariants(jb_rough, items, rough)


def test_delay_shrinks_after_a_jitter_spike() -> None:
    rng = random.Random(3)
    n = 800
    delays = [0.03 + (rng.random() * 0.12 if 100 <= i < 200 else 0.0) for i in range(n)]
    packets = make_stream(n, 0, 0, delays, set(), ts_gaps={k: 3 for k in range(300, n, 50)})
    jb = JitterBuffer(JitterBufferConfig(window=100))
    seen: list[float] = []
    events = sorted([(p.arrival, 0, p) for p in packets])
    k = 0
    for t, _, p in events:
        while k * FRAME <= t:
            jb.pop_all(k * FRAME)
            k += 1
        jb.push(p.seq, p.ts, p.payload, t)
        seen.append(jb.stats().playout_delay_ms)
    assert max(seen) > 90  # grew during the spike
    assert seen[-1] < 45  # and came back once the spike left the window
    assert jb.stats().skipped + jb.stats().discarded > 0


def test_reordered_start_moves_the_grid_back() -> None:
    jb = JitterBuffer()
    assert jb.push(11, 11 * TICKS, b"b", 0.0) is PushOutcome.ACCEPTED
    assert jb.push(10, 10 * TICKS, b"a", 0.001) is PushOutcome.ACCEPTED
    items = [i for i in jb.pop_all(0.2) if i.kind is PlayoutKind.NORMAL]
    assert [i.payload for i in items] == [b"a", b"b"]


def test_overflow_is_bounded() -> None:
    jb = JitterBuffer(JitterBufferConfig(capacity=8))
    outcomes = [jb.push(i, i * TICKS, b"x", 0.0) for i in range(20)]
    assert outcomes.count(PushOutcome.ACCEPTED) == 8
    assert jb.stats().overflow == 12 and jb.stats().buffered == 8


@pytest.mark.parametrize(
    "args",
    [
        (-1, 0, b"", 0.0),
        (65536, 0, b"", 0.0),
        (0, -1, b"", 0.0),
        (0, 1 << 32, b"", 0.0),
        (0, 0, "text", 0.0),
        (0, 0, b"", float("nan")),
        (True, 0, b"", 0.0),
    ],
)
def test_bad_push_arguments_change_nothing(args: tuple[object, object, object, object]) -> None:
    jb = JitterBuffer()
    jb.push(5, 0, b"ok", 0.0)
    before = jb.stats()
    with pytest.raises(ValueError):
        jb.push(*args)  # type: ignore[arg-type]
    assert jb.stats() == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_delay_ms": 50, "max_delay_ms": 40},
        {"initial_delay_ms": 500},
        {"quantile": 0.0},
        {"frame_ticks": 0},
        {"capacity": 1},
        {"shrink_interval": 0},
    ],
)
def test_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        JitterBufferConfig(**kwargs)  # type: ignore[arg-type]


def test_config_for_frame_ms() -> None:
    cfg = JitterBufferConfig.for_frame_ms(60)
    # starts at the margin and may stay there, no time-stretching unless asked for; silent
    # slots up to half a frame shorter or longer when 5 ms off the target
    assert cfg.frame_ticks == 2880 and cfg.min_delay_ms == 5 and cfg.max_delay_ms == 240
    assert cfg.initial_delay_ms == 5 and cfg.max_stretch_ms == 0 and cfg.quantile == 0.97
    assert cfg.silence_stretch_ms == 30 and cfg.silence_threshold_ms == 5
    assert dataclasses.replace(cfg, max_stretch_ms=15).max_stretch_ms == 15  # a quarter frame
    assert cfg.frame_seconds == pytest.approx(0.06)
    with pytest.raises(ValueError):
        JitterBufferConfig(max_stretch_ms=6)  # more than a quarter of a 20 ms frame
    with pytest.raises(ValueError):
        JitterBufferConfig(silence_stretch_ms=11)  # more than half of a 20 ms frame
    with pytest.raises(ValueError):
        JitterBufferConfig(silence_threshold_ms=0.5)


def test_calm_network_delay_settles_low_by_time_stretching_alone() -> None:
    """Jitter of 2 ms: the delay starts at a frame + margin and comes down to the jitter plus the
    margin by playing frames a little shorter: no frame dropped, none concealed, none late."""
    rng = random.Random(5)
    n = 300
    packets = make_stream(n, 7, 9, [0.03 + rng.random() * 0.002 for _ in range(n)], set())
    jb = JitterBuffer(ADAPTIVE)
    items = run(jb, packets, end=n * FRAME + 0.05, phase=0.003)
    st_ = jb.stats()
    assert st_.played == n and st_.late == st_.lost == st_.discarded == 0
    last = max(k for k, i in enumerate(items) if i.kind is PlayoutKind.NORMAL)
    assert all(i.kind is PlayoutKind.NORMAL for i in items[: last + 1])  # none concealed
    assert st_.target_delay_ms == pytest.approx(7.0, abs=0.6)  # p95 of 2 ms jitter + 5 ms
    assert st_.playout_delay_ms == pytest.approx(st_.target_delay_ms, abs=1.0)
    shorter = [i.stretch for i in items if i.stretch < 0]
    assert shorter and st_.stretched_ms == pytest.approx(-sum(shorter) / 48)
    assert st_.stretched_ms == pytest.approx(
        ADAPTIVE.initial_delay_ms - st_.playout_delay_ms, abs=1.5
    )
    check_invariants(jb, items, packets)


def test_jitter_grows_the_delay_within_a_fraction_of_a_second_and_it_shrinks_later() -> None:
    """40 ms of extra jitter for 4 s: the delay covers it once more than 5 % of the window is
    slow (about a second), by time-stretching and at most a few inserted slots; a lone late
    packet before it costs no delay; after the spike the delay comes back down, once the slow
    packets have left the 5 s window."""
    rng = random.Random(8)
    n = 800
    delays = [
        0.03 + (rng.random() * 0.04 if 200 <= i < 400 else 0.0) + (0.05 if i == 100 else 0.0)
        for i in range(n)
    ]
    packets = make_stream(n, 0, 0, delays, set())
    jb = JitterBuffer(ADAPTIVE)
    targets: list[float] = []
    events = sorted([(p.arrival, p.index, p) for p in packets])
    k = 0
    for t, _, p in events:
        while k * FRAME <= t:
            jb.pop_all(k * FRAME)
            k += 1
        jb.push(p.seq, p.ts, p.payload, t)
        targets.append(jb.stats().target_delay_ms)
    assert max(targets[110:199]) < 10  # the lone late packet (100) did not raise it
    assert jb.stats().late >= 1
    grown = next(i for i in range(200, 400) if targets[i] > 35)
    assert grown < 260  # within about a second of the jitter's start
    assert targets[399] > 35 and targets[-1] < 10  # and down again after it
    st_ = jb.stats()
    assert st_.stretched > 0 and st_.expanded <= 3
    assert st_.late < 20  # few of the 200 jittered packets late


def test_a_stretch_the_player_declines_is_not_counted_and_moves_no_slot() -> None:
    jb = JitterBuffer(ADAPTIVE)
    for i in range(40):  # steady, then a frame's worth of excess for the buffer to remove
        jb.push(i, i * TICKS, b"x", 0.001 + i * FRAME + (0.02 if i < 30 else 0.0))
    asked = None
    t = 0.0
    while asked is None and t < 2.0:
        item = jb.pop(t)
        if item is None:
            t += 0.001
        elif item.stretch:
            asked = item
    assert asked is not None and asked.stretch < 0
    before = jb.next_due
    assert before is not None
    with pytest.raises(ValueError):
        jb.stretched(asked, -asked.stretch)  # the other way: refused, nothing changed
    assert jb.next_due == before
    jb.stretched(asked, 0)  # no quiet part: played as a whole frame
    assert jb.next_due == pytest.approx(before - asked.stretch / 48000)
    assert jb.stats().stretched == 0 and jb.stats().stretched_ms == 0


def test_on_a_lossy_path_the_delay_holds_a_frame_more_for_fec() -> None:
    """5 % loss, 2 ms of jitter: the target holds one frame more than jitter alone needs, so
    every lost frame whose successor arrived is recovered from that successor's FEC."""
    rng = random.Random(11)
    n = 400
    lost = {i for i in range(20, n - 1) if rng.random() < 0.05}
    packets = make_stream(n, 0, 0, [0.03 + rng.random() * 0.002 for _ in range(n)], lost)
    jb = JitterBuffer(ADAPTIVE)
    items = run(jb, packets, end=n * FRAME + 0.2, phase=0.003)
    st_ = jb.stats()
    assert st_.target_delay_ms == pytest.approx(27.0, abs=0.7)  # 2 ms + 5 ms margin + a frame
    late = {i for i in lost if i > 150}  # once the delay has grown
    fec = {i.ext_seq for i in items if i.kind is PlayoutKind.FEC}
    assert {i for i in late if i + 1 not in lost} <= fec
    calm = JitterBuffer(ADAPTIVE)  # the same path without loss: no frame more
    run(calm, make_stream(n, 0, 0, [0.03 + rng.random() * 0.002 for _ in range(n)], set()), 9)
    assert calm.stats().target_delay_ms < 8
    check_invariants(jb, items, packets)


def test_late_packets_are_not_losses_and_hold_no_frame_for_fec() -> None:
    """Every 50th packet 40 ms late (2 %, below the 3 % the target lets through): those are
    concealed, but they are late, not lost, so no frame is held for FEC."""
    rng = random.Random(12)
    n = 400
    delays = [0.03 + rng.random() * 0.002 + (0.04 if i % 50 == 25 else 0.0) for i in range(n)]
    jb = JitterBuffer(ADAPTIVE)
    items = run(jb, make_stream(n, 0, 0, delays, set()), end=n * FRAME + 0.2, phase=0.003)
    st_ = jb.stats()
    assert st_.late >= 5  # they came after their slots
    assert st_.target_delay_ms < 10  # jitter + margin, no frame more
    check_invariants(jb, items, make_stream(n, 0, 0, delays, set()))


def test_a_slow_start_is_cut_from_a_silent_slot_and_no_voiced_one_is_touched() -> None:
    """The first packet 15 ms slower than the rest (a call's busy start) puts the delay 15 ms
    above the target: the buffer asks to play slots shorter only where they are silent, the
    player refuses the voiced ones, and at the first silent slot (a pause from slot 60 on) the
    delay comes down to the target in one or two cuts; nothing dropped, concealed or late."""
    rng = random.Random(3)
    n = 300
    delays = [0.03 + rng.random() * 0.001 + (0.015 if i == 0 else 0.0) for i in range(n)]
    packets = make_stream(n, 0, 0, delays, set())
    jb = JitterBuffer(CALL)
    asked: list[int] = []

    def silent(item: PlayoutItem) -> bool:
        assert item.ext_seq is not None
        asked.append(item.ext_seq)
        return 60 <= item.ext_seq < 70

    items = run(jb, packets, end=n * FRAME + 0.1, phase=0.003, silent=silent)
    st_ = jb.stats()
    assert st_.played == n and st_.late == st_.lost == st_.discarded == 0
    last = max(k for k, i in enumerate(items) if i.kind is PlayoutKind.NORMAL)
    assert all(i.kind is PlayoutKind.NORMAL for i in items[: last + 1])  # none concealed
    assert asked and min(asked) < 60  # asked for on voiced slots too, played whole there
    cut = [i for i in items if i.stretch]
    assert cut and all(i.stretch < 0 and 60 <= (i.ext_seq or 0) < 70 for i in cut)
    assert len(cut) <= 2 and st_.stretched_ms == pytest.approx(-sum(i.stretch for i in cut) / 48)
    assert st_.playout_delay_ms == pytest.approx(st_.target_delay_ms, abs=5.0)
    assert st_.playout_delay_ms < 12  # from 20
    check_invariants(jb, items, packets)


def test_on_a_calm_path_the_call_config_never_moves_the_delay() -> None:
    """2 ms of jitter from the first packet: the delay starts at the margin, the target is
    within the threshold of it, so no slot is played other than whole (the played waveform
    lines up with the sent one all through) and none is late."""
    rng = random.Random(4)
    n = 300
    packets = make_stream(n, 0, 0, [0.03 + rng.random() * 0.002 for _ in range(n)], set())
    jb = JitterBuffer(CALL)
    items = run(jb, packets, end=n * FRAME + 0.1, phase=0.003)
    st_ = jb.stats()
    assert st_.stretched == st_.expanded == st_.skipped == 0
    assert st_.played == n and st_.late <= n * 0.03
    assert st_.playout_delay_ms < 8
    check_invariants(jb, items, packets)


def test_growing_jitter_lengthens_silent_slots_rather_than_conceal_speech() -> None:
    """Jitter of 15 ms from packet 150 on, every slot from 150 on silent: the delay grows by
    lengthening silent slots (up to half a frame each), with no concealment slot inserted."""
    rng = random.Random(6)
    n = 400
    delays = [0.03 + (rng.random() * 0.015 if i >= 150 else 0.0) for i in range(n)]
    packets = make_stream(n, 0, 0, delays, set())
    jb = JitterBuffer(CALL)
    items = run(jb, packets, end=n * FRAME + 0.2, phase=0.003)
    st_ = jb.stats()
    longer = [i.stretch for i in items if i.stretch > 0]
    assert longer and max(longer) <= 10 * 48
    assert st_.expanded == 0
    assert st_.target_delay_ms > 15 and st_.playout_delay_ms > 12
    check_invariants(jb, items, packets)
