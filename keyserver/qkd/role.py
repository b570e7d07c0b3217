"""A module's role on its link, and the state its process reports.

Both are :class:`enum.StrEnum`: their values are what the config file, the classical channel's
``Hello`` (:mod:`keyserver.qkd.messages`), the JSON logs and the status extension's ``role`` and
``state`` fields carry, so the wire and the logs read the same as the plain strings did.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """Which end of the link a module is. The transmitter hosts the source (and the simulated
    fibre with its eavesdropper) and dials the receiver, which listens on both channels."""

    TRANSMITTER = "transmitter"
    RECEIVER = "receiver"


class ModuleState(enum.StrEnum):
    """The module process's state, as ``status_extension.qkd_link.state`` reports it."""

    CONNECTING = "connecting"  # no session with the peer module (yet, or again)
    RUNNING = "running"  # a session is up: blocks run
    ABORTED = "aborted"  # the authentication key ran out: the link stops for good
    STOPPED = "stopped"  # the process is shutting down
