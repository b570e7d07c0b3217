"""The zygote's gate (keyserver/network/zygote.py): children forked held do nothing until the
launcher releases them, then all go on; a child forked without hold is not held."""

from __future__ import annotations

import time
from pathlib import Path

from keyserver.network.zygote import ForkServer


def test_held_children_start_only_when_released(tmp_path: Path) -> None:
    z = ForkServer("module")
    try:
        # a config that does not exist: the child's command fails at once with exit code 2
        argv = ["module", "--config", str(tmp_path / "absent.toml")]
        held = z.spawn_many([(argv, tmp_path / f"held{i}.log") for i in range(3)], hold=True)
        free = z.spawn(argv, tmp_path / "free.log")  # forked while the gate is closed
        assert free.wait(timeout=60) != 0  # not held: it ran and failed
        time.sleep(0.5)
        assert all(c.poll() is None for c in held)  # still waiting at the gate
        assert not any((tmp_path / f"held{i}.log").exists() for i in range(3))  # not begun
        z.release()
        codes = [c.wait(timeout=60) for c in held]
        assert codes == [free.returncode] * 3
        assert "absent.toml" in (tmp_path / "held0.log").read_text()
    finally:
        z.close()
