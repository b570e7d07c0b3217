"""The zygote's gates (keyserver/network/zygote.py): children forked held at a gate do nothing
until the launcher opens that gate, then all go on; another gate stays shut; a child forked
without hold is not held."""

from __future__ import annotations

import time
from pathlib import Path

from keyserver.network.zygote import ForkServer


def test_held_children_start_only_when_released(tmp_path: Path) -> None:
    z = ForkServer("module")
    try:
        # a config that does not exist: the child's command fails at once with exit code 2
        argv = ["module", "--config", str(tmp_path / "absent.toml")]
        held = z.spawn_many([(argv, tmp_path / f"held{i}.log") for i in range(3)], hold="first")
        later = z.spawn_many([(argv, tmp_path / "later.log")], hold="second")
        free = z.spawn(argv, tmp_path / "free.log")  # forked while the gates are shut
        assert free.wait(timeout=60) != 0  # not held: it ran and failed
        time.sleep(0.5)
        assert all(c.poll() is None for c in held)  # still waiting at the gate
        assert not any((tmp_path / f"held{i}.log").exists() for i in range(3))  # not begun
        z.release("first")
        codes = [c.wait(timeout=60) for c in held]
        assert codes == [free.returncode] * 3
        assert "absent.toml" in (tmp_path / "held0.log").read_text()
        assert later[0].poll() is None  # its gate is still shut
        z.release("second")
        assert later[0].wait(timeout=60) == free.returncode
    finally:
        z.close()
