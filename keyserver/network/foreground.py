"""Run a network in the foreground: start it, announce it, show its state, stop it on a signal.

On a terminal the state is redrawn every second (per link: state, key rate, stock, QBER; relays
per SAE pair) under a short banner; otherwise only JSON event lines are printed (stdout:
``{"event": "<kind>_ready", ...}``; stderr: ``process_exited``). Ctrl-C / SIGTERM stop every
process and exit 0; a failure to start exits 1 with one line.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from keyserver.network.launcher import Launcher, LaunchError
from keyserver.network.status import collect, render, summarise


def run_foreground(
    launcher: Launcher,
    *,
    prog: str,
    ready_event: str,
    outputs: Callable[[Launcher], tuple[Path, dict[str, Any]]],
    banner: Callable[[Launcher, Path], list[str]],
    exit_on_child_death: bool,
    first_key: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    tty = out.isatty()
    written: Path | None = None
    try:
        try:
            launcher.lock()
        except LaunchError as e:
            print(f"{prog}: {e}", file=err)
            return 1
        try:
            launcher.check_ports()
            launcher.prepare()
            if tty:
                print(f"{prog}: starting {len(launcher.children)} processes in "
                      f"{launcher.plan.directory} ...", file=out, flush=True)
            launcher.start_all()
            launcher.wait_ready(stop=stop.is_set, first_key=first_key, progress=(
                (lambda s: print(f"{prog}: {s}", file=out, flush=True)) if tty else
                (lambda s: None)))
            written, event = outputs(launcher)
        except LaunchError as e:
            if not stop.is_set():
                print(f"{prog}: {e}", file=err)
                return 1
            return 0
        print(json.dumps({"event": ready_event, **event}), file=out, flush=True)
        if tty:
            for line in banner(launcher, written):
                print(line, file=out)
            out.flush()
        reported: set[str] = set()
        shown = 0
        assert launcher.state is not None
        info = launcher.info()
        while not stop.wait(1.0):
            for c in launcher.exited():
                if c.name in reported:
                    continue
                reported.add(c.name)
                code = c.proc.returncode if c.proc else None
                print(json.dumps({"event": "process_exited", "kind": c.kind, "name": c.name,
                                  "code": code, "log": str(c.log)}), file=err, flush=True)
                if exit_on_child_death:
                    return 1
            if tty:
                lines = render(summarise(info, collect(info, launcher.state)))
                if shown:
                    out.write(f"\x1b[{shown}F\x1b[J")
                out.write("\n".join(lines) + "\n")
                out.flush()
                shown = len(lines)
        return 0
    finally:
        launcher.stop()
        if written is not None:
            written.unlink(missing_ok=True)
        launcher.unlock()
        for s, h in old.items():
            signal.signal(s, h)
