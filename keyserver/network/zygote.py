"""A fork server ("zygote"): processes of one kind forked from a process that imported their code.

Starting hundreds of ``python -m keyserver.cli node ...`` processes costs each one the Python
start and the imports (about 0.7 CPU-s for a node, more for a physics module), which on two
cores is most of a large network's start-up. The launcher instead starts one zygote per kind
(``python -m keyserver.network.zygote node``): it imports that kind's code once, freezes the
garbage collector's view of it (:func:`gc.freeze`, so that the children do not touch, and
copy, the shared pages) and forks a child per request. The children share the imported code's
memory copy-on-write, which also lowers each one's proportional set size (PSS).

Protocol on the socket the launcher passes (one JSON object per line):

* launcher -> zygote: ``{"argv": [...], "log": PATH}``: fork, run ``keyserver.cli`` with
  `argv`, stdout and stderr appended to PATH;
* launcher -> zygote: ``{"argv": [...], "log": PATH, "hold": NAME}``: the same, but the child
  waits at the zygote's *gate* NAME before it runs anything; ``{"release": NAME}``: open that
  gate (every child held there goes on at once; a later hold at NAME is a new gate).
  Forking hundreds of children that start working at once starves the zygote itself (at
  300 runnable processes a fork loop gets a few forks a second: hefei-metro-full's 342
  modules took 150 s to fork); held, they are all forked within seconds;
* zygote -> launcher: ``{"pid": N}`` (the child's pid, in request order), then
  ``{"exit": N, "code": C}`` when a child ends (C as :attr:`subprocess.Popen.returncode`:
  negative for a signal).

With ``KEYSERVER_PROFILE_DIR`` set in the zygote's environment, each child runs under
:mod:`cProfile` (CPU time) and writes ``<kind>-<pid>.prof`` there when it ends (measurement
only). With ``KEYSERVER_PROFILE_WINDOW=1`` as well, a child's profiler starts off: SIGUSR1
turns it on and SIGUSR2 turns it off and writes the file, so that one window of a running
network (say the 30 s after its first key) is profiled, not its start.

Lifetimes: the zygote gets SIGTERM when the launcher dies (``PR_SET_PDEATHSIG``), and on SIGTERM
or when the launcher closes the socket it sends its children SIGTERM, gives them
:data:`GRACE_S` seconds and SIGKILLs the rest before it exits (a child whose shutdown hangs
does not outlive the network); a child also gets SIGTERM if the zygote dies. It is idle
between requests (it sleeps in ``select`` and wakes on a request or a child's exit, never on a
timer).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# what each kind's children run; imported by that kind's zygote before it forks
PRELOAD: dict[str, tuple[str, ...]] = {
    "node": (
        "keyserver.cli",
        "keyserver.kms.commands",
        "keyserver.kms.node",
        "keyserver.kms.nodeconfig",
    ),
    # emulated modules' code (lean: no numpy); a physics module imports its own after the fork
    "module": (
        "keyserver.cli",
        "keyserver.qkd.commands",
        "keyserver.qkd.config",
        "keyserver.qkd.emulatedmodule",
    ),
}
PR_SET_PDEATHSIG = 1
GRACE_S = 5.0  # a child's time to stop after SIGTERM before the zygote SIGKILLs it


def set_pdeathsig(sig: int = signal.SIGTERM) -> None:
    """This process gets `sig` when its parent dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)


def _code(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _child(
    argv: list[str],
    log: str,
    ctl: socket.socket,
    wake_r: int,
    wake_w: int,
    gates: dict[str, Gate],
    held: str | None,
) -> None:
    """In the forked child: become `qkd-keyserver ARGV` (`held`: once that gate opens); never
    returns."""
    code = 1
    try:
        set_pdeathsig()
        ctl.close()
        os.close(wake_r)
        os.close(wake_w)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (the zygote's handler is not theirs)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
        for name, gate in gates.items():
            if name == held:
                gate.wait_open()
            else:  # (its write end must not outlive the zygote's, or the gate never opens)
                os.close(gate.w)
                os.close(gate.r)
        gc.enable()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)
        sys.argv = ["qkd-keyserver", *argv]
        from keyserver import cli

        profile_dir = os.environ.get("KEYSERVER_PROFILE_DIR")
        profiler = None
        profiler_window = False
        if profile_dir:
            import cProfile

            out = os.path.join(profile_dir, f"{argv[0]}-{os.getpid()}.prof")
            profiler = cProfile.Profile(time.process_time)  # CPU, not wall: load-proof
            if os.environ.get("KEYSERVER_PROFILE_WINDOW") == "1":
                prof = profiler

                def window_end(*_: object) -> None:
                    prof.disable()
                    prof.dump_stats(out)

                signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
                signal.signal(signal.SIGUSR2, window_end)
                profiler_window = True
            else:
                profiler.enable()
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            if profiler is not None and not profiler_window:
                profiler.disable()
                profiler.dump_stats(out)
    except BaseException:  # the child must end here, whatever happens
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


@dataclass
class Gate:
    """Where held children wait (a pipe: the zygote keeps the write end, and closing it is the
    end of file every waiting child's read returns, so one close releases them all)."""

    r: int
    w: int

    def wait_open(self) -> None:
        """In a child: wait until the zygote opens the gate."""
        os.close(self.w)
        while True:
            try:
                if not os.read(self.r, 1):
                    break
            except InterruptedError:
                continue
        os.close(self.r)

    def open(self) -> None:
        """In the zygote: release every child held at this gate."""
        os.close(self.w)
        os.close(self.r)


def serve(kind: str, fd: int) -> int:
    """The zygote's main loop on the inherited socket `fd`."""
    set_pdeathsig()
    for name in PRELOAD[kind]:
        importlib.import_module(name)
    importlib.import_module("keyserver.cli").build_parser()  # what its layers import for it
    gc.collect()
    gc.freeze()  # what is imported now stays out of every child's garbage collections
    ctl = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda s, f: None)  # wakes select through the wakeup fd
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the launcher's to handle
    terminate: list[bool] = []
    signal.signal(signal.SIGTERM, lambda s, f: terminate.append(True))
    buf = b""
    children: set[int] = set()
    gates: dict[str, Gate] = {}  # name -> the gate children are held at now

    def send(msg: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            ctl.sendall((json.dumps(msg) + "\n").encode())

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            send({"exit": pid, "code": _code(status)})

    def end_children() -> int:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while children and time.monotonic() < deadline:
            select.select([wake_r], [], [], max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
            reap()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return 0

    while True:
        ready, _, _ = select.select([ctl.fileno(), wake_r], [], [])
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
            reap()
        if terminate:  # the launcher died (or someone stops us): end every child, then us
            return end_children()
        if ctl.fileno() not in ready:
            continue
        data = ctl.recv(65536)
        if not data:  # the launcher closed the socket (or died): end every child, then us
            return end_children()
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            req = json.loads(line)
            if "release" in req:
                opened = gates.pop(str(req["release"]), None)
                if opened is not None:
                    opened.open()
                continue
            held = None if req.get("hold") is None else str(req["hold"])
            if held is not None and held not in gates:
                gates[held] = Gate(*os.pipe())
            pid = os.fork()
            if pid == 0:
                argv = [str(a) for a in req["argv"]]
                _child(argv, str(req["log"]), ctl, wake_r, wake_w, gates, held)
            children.add(pid)
            send({"pid": pid})


@dataclass
class ForkedProcess:
    """A child of a zygote, with the part of :class:`subprocess.Popen` the launcher uses."""

    server: ForkServer
    pid: int
    args: list[str] = field(default_factory=list)
    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.server.pump(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else _now() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - _now()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            self.server.pump(left if left is not None else 1.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _now() -> float:
    return time.monotonic()


class ForkServer:
    """The launcher's end of one zygote (started on the first :meth:`spawn`)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self._children: dict[int, ForkedProcess] = {}
        self._early: dict[int, int] = {}  # exits reported before the pid was handed out

    @property
    def pid(self) -> int | None:
        """The zygote's own pid (None before the first spawn)."""
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "keyserver.network.zygote", self.kind, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            preexec_fn=set_pdeathsig,
        )
        theirs.close()
        self._sock = ours
        return ours

    def warm(self) -> None:
        """Start the zygote now (it imports while the caller does other work)."""
        if self._sock is None:
            self._start()

    def spawn(self, argv: list[str], log: Path) -> ForkedProcess:
        [child] = self.spawn_many([(argv, log)])
        return child

    def spawn_many(
        self, requests: list[tuple[list[str], Path]], hold: str | None = None
    ) -> list[ForkedProcess]:
        """Fork a child per (argv, log), all requests sent at once (no round trip each: on a
        loaded machine a round trip to the zygote can take a large part of a second). With
        `hold` (a gate's name), the children wait until :meth:`release` of that gate."""
        sock = self._sock or self._start()
        extra = {} if hold is None else {"hold": hold}
        sock.sendall(
            b"".join(
                (json.dumps({"argv": argv, "log": str(log), **extra}) + "\n").encode()
                for argv, log in requests
            )
        )
        out: list[ForkedProcess] = []
        while len(out) < len(requests):
            msg = self._read(None)
            if msg is None:
                raise OSError(f"the {self.kind} zygote ended (see the launcher's stderr)")
            if "pid" not in msg:
                self._exit(msg)
                continue
            pid = int(msg["pid"])
            child = ForkedProcess(self, pid, requests[len(out)][0])
            self._children[pid] = child
            if pid in self._early:
                child.returncode = self._early.pop(pid)
            out.append(child)
        return out

    def release(self, gate: str) -> None:
        """Let every child held at `gate` go on (no answer: the children's work is their own)."""
        if self._sock is not None:
            self._sock.sendall((json.dumps({"release": gate}) + "\n").encode())

    def _exit(self, msg: dict[str, Any]) -> None:
        pid, code = int(msg["exit"]), int(msg["code"])
        child = self._children.get(pid)
        if child is None:
            self._early[pid] = code
        else:
            child.returncode = code

    def _read(self, timeout: float | None) -> dict[str, Any] | None:
        """One message (None: nothing within `timeout`, or the zygote ended)."""
        assert self._sock is not None
        while b"\n" not in self._buf:
            r, _, _ = select.select([self._sock], [], [], timeout)
            if not r:
                return None
            data = self._sock.recv(65536)
            if not data:
                for child in self._children.values():  # the zygote died: so did its children
                    if child.returncode is None:
                        child.returncode = -signal.SIGTERM
                return None
            self._buf += data
            timeout = 0.0
        line, self._buf = self._buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def pump(self, timeout: float) -> None:
        """Take in the exits the zygote reported (waiting up to `timeout` for the first)."""
        if self._sock is None:
            return
        msg = self._read(timeout)
        while msg is not None:
            if "exit" in msg:
                self._exit(msg)
            msg = self._read(0.0)

    def close(self) -> None:
        """Close the socket: the zygote ends its remaining children and exits."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in PRELOAD or not argv[1].isdigit():
        print(
            f"usage: python -m keyserver.network.zygote {{{'|'.join(PRELOAD)}}} FD", file=sys.stderr
        )
        return 2
    return serve(argv[0], int(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
