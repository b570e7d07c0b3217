"""Wire codec (round trip, fuzz) and the Wegman-Carter framing (forgery, replay, pad reuse)."""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyserver.qkd import messages as m
from keyserver.qkd.classicalchannel import (
    AuthError,
    AuthKeyExhausted,
    AuthPad,
    Chunk,
    MemoryAuthStore,
    Opener,
    Sealer,
)
from keyserver.qkd.role import Role

_KIND = {
    "u8": st.integers(0, 255),
    "u16": st.integers(0, 2**16 - 1),
    "u32": st.integers(0, 2**32 - 1),
    "u64": st.integers(0, 2**64 - 1),
    "bool": st.booleans(),
    "bytes": st.binary(max_size=64),
    "text": st.text(max_size=32),
}


def _message(cls: type) -> st.SearchStrategy[m.Message]:
    return st.builds(cls, *[_KIND[k] for k in cls.SPEC])  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(st.one_of(*[_message(c) for c in m.MESSAGE_CLASSES]))
def test_round_trip(message: m.Message) -> None:
    assert m.decode(m.encode(message)) == message


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decode_refuses_cleanly(data: bytes) -> None:
    try:
        message = m.decode(data)
    except m.MessageError:
        return
    assert m.encode(message) == data  # anything accepted is canonical


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(*[_message(c) for c in m.MESSAGE_CLASSES]),
    st.integers(0, 10_000),
    st.integers(0, 255),
)
def test_any_mutation_is_refused_or_canonical(message: m.Message, pos: int, byte: int) -> None:
    data = bytearray(m.encode(message))
    data[pos % len(data)] = byte
    try:
        out = m.decode(bytes(data))
    except m.MessageError:
        return
    assert m.encode(out) == bytes(data)


def test_encode_refuses_out_of_range() -> None:
    with pytest.raises(m.MessageError):
        m.encode(m.Commit(2**64))
    with pytest.raises(m.MessageError):
        m.encode(m.Heartbeat(-1))


def _pads(size: int = 8192) -> tuple[AuthPad, AuthPad]:
    key = os.urandom(size)
    half = size // 2

    def chunk() -> list[Chunk]:
        return [Chunk(-1, (bytearray(key[:half]), bytearray(key[half:])), True)]

    return (
        AuthPad(Role.TRANSMITTER, chunk(), 0, MemoryAuthStore()),
        AuthPad(Role.RECEIVER, chunk(), 0, MemoryAuthStore()),
    )


def test_frames_verify_and_forgeries_change_nothing() -> None:
    tx, rx = _pads()
    seal, opener = Sealer(tx), Opener(rx)
    frames = [seal.seal(m.encode(m.Commit(i))) for i in range(5)]
    o = opener.open(frames[0])
    opener.accept(o)
    assert m.decode(o.payload) == m.Commit(0)
    before = (opener.next_position, rx.consumed_bytes)
    forged = bytearray(frames[1])
    forged[-20] ^= 1  # payload bit
    for bad in (bytes(forged), frames[1][:-1] + bytes([frames[1][-1] ^ 1]), frames[0]):
        with pytest.raises(AuthError):
            opener.open(bad)
        assert (opener.next_position, rx.consumed_bytes) == before
    for f in frames[1:]:
        opener.accept(opener.open(f))
    with pytest.raises(AuthError):  # replay after acceptance
        opener.open(frames[3])


def test_pad_is_never_reused_across_a_restart() -> None:
    store_log: list[tuple[int, int]] = []

    class Store(MemoryAuthStore):
        def save_reservation(self, direction: int, position: int) -> None:
            store_log.append((direction, position))

    key = os.urandom(65536)
    chunks = [Chunk(-1, (bytearray(key[:32768]), bytearray(key[32768:])), True)]
    pad = AuthPad(Role.TRANSMITTER, chunks, 0, Store())
    seal = Sealer(pad)
    used = [seal.seal(b"x")[3:11] for _ in range(10)]
    reserved = store_log[-1][1]
    # restart from the persisted reservation: every new position is beyond every used one
    pad2 = AuthPad(Role.TRANSMITTER, chunks, reserved, Store())
    pos_after = Sealer(pad2).seal(b"y")[3:11]
    assert int.from_bytes(pos_after, "big") >= max(int.from_bytes(u, "big") for u in used) + 16


def test_pad_exhaustion_and_receiver_uses_only_committed_refills() -> None:
    _, rx = _pads(4096)
    seal = Sealer(rx)
    with pytest.raises(AuthKeyExhausted):
        for _ in range(1000):
            seal.seal(b"z")
    rx.add_chunk(0, os.urandom(1024), os.urandom(1024))
    with pytest.raises(AuthKeyExhausted):
        seal.seal(b"z")  # not committed by the transmitter yet
    rx.commit_chunk(0)
    seal.seal(b"z")
    assert dataclasses.is_dataclass(m.Commit(1))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 300), st.booleans()), min_size=1, max_size=12),
    st.integers(0, 2**32 - 1),
)
def test_pad_reads_across_chunks_match_the_concatenated_stream(
    sizes: list[tuple[int, bool]], seed: int
) -> None:
    """The indexed reads (offsets per chunk, bisect) against the plain concatenation; the
    receiver sends only up to its first uncommitted refill, receives from all of it."""
    import random

    rnd = random.Random(seed)
    chunks = [Chunk(-1, (bytearray(os.urandom(40)), bytearray(os.urandom(40))), True)]
    for b, (size, committed) in enumerate(sizes):
        chunks.append(
            Chunk(b, (bytearray(os.urandom(size)), bytearray(os.urandom(size))), committed)
        )
    for role in Role:
        pad = AuthPad(
            role,
            [
                Chunk(c.block, (bytearray(c.halves[0]), bytearray(c.halves[1])), c.committed)
                for c in chunks
            ],
            0,
            MemoryAuthStore(),
        )
        for d in (0, 1):
            stream = b"".join(bytes(c.halves[d]) for c in chunks)
            sendable = b""
            for c in chunks:
                if role is Role.RECEIVER and not c.committed:
                    break
                sendable += bytes(c.halves[d])
            for _ in range(30):
                pos = rnd.randrange(0, len(stream) + 5)
                size = rnd.choice((0, 1, 16, 32, rnd.randrange(0, 400)))
                got = pad.read(d, pos, size, for_sending=False)
                assert got == (stream[pos : pos + size] if pos + size <= len(stream) else None)
                got = pad.read(d, pos, size, for_sending=True)
                want = sendable if role is Role.RECEIVER else stream
                assert got == (want[pos : pos + size] if pos + size <= len(want) else None)
        last = len(chunks) - 1
        pad.commit_chunk(last - 1)  # the index follows commits and drops
        pad.drop_uncommitted_after(0)
        stream = b"".join(bytes(c.halves[0]) for c in pad._chunks)
        assert pad.read(0, 0, len(stream), for_sending=False) == stream
