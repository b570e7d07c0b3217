"""The sealed quantum channel's framing (sans-I/O): round trip, and every change refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyserver.qkd.sealedchannel import (
    TO_RECEIVER,
    TO_TRANSMITTER,
    ChannelOpener,
    ChannelSealer,
    SealError,
    new_channel_key,
    read_channel_key,
    session_key,
)

KEY = bytes(range(32))
TX, RX = b"t" * 16, b"r" * 16


def _pair() -> tuple[ChannelSealer, ChannelOpener]:
    k = session_key(KEY, "a-b", TX, RX)
    return ChannelSealer(k, TO_RECEIVER), ChannelOpener(k, TO_RECEIVER)


@given(frames=st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_frames_open_in_order_and_hide_the_plaintext(frames: list[bytes]) -> None:
    sealer, opener = _pair()
    sealed = [sealer.seal(f) for f in frames]
    assert [opener.open(s) for s in sealed] == frames
    for f, s in zip(frames, sealed, strict=True):
        assert len(s) == len(f) + 16
        if len(f) >= 8:
            assert f[:8] not in s


@given(frame=st.binary(min_size=1, max_size=200), data=st.data())
def test_any_modified_frame_is_refused_and_changes_nothing(
    frame: bytes, data: st.DataObject
) -> None:
    sealer, opener = _pair()
    sealed = bytearray(sealer.seal(frame))
    i = data.draw(st.integers(0, len(sealed) - 1))
    bit = data.draw(st.integers(0, 7))
    sealed[i] ^= 1 << bit
    with pytest.raises(SealError):
        opener.open(bytes(sealed))
    sealed[i] ^= 1 << bit
    assert opener.open(bytes(sealed)) == frame  # the refusal left the counter alone


def test_replayed_reordered_reflected_and_cross_session_frames_are_refused() -> None:
    sealer, opener = _pair()
    a, b = sealer.seal(b"first"), sealer.seal(b"second")
    with pytest.raises(SealError):
        opener.open(b)  # reordered
    assert opener.open(a) == b"first"
    with pytest.raises(SealError):
        opener.open(a)  # replayed
    assert opener.open(b) == b"second"
    # the other direction's frames, and another connection's, do not open
    k = session_key(KEY, "a-b", TX, RX)
    back = ChannelSealer(k, TO_TRANSMITTER).seal(b"x")
    with pytest.raises(SealError):
        ChannelOpener(k, TO_RECEIVER).open(back)
    other = ChannelSealer(session_key(KEY, "a-b", TX, b"R" * 16), TO_RECEIVER).seal(b"first")
    with pytest.raises(SealError):
        ChannelOpener(k, TO_RECEIVER).open(other)
    # a new connection's key differs (fresh nonces), as does another link's
    assert session_key(KEY, "a-b", TX, b"R" * 16) != k
    assert session_key(KEY, "a-c", TX, RX) != k
    with pytest.raises(SealError):
        opener.open(b"short")


def test_channel_key_file_is_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "l.channelkey"
    new_channel_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = read_channel_key(path)
    assert len(key) == 32
    new_channel_key(path)  # kept: both modules of a running link hold it
    assert read_channel_key(path) == key
    path.write_bytes(os.urandom(16))
    with pytest.raises(ValueError, match="exactly 32 random bytes"):
        read_channel_key(path)
    with pytest.raises(ValueError, match="cannot read"):
        read_channel_key(tmp_path / "missing")
