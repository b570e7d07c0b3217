"""`qphone loopback`'s progress bar: one unit, the same length at every step, erased in place."""

from __future__ import annotations

import asyncio
import io

from hypothesis import given
from hypothesis import strategies as st

from qphone.measure.loopback import _progress, progress_bar


@given(st.floats(-1, 100), st.floats(0.1, 99))
def test_the_bar_keeps_its_length_and_has_one_unit(elapsed: float, total: float) -> None:
    bar = progress_bar(elapsed, total)
    assert len(bar) == len(progress_bar(total, total))
    assert bar.endswith(f"/{total:.1f} s") and not bar.endswith("s s")


def test_the_last_bar_is_whole_and_each_step_erases_the_one_before() -> None:
    out = io.StringIO()

    async def run() -> None:
        started, done = asyncio.Event(), asyncio.Event()
        task = asyncio.ensure_future(_progress(0.6, started, done, out))
        started.set()
        await asyncio.sleep(0.4)
        done.set()
        await task

    asyncio.run(run())
    steps = out.getvalue().split("\r\x1b[K")
    assert steps[0] == "" and len(steps) >= 2
    assert steps[-1] == progress_bar(0.6, 0.6) + "\n" == "[" + "#" * 30 + "]   0.6/0.6 s\n"
