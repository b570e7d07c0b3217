"""Run a network in the foreground: start it, announce it, show its state, stop it on a signal.

On a terminal the state is redrawn every second (per link: state, key rate, stock, QBER; relays
per SAE pair) under a short banner; otherwise only JSON event lines are printed (stdout:
``{"event": "<kind>_ready", ...}``; stderr: ``process_exited``, then ``process_restarted`` or
``process_given_up``). A process that stops on its own while the network runs is started
again (:mod:`keyserver.network.supervision`), unless the caller exits on a child's death (the
demo). Ctrl-C / SIGTERM stop every process and exit 0; a failure to start exits 1 with one
line.

Once the processes answer, the network is not yet ready for calls: the links still have to
produce key. Until a key can be relayed between the two farthest SAEs, a progress line (links
holding key N/M, the route's state) fits the terminal's width under the state; then one line
says ``READY FOR CALLS after T s`` and stdout gets ``{"event": "ready_for_calls", ...}``.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from keyserver.network.launcher import Launcher, LaunchError, fit, progress_line, ready_line
from keyserver.network.status import collect, render, summarise
from keyserver.network.statussocket import StatusSocket
from keyserver.network.supervision import RestartPolicy


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
    status_socket: StatusSocket | None = None
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
                print(
                    f"{prog}: starting {len(launcher.children)} processes in "
                    f"{launcher.plan.directory} ...",
                    file=out,
                    flush=True,
                )
            launcher.start_all()
            width = shutil.get_terminal_size().columns
            launcher.wait_ready(
                # 90 s, and more for a big network on a busy machine (hefei-metro-full's core
                # nodes, 23 links each, took longer than 90 s to answer at load 300)
                timeout=max(90.0, 0.6 * len(launcher.children)),
                stop=stop.is_set,
                first_key=first_key,
                progress=(
                    (lambda s: print(fit(f"{prog}: {s}", width), file=out, flush=True))
                    if tty
                    else (lambda s: None)
                ),
            )
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
        state = launcher.state
        # `network status` asks here: the launcher's kept-alive connections, no handshakes
        status_socket = StatusSocket(
            launcher.plan.directory, lambda: summarise(info, collect(info, state))
        )
        waiting_for_calls = launcher.call_pair is not None
        # the state display asks every node: at most ~20 nodes a second (a big network's
        # display is redrawn less often rather than cost the machine a core)
        redraw = max(1.0, len(info["nodes"]) / 20)
        drawn = -redraw
        table: list[str] = []
        policy = RestartPolicy()
        due: dict[str, float] = {}  # a process that stopped on its own -> when to start it again

        def emit(what: str, **fields: Any) -> None:
            print(json.dumps({"event": what, **fields}), file=err, flush=True)

        def schedule(name: str, now: float) -> None:
            c = launcher.children[name]
            wait = policy.delay(name, now)
            if wait is None:
                emit(
                    "process_given_up",
                    kind=c.kind,
                    name=name,
                    restarts=policy.restarts(name),
                    log=str(c.log),
                )
            else:
                due[name] = now + wait

        while not stop.wait(1.0):
            now = time.monotonic()
            for c in launcher.exited():
                if c.name in reported:
                    continue
                reported.add(c.name)
                code = c.proc.returncode if c.proc else None
                emit("process_exited", kind=c.kind, name=c.name, code=code, log=str(c.log))
                if exit_on_child_death:
                    return 1
                schedule(c.name, now)
            for name, at in sorted(due.items()):
                if now < at:
                    continue
                del due[name]
                c = launcher.children[name]
                try:
                    launcher.start(name)
                except LaunchError as e:
                    emit("process_restart_failed", kind=c.kind, name=name, error=str(e))
                    schedule(name, now)
                    continue
                reported.discard(name)
                launcher.write_info()  # network.json names the new pid
                emit(
                    "process_restarted",
                    kind=c.kind,
                    name=name,
                    pid=c.proc.pid if c.proc else None,
                    restarts=policy.restarts(name),
                )
            extra: list[str] = []
            if waiting_for_calls:
                r = launcher.readiness()
                if r is not None and r.ready:
                    waiting_for_calls = False
                    if tty and shown:
                        out.write(f"\x1b[{shown}F\x1b[J")
                        shown = 0
                    if tty:
                        print(ready_line(r), file=out)
                    print(
                        json.dumps(
                            {
                                "event": "ready_for_calls",
                                "from": r.pair.master,
                                "to": r.pair.slave,
                                "route": list(r.route),
                                "hops": len(r.route) - 1,
                                "seconds": round(r.seconds, 1),
                            }
                        ),
                        file=out,
                        flush=True,
                    )
                elif r is not None:
                    extra = [progress_line(r)]
            if tty:
                if time.monotonic() - drawn >= redraw or not table:
                    drawn = time.monotonic()
                    table = render(summarise(info, collect(info, launcher.state)))
                width = shutil.get_terminal_size().columns
                lines = [fit(x, width) for x in table + extra]
                if shown:
                    out.write(f"\x1b[{shown}F\x1b[J")
                out.write("\n".join(lines) + "\n")
                out.flush()
                shown = len(lines)
        return 0
    finally:
        if status_socket is not None:
            status_socket.close()
        launcher.stop()
        if written is not None:
            written.unlink(missing_ok=True)
        launcher.unlock()
        for s, h in old.items():
            signal.signal(s, h)
