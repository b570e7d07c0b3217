"""Adaptive jitter buffer for one stream of audio frames (sans-I/O: time is always an argument).

The buffer is fed packets with their RTP-style 16-bit sequence number and 32-bit timestamp
(:meth:`JitterBuffer.push`) and is asked, at the playout device's pace, what to play in the next
frame slot (:meth:`JitterBuffer.pop`). Playout is driven by timestamps, like WebRTC's NetEq:

* The slot grid starts at the first packet's timestamp; slot ``S`` is due at
  ``S / clock_rate + offset``. ``offset`` is set from the first arrival plus the initial delay and
  then moves one frame at a time as the target delay changes.
* For each due slot the buffer answers with a :class:`PlayoutItem`:

  - ``normal``: the packet for this slot is here; decode ``payload``.
  - ``fec``: the packet for this slot (``seq``) is missing but its successor is buffered right
    behind it; decode the successor's in-band FEC (``payload`` is the successor, which is then
    played normally in the next slot).
  - ``plc``: conceal (Opus PLC). ``seq`` names the lost packet when a later packet is buffered
    (the missing packets are assumed to sit in the slots right before it), and is ``None`` for an
    underrun (nothing buffered yet) or for a slot inserted to grow the delay.
  - ``dtx``: the sender is silent (its timestamps jumped while its sequence numbers did not) or
    nothing has arrived for longer than ``max_plc_frames``; play comfort noise/silence.

* Late packets (their slot has already been played) and duplicates are dropped and counted.
* Target delay, as NetEq sets it: the ``quantile`` of the relative transit delay over the last
  ``window`` packets (transit = arrival - timestamp/clock, relative to the window's minimum;
  until the window is full, the packets still to come count as fast ones),
  plus ``margin_ms``, clamped to ``[min_delay_ms, max_delay_ms]`` (and not below
  ``initial_delay_ms`` for the first ``warmup`` packets).  With this target a fraction
  ``1 - quantile`` of packets arrives late under a stationary delay distribution.  It grows as
  soon as more than that fraction of the window is slow (a few hundred milliseconds of jitter
  at 20 ms frames) and shrinks only once the slow packets have left the window (seconds).  A
  lone late packet (a scheduling hiccup of a busy machine) is concealed rather than paid for
  with delay for seconds.  While at least ``fec_loss_fraction`` of the window's packets were
  lost, the target holds one frame more, so that a lost frame's successor arrives in time to
  recover it with in-band FEC.
* Reaching the target without dropping speech: each slot may be played up to
  ``max_stretch_ms`` shorter or longer than a frame (``PlayoutItem.stretch``: the decoded frame
  is time-stretched by the player, like NetEq's accelerate and preemptive expand), whole
  milliseconds at a time, when the delay is off the target by a millisecond or more.  With
  ``silence_stretch_ms`` (a call's default) a slot is asked to be played up to half a frame
  shorter or longer only if it is silent as a whole (``PlayoutItem.silence_only``: the player
  checks the decoded slot and plays it whole otherwise), when the delay is off the target by
  ``silence_threshold_ms``: the delay follows the target at the pauses between utterances and
  nothing that is heard is cut or lengthened.  When the
  delay is more than half a frame short, one concealment slot is inserted at once (NetEq's
  expand); when it is more than 1.5 frames long a silent slot is skipped, or a frame discarded
  when the excess exceeds 2.5 frames (at most once every ``shrink_interval`` slots).
* The RFC 3550 interarrival jitter estimate is kept for statistics.

Accounting invariants (checked by the property tests): every distinct packet pushed ends up exactly
once in ``played``, ``late``, ``discarded``, ``overflow`` or still ``buffered``; every sequence
number the playout has passed is exactly once ``played``, ``lost`` or ``discarded``.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import math

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
#: how many recent sequence numbers are remembered for duplicate detection
SEEN_WINDOW = 4096


class PlayoutKind(enum.StrEnum):
    NORMAL = "normal"
    FEC = "fec"
    PLC = "plc"
    DTX = "dtx"


class PushOutcome(enum.StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"
    OVERFLOW = "overflow"


@dataclasses.dataclass(frozen=True)
class PlayoutItem:
    """What to play in one frame slot."""

    kind: PlayoutKind
    #: RTP timestamp (32-bit) of the slot
    timestamp: int
    #: the slot's due time (same clock as the arrival/now arguments)
    due: float
    #: 16-bit sequence number of the frame played/recovered/concealed, None if unknown
    seq: int | None = None
    #: the same sequence number, unwrapped (monotonic across 16-bit wraps)
    ext_seq: int | None = None
    #: NORMAL: the packet to decode; FEC: the following packet, to decode with FEC; else None
    payload: bytes | None = None
    #: play the slot this many clock ticks longer (> 0) or shorter (< 0) than a frame
    #: (time-stretch the decoded PCM by exactly as much: the next slot is due that much later
    #: or earlier)
    stretch: int = 0
    #: the stretch is asked for only if the decoded slot is silent as a whole (a pause between
    #: utterances: cut or lengthened anywhere without being heard); else play it whole
    silence_only: bool = False


@dataclasses.dataclass(frozen=True)
class JitterBufferConfig:
    """Parameters of a :class:`JitterBuffer`. Times in milliseconds, timestamps in clock ticks."""

    clock_rate: int = 48000
    frame_ticks: int = 960
    min_delay_ms: float = 20.0
    max_delay_ms: float = 200.0
    initial_delay_ms: float = 40.0
    quantile: float = 0.95
    margin_ms: float = 5.0
    window: int = 250
    max_plc_frames: int = 5
    shrink_interval: int = 10
    capacity: int = 256
    #: until this many packets have been seen the target never drops below initial_delay_ms
    warmup: int = 25
    #: a slot may be played this many whole milliseconds shorter or longer (0: never)
    max_stretch_ms: int = 0
    #: a silent slot (the player checks) may be played this many whole milliseconds shorter
    #: or longer, up to half a frame (0: never); asked for when max_stretch_ms asks for nothing
    silence_stretch_ms: int = 0
    #: ... when the delay is off the target by at least this many milliseconds (each move
    #: shifts what follows against what was sent: only moves worth it)
    silence_threshold_ms: float = 5.0
    #: ... when the delay is off the target by at least this many milliseconds
    stretch_threshold_ms: float = 2.0
    #: hold a frame more while at least this fraction of the window's packets was lost, so
    #: that a lost frame is recovered from its successor's FEC (None: never)
    fec_loss_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.clock_rate <= 0 or self.frame_ticks <= 0:
            raise ValueError("clock_rate and frame_ticks must be positive")
        if not 0 <= self.min_delay_ms <= self.max_delay_ms:
            raise ValueError("need 0 <= min_delay_ms <= max_delay_ms")
        if not self.min_delay_ms <= self.initial_delay_ms <= self.max_delay_ms:
            raise ValueError("initial_delay_ms must lie within [min_delay_ms, max_delay_ms]")
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError("quantile must be within (0, 1]")
        if self.margin_ms < 0:
            raise ValueError("margin_ms must be >= 0")
        if self.window < 1 or self.capacity < 2:
            raise ValueError("window must be >= 1 and capacity >= 2")
        if self.max_plc_frames < 0 or self.shrink_interval < 1 or self.warmup < 0:
            raise ValueError("need max_plc_frames >= 0, shrink_interval >= 1, warmup >= 0")
        if self.clock_rate % 1000:
            raise ValueError("clock_rate must be a whole number of ticks per millisecond")
        if not 0 <= 4 * self.max_stretch_ms * self.clock_rate // 1000 <= self.frame_ticks:
            raise ValueError("max_stretch_ms must lie within 0 .. a quarter of a frame")
        if not 0 <= 2 * self.silence_stretch_ms * self.clock_rate // 1000 <= self.frame_ticks:
            raise ValueError("silence_stretch_ms must lie within 0 .. half a frame")
        if self.stretch_threshold_ms < 1 or self.silence_threshold_ms < 1:
            raise ValueError("stretch_threshold_ms and silence_threshold_ms must be >= 1")
        if self.fec_loss_fraction is not None and not 0 < self.fec_loss_fraction <= 1:
            raise ValueError("fec_loss_fraction must lie within (0, 1]")

    @classmethod
    def for_frame_ms(cls, frame_ms: int, clock_rate: int = 48000) -> JitterBufferConfig:
        """Defaults scaled to ``frame_ms`` frames (use dataclasses.replace to change more)."""
        return cls(
            clock_rate=clock_rate,
            frame_ticks=clock_rate * frame_ms // 1000,
            # a packet need not wait a frame in the buffer: it is played when its slot is due,
            # so the floor is the margin; the start is one frame and the margin (the first
            # packets' jitter is unknown), then the target follows the measured jitter
            min_delay_ms=5.0,
            initial_delay_ms=5.0,  # the margin
            quantile=0.97,  # 3 % of packets late under stationary jitter
            warmup=2000 // frame_ms,  # the first 2 s (a call's busiest) at one frame at least
            max_delay_ms=max(200.0, 4.0 * frame_ms),
            # time-stretching (up to a quarter of a frame per slot) is available but off by
            # default: it took mouth-to-ear to p50 32-43 ms on a quiet machine but cost
            # PESQ-WB (4.13 -> 3.92 for OTP) and keeps the played waveform from lining up
            # with the sent one; the delay then moves by whole frames at silences
            max_stretch_ms=0,
            # what does move it: silent slots (pauses between utterances) played up to half a
            # frame shorter or longer, so the delay reaches the target at the next pause
            # instead of staying a frame above it (nothing that is heard is cut)
            silence_stretch_ms=frame_ms // 2,
            fec_loss_fraction=0.01,  # 3 losses in the last 250 frames (5 s)
        )

    @property
    def frame_seconds(self) -> float:
        return self.frame_ticks / self.clock_rate


@dataclasses.dataclass(frozen=True)
class JitterBufferStats:
    """Counters of a :class:`JitterBuffer` (a snapshot)."""

    received: int = 0  # distinct packets pushed (late ones included, duplicates not)
    duplicates: int = 0
    late: int = 0  # arrived after their slot was played
    overflow: int = 0  # dropped because the buffer was full or the packet far in the future
    lost: int = 0  # sequence numbers passed by playout with no packet in time
    played: int = 0  # NORMAL items
    fec_recovered: int = 0  # FEC items
    concealed: int = 0  # PLC items (lost, underrun and delay-growth slots)
    expanded: int = 0  # of which slots inserted to grow the delay
    stretched: int = 0  # slots played longer or shorter than a frame (time-stretched)
    stretched_ms: float = 0.0  # by this much in all (lengthened + shortened)
    dtx: int = 0  # DTX items
    skipped: int = 0  # silent slots skipped to shrink the delay
    discarded: int = 0  # frames dropped to shrink the delay
    buffered: int = 0
    target_delay_ms: float = 0.0
    playout_delay_ms: float = 0.0
    jitter_ms: float = 0.0


@dataclasses.dataclass
class _Entry:
    ext_seq: int
    ext_ts: int
    payload: bytes


def _unwrap(value: int, reference: int, modulus: int) -> int:
    """The integer congruent to ``value`` mod ``modulus`` closest to ``reference``."""
    diff = (value - reference) % modulus
    if diff >= modulus // 2:
        diff -= modulus
    return reference + diff


class JitterBuffer:
    """Adaptive jitter buffer; see the module docstring for the algorithm."""

    def __init__(self, config: JitterBufferConfig | None = None) -> None:
        self.config = config or JitterBufferConfig()
        self._buf: dict[int, _Entry] = {}
        self._seen: set[int] = set()
        self._seen_order: collections.deque[int] = collections.deque()
        self._transits: collections.deque[float] = collections.deque(maxlen=self.config.window)
        self._started = False  # a packet has anchored the slot grid
        self._emitted = False  # a slot has been played
        self._highest_seq = 0
        self._highest_ts = 0
        self._first_seq = 0
        self._next_seq = 0
        self._play_ts = 0
        self._due = 0.0
        self._last_transit: float | None = None
        self._jitter = 0.0
        self._target = self.config.initial_delay_ms / 1000.0
        self._stretch_unit = self.config.clock_rate // 1000  # ticks per millisecond
        self._last_item: PlayoutItem | None = None  # popped last (see stretched())
        self._losses: collections.deque[int] = collections.deque()  # recent lost ext seqs
        self._in_talkspurt = False
        self._underrun_plc = 0
        self._since_shrink = 0
        self._observed = 0
        self._counts: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------ input

    def push(self, seq: int, timestamp: int, payload: bytes, arrival: float) -> PushOutcome:
        """Offer one received packet. Raises ValueError (and changes nothing) on bad arguments."""
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < SEQ_MOD:
            raise ValueError(f"seq must be an int in 0..65535, got {seq!r}")
        if (
            isinstance(timestamp, bool)
            or not isinstance(timestamp, int)
            or not 0 <= timestamp < TS_MOD
        ):
            raise ValueError(f"timestamp must be an int in 0..2**32-1, got {timestamp!r}")
        if not isinstance(payload, bytes | bytearray):
            raise ValueError("payload must be bytes")
        if not isinstance(arrival, int | float) or not math.isfinite(arrival):
            raise ValueError(f"arrival must be a finite number, got {arrival!r}")
        arrival = float(arrival)
        cfg = self.config

        if not self._started:
            ext_seq, ext_ts = seq, timestamp
            self._started = True
            self._highest_seq, self._highest_ts = ext_seq, ext_ts
            self._first_seq = self._next_seq = ext_seq
            self._play_ts = ext_ts
            self._due = arrival + self._target
        else:
            ext_seq = _unwrap(seq, self._highest_seq, SEQ_MOD)
            ext_ts = _unwrap(timestamp, self._highest_ts, TS_MOD)

        if ext_seq in self._buf or ext_seq in self._seen:
            self._counts["duplicates"] += 1
            return PushOutcome.DUPLICATE

        self._counts["received"] += 1
        self._remember(ext_seq)
        self._highest_seq = max(self._highest_seq, ext_seq)
        self._highest_ts = max(self._highest_ts, ext_ts)
        self._observe_transit(arrival - ext_ts / cfg.clock_rate)

        max_ticks = cfg.max_delay_ms / 1000.0 * cfg.clock_rate
        if not self._emitted and self._play_ts - max_ticks <= ext_ts < self._play_ts:
            # reordered before playout began: move the grid's start back, keeping its offset
            self._due -= (self._play_ts - ext_ts) / cfg.clock_rate
            self._play_ts = ext_ts
            self._next_seq = min(self._next_seq, ext_seq)
            self._first_seq = min(self._first_seq, ext_seq)

        if ext_seq < self._next_seq or ext_ts < self._play_ts:
            self._counts["late"] += 1
            if ext_seq >= self._next_seq:
                # its slot is gone: the sequence numbers up to it can no longer be played
                self._pass_seqs(ext_seq + 1)
            if ext_seq in self._losses:  # late, not lost: no reason to wait for FEC
                self._losses.remove(ext_seq)
            return PushOutcome.LATE

        horizon = self._play_ts + (cfg.capacity + 1) * cfg.frame_ticks
        if len(self._buf) >= cfg.capacity or ext_ts >= horizon:
            self._counts["overflow"] += 1
            return PushOutcome.OVERFLOW

        self._buf[ext_seq] = _Entry(ext_seq, ext_ts, bytes(payload))
        return PushOutcome.ACCEPTED

    # ----------------------------------------------------------------- output

    @property
    def next_due(self) -> float | None:
        """When the next slot is due (None before the first packet)."""
        return self._due if self._started else None

    def pop(self, now: float) -> PlayoutItem | None:
        """The item for the next slot if it is due at ``now``, else None."""
        if not self._started or now < self._due:
            return None
        cfg = self.config
        while True:
            self._purge_stale()
            slot = self._play_ts
            head = self._buf[min(self._buf)] if self._buf else None
            excess = self._delay() - self._target

            if excess < -cfg.frame_seconds / 2:
                return self._expand(slot)
            stretch = self._stretch_for(excess, cfg.max_stretch_ms, cfg.stretch_threshold_ms)
            silence_only = not stretch and cfg.silence_stretch_ms > 0
            if silence_only:
                stretch = self._stretch_for(
                    excess, cfg.silence_stretch_ms, cfg.silence_threshold_ms
                )

            if excess > 1.5 * cfg.frame_seconds and self._since_shrink >= cfg.shrink_interval:
                if self._is_silent_slot(slot, head):
                    self._counts["skipped"] += 1
                    self._play_ts += cfg.frame_ticks
                    self._since_shrink = 0
                    continue
                if (
                    excess > 2.5 * cfg.frame_seconds
                    and head is not None
                    and head.ext_ts < slot + cfg.frame_ticks
                    and head.ext_seq == self._next_seq
                    and len(self._buf) > 1
                ):
                    del self._buf[head.ext_seq]
                    self._counts["discarded"] += 1
                    self._next_seq = head.ext_seq + 1
                    self._play_ts += cfg.frame_ticks
                    self._since_shrink = 0
                    continue
            return self._play_slot(slot, head, stretch, silence_only and stretch != 0)

    def stretched(self, item: PlayoutItem, done: int) -> None:
        """The player stretched ``item`` by ``done`` ticks, not the ``item.stretch`` asked for
        (0: it found no quiet part to stretch): the next slot is due accordingly.  Only for
        the item popped last; ``done`` lies between 0 and ``item.stretch``."""
        if not (min(0, item.stretch) <= done <= max(0, item.stretch)) or done % self._stretch_unit:
            raise ValueError(f"stretched {done} ticks where {item.stretch} were asked")
        if item is not self._last_item:
            raise ValueError("only the slot popped last can be stretched otherwise")
        if done == item.stretch:
            return
        self._due += (done - item.stretch) / self.config.clock_rate
        self._counts["stretched_ticks"] -= abs(item.stretch) - abs(done)
        if not done:
            self._counts["stretched"] -= 1

    def pop_all(self, now: float) -> list[PlayoutItem]:
        """Every item due at ``now`` (several if the caller fell behind)."""
        items: list[PlayoutItem] = []
        while (item := self.pop(now)) is not None:
            items.append(item)
        return items

    # ------------------------------------------------------------------ stats

    @property
    def target_delay_ms(self) -> float:
        return self._target * 1000.0

    def stats(self) -> JitterBufferStats:
        c = self._counts
        return JitterBufferStats(
            received=c["received"],
            duplicates=c["duplicates"],
            late=c["late"],
            overflow=c["overflow"],
            lost=c["lost"],
            played=c["played"],
            fec_recovered=c["fec"],
            concealed=c["plc"],
            expanded=c["expanded"],
            stretched=c["stretched"],
            stretched_ms=c["stretched_ticks"] * 1000.0 / self.config.clock_rate,
            dtx=c["dtx"],
            skipped=c["skipped"],
            discarded=c["discarded"],
            buffered=len(self._buf),
            target_delay_ms=self._target * 1000.0,
            playout_delay_ms=self._delay() * 1000.0 if self._started else 0.0,
            jitter_ms=self._jitter * 1000.0,
        )

    @property
    def first_ext_seq(self) -> int:
        """Unwrapped sequence number where playout started."""
        return self._first_seq

    @property
    def next_ext_seq(self) -> int:
        """Unwrapped sequence number playout expects next (all before it have been passed)."""
        return self._next_seq

    # --------------------------------------------------------------- internals

    def _remember(self, ext_seq: int) -> None:
        self._seen.add(ext_seq)
        self._seen_order.append(ext_seq)
        if len(self._seen_order) > SEEN_WINDOW:
            self._seen.discard(self._seen_order.popleft())

    def _observe_transit(self, transit: float) -> None:
        cfg = self.config
        if self._last_transit is not None:
            d = abs(transit - self._last_transit)
            self._jitter += (d - self._jitter) / 16.0
        self._last_transit = transit
        self._transits.append(transit)
        base = min(self._transits)
        rel = sorted(t - base for t in self._transits)
        # the quantile as of a full window, the packets not seen yet counted as fast ones: at
        # the start of a call a lone stall (one slow packet) is not 3 % of the packets; but a
        # second one before the window is full is a pattern (reordering, a jittery path),
        # which a call that starts at the margin must follow at once or lose those packets
        full = cfg.window - math.ceil(cfg.quantile * cfg.window)  # packets allowed above it
        seen = len(self._transits)
        above = (
            full if seen >= cfg.window else min(full, max(1, seen - math.ceil(cfg.quantile * seen)))
        )
        target = rel[max(0, len(rel) - 1 - above)] + cfg.margin_ms / 1000.0
        if cfg.fec_loss_fraction is not None:
            # on a lossy path, hold one frame more: a lost frame's successor is then here in
            # time to recover it from its in-band FEC instead of concealing it
            losses, oldest = self._losses, self._highest_seq - cfg.window
            while losses and losses[0] <= oldest:
                losses.popleft()
            if len(losses) >= cfg.fec_loss_fraction * cfg.window:
                target += cfg.frame_seconds
        self._observed += 1
        lo, hi = cfg.min_delay_ms / 1000.0, cfg.max_delay_ms / 1000.0
        if self._observed < cfg.warmup:
            lo = cfg.initial_delay_ms / 1000.0
        self._target = min(hi, max(lo, target))

    def _stretch_for(self, excess: float, limit_ms: int, threshold_ms: float) -> int:
        """Ticks to play the next slot longer (> 0) or shorter (< 0) to move the delay toward
        the target: whole milliseconds, at most ``limit_ms``, none within ``threshold_ms``
        of it."""
        ms = excess * 1000.0
        if not limit_ms or abs(ms) < threshold_ms:
            return 0
        step = min(limit_ms, int(abs(ms))) * self._stretch_unit
        return -step if ms > 0 else step

    def _delay(self) -> float:
        """Current playout delay: how long after the fastest recent packet a slot is played."""
        if not self._transits:
            return self._target
        offset = self._due - self._play_ts / self.config.clock_rate
        return offset - min(self._transits)

    def _purge_stale(self) -> None:
        """Drop buffered packets whose slot or sequence number playout has already passed.

        Only a sender whose timestamps do not follow its sequence numbers can leave such packets.
        """
        stale = [k for k, e in self._buf.items() if k < self._next_seq or e.ext_ts < self._play_ts]
        for k in stale:
            del self._buf[k]
            self._counts["late"] += 1
            self._pass_seqs(k + 1)

    def _pass_seqs(self, upto: int) -> None:
        """Mark sequence numbers in [next_seq, upto) as passed without a packet."""
        if upto > self._next_seq:
            self._counts["lost"] += upto - self._next_seq
            losses = self._losses
            losses.extend(range(max(self._next_seq, upto - self.config.window), upto))
            while len(losses) > self.config.window:
                losses.popleft()
            self._next_seq = upto

    def _is_silent_slot(self, slot: int, head: _Entry | None) -> bool:
        if head is None:
            return not self._in_talkspurt or self._underrun_plc >= self.config.max_plc_frames
        return head.ext_seq == self._next_seq and head.ext_ts >= slot + self.config.frame_ticks

    def _emit(
        self,
        kind: PlayoutKind,
        slot: int,
        entry_seq: int | None,
        payload: bytes | None,
        stretch: int = 0,
        silence_only: bool = False,
    ) -> PlayoutItem:
        item = PlayoutItem(
            kind=kind,
            timestamp=slot % TS_MOD,
            due=self._due,
            seq=None if entry_seq is None else entry_seq % SEQ_MOD,
            ext_seq=entry_seq,
            payload=payload,
            stretch=stretch,
            silence_only=silence_only,
        )
        cfg = self.config
        self._last_item = item
        self._due += (cfg.frame_ticks + stretch) / cfg.clock_rate
        if stretch:
            self._counts["stretched"] += 1
            self._counts["stretched_ticks"] += abs(stretch)
        self._emitted = True
        return item

    def _expand(self, slot: int) -> PlayoutItem:
        """Insert one slot (without advancing the timestamp) to grow the delay."""
        self._counts["expanded"] += 1
        if self._in_talkspurt:
            self._counts["plc"] += 1
            return self._emit(PlayoutKind.PLC, slot, None, None)
        self._counts["dtx"] += 1
        return self._emit(PlayoutKind.DTX, slot, None, None)

    def _play_slot(
        self, slot: int, head: _Entry | None, stretch: int = 0, silence_only: bool = False
    ) -> PlayoutItem:
        cfg = self.config
        self._play_ts = slot + cfg.frame_ticks
        self._since_shrink += 1
        if head is not None and head.ext_ts < slot + cfg.frame_ticks:
            del self._buf[head.ext_seq]
            self._pass_seqs(head.ext_seq)
            self._next_seq = head.ext_seq + 1
            self._counts["played"] += 1
            self._in_talkspurt, self._underrun_plc = True, 0
            return self._emit(
                PlayoutKind.NORMAL, slot, head.ext_seq, head.payload, stretch, silence_only
            )
        if head is not None:
            # No packet for this slot, but a later one is buffered. Assuming the missing packets
            # sat in the slots right before it, this slot held sequence number ``label``.
            slots_ahead = max(1, (head.ext_ts - slot) // cfg.frame_ticks)
            label = head.ext_seq - slots_ahead
            if label >= self._next_seq:
                self._pass_seqs(label + 1)
                self._in_talkspurt, self._underrun_plc = True, 0
                if slots_ahead == 1:
                    self._counts["fec"] += 1
                    return self._emit(
                        PlayoutKind.FEC, slot, label, head.payload, stretch, silence_only
                    )
                self._counts["plc"] += 1
                return self._emit(PlayoutKind.PLC, slot, label, None, stretch, silence_only)
            # otherwise the sender was silent (DTX) before the buffered packet
            self._in_talkspurt = False
            self._counts["dtx"] += 1
            return self._emit(PlayoutKind.DTX, slot, None, None, stretch, silence_only)
        if head is None and self._in_talkspurt and self._underrun_plc < cfg.max_plc_frames:
            self._underrun_plc += 1
            self._counts["plc"] += 1
            return self._emit(PlayoutKind.PLC, slot, None, None, stretch, silence_only)
        self._in_talkspurt = False
        self._counts["dtx"] += 1
        return self._emit(PlayoutKind.DTX, slot, None, None, stretch, silence_only)
