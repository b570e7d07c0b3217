"""How a call ends: the first outcome counts, and the running call is woken to stop.

One :class:`CallEnding` per endpoint, shared by what can end the call: the running call's tasks
and events (:mod:`qphone.endpoint.runningcall`), an interrupt (SIGINT/SIGTERM, before or during
the call) and the endpoint's mapping of a failure (:func:`~qphone.endpoint.outcome.call_failure`).
The summary reads :attr:`CallEnding.end` and :attr:`CallEnding.failure`.
"""

from __future__ import annotations

import asyncio

from qphone.endpoint.outcome import CallEnd, CallFailed


class CallEnding:
    """Why the call ended (None while it runs), the failure if it failed, and the stop event."""

    def __init__(self) -> None:
        self.end: CallEnd | None = None
        self.failure: CallFailed | None = None
        self.stopped = asyncio.Event()  # set once the running call must stop

    def finish(self, outcome: CallEnd | CallFailed) -> None:
        """The one way a running call ends; the first outcome is the one that counts."""
        if self.end is None:
            if isinstance(outcome, CallFailed):
                self.failure = outcome
                self.end = outcome.end()
            else:
                self.end = outcome
        self.stopped.set()

    def fail(self, failure: CallFailed) -> None:
        """A failure that reached the endpoint (set-up or call): it is the call's error; the
        end stays the first one if the call had ended already."""
        self.failure = failure
        if self.end is None:
            self.end = failure.end()

    def cancel(self, doing: str) -> None:
        """Interrupted before the call: set-up stops; ``doing`` says what it was doing."""
        if self.end is None:
            self.end = CallEnd.cancelled(doing)
        self.stopped.set()
