"""When the launcher starts a process of its network again after it stopped on its own.

A node or module that exits while the network runs (a crash, an unexpected background failure,
the kernel's OOM killer, a SIGKILL) is started again, as ``Restart=on-failure`` does under
systemd: its store survives a kill (exactly-once relay, no pad used twice), so a restarted
process takes up where the crashed one stopped. The delay doubles with each restart inside the
window (1, 2, 4, ... s, at most ``MAX_DELAY_S``), and after ``MAX_RESTARTS`` restarts inside
``WINDOW_S`` the launcher gives up on that process (a process that cannot stay up is reported,
not restarted for ever). Sans-I/O: :class:`RestartPolicy` takes times and names and answers
with delays.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 600.0
MAX_RESTARTS = 5
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0


@dataclass
class RestartPolicy:
    window_s: float = WINDOW_S
    max_restarts: int = MAX_RESTARTS
    first_delay_s: float = FIRST_DELAY_S
    max_delay_s: float = MAX_DELAY_S
    _restarts: dict[str, deque[float]] = field(default_factory=dict)

    def delay(self, name: str, now: float) -> float | None:
        """Seconds to wait before starting `name` again after it exited at `now`; None: give up
        (it was restarted ``max_restarts`` times within the window already). Records the
        restart."""
        times = self._restarts.setdefault(name, deque())
        while times and now - times[0] > self.window_s:
            times.popleft()
        if len(times) >= self.max_restarts:
            return None
        wait = min(self.max_delay_s, self.first_delay_s * float(2 ** len(times)))
        times.append(now + wait)
        return wait

    def restarts(self, name: str) -> int:
        """How many restarts of `name` the window holds."""
        return len(self._restarts.get(name, ()))
