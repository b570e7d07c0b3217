"""How a call ends: the first outcome counts, a failure reaching the endpoint is the error."""

from __future__ import annotations

from qphone.endpoint.callending import CallEnding
from qphone.endpoint.outcome import CallEnd, ConnectionLost, EndCause, OutOfKey


def test_the_first_outcome_counts_and_wakes_the_call() -> None:
    ending = CallEnding()
    assert ending.end is None and not ending.stopped.is_set()
    ending.finish(CallEnd.duration(4))
    ending.finish(ConnectionLost("connection lost (peer vanished)"))  # too late: not the end
    assert ending.end == CallEnd.duration(4) and ending.failure is None
    assert ending.stopped.is_set()


def test_a_failure_first_is_the_end_and_the_error() -> None:
    ending = CallEnding()
    lost = ConnectionLost("connection lost (peer vanished)")
    ending.finish(lost)
    ending.finish(CallEnd.peer_hung_up("hangup"))
    assert ending.failure is lost and ending.end == lost.end() and ending.end.failed


def test_a_failure_mapped_after_the_end_is_the_error_but_not_the_end() -> None:
    ending = CallEnding()
    ending.finish(CallEnd.interrupted())
    ending.fail(OutOfKey("no key"))
    assert ending.end == CallEnd.interrupted() and str(ending.failure) == "no key"


def test_an_interrupt_before_the_call_cancels_it() -> None:
    ending = CallEnding()
    ending.cancel("waiting for a call")
    assert ending.end is not None and ending.end.cause is EndCause.CANCELLED
    assert str(ending.end) == "interrupted while waiting for a call" and ending.stopped.is_set()
    ending.cancel("connecting")  # a second interrupt changes nothing
    assert str(ending.end) == "interrupted while waiting for a call"
