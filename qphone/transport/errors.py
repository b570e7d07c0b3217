"""Transport failures; their messages say what happened and what to do about it."""

from __future__ import annotations


class TransportError(Exception):
    """The WebRTC connection could not be set up or is unusable."""


class TransportClosedError(TransportError):
    """The transport is closed (by us, by the peer, or because the peer vanished)."""
