"""A private PulseAudio daemon with a null sink, for tests that use real sound devices.

:func:`start_pulse` (used by the ``pulse_server`` fixture in tests/conftest.py) starts
``pulseaudio`` (Debian package, installed by ``make setup``) with nothing but
``module-native-protocol-unix`` on a socket in a temporary directory and a ``module-null-sink``
whose monitor is the default source; clients are pointed at it through ``PULSE_SERVER`` (the ALSA
``pulse`` plugin from ``libasound2-plugins``, which PortAudio uses, reads it when it connects);
:func:`stop_pulse` stops it.

It needs no D-Bus, no X, no login session and no sound card, and works as root: ``-n`` skips the
system default.pa, ``--exit-idle-time=-1`` keeps the daemon up, realtime/high priority are off so
rtkit (D-Bus) is never asked, and HOME/XDG_RUNTIME_DIR/PULSE_* point into the temporary directory
so nothing of the machine's own PulseAudio state is touched. As root, PulseAudio prints a warning
("not intended to be run as root") but runs normally in this per-process mode.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path

SINK = "qphone_null"
RATE = 48000
START_TIMEOUT = 15.0


@dataclasses.dataclass(frozen=True)
class PulseServer:
    """A running private PulseAudio daemon."""

    root: Path
    socket: Path
    sink: str
    process: subprocess.Popen[bytes]

    @property
    def server(self) -> str:
        return f"unix:{self.socket}"

    @property
    def monitor(self) -> str:
        return f"{self.sink}.monitor"

    @property
    def env(self) -> dict[str, str]:
        return client_env(self.root, self.socket)

    def pactl(self, *args: str) -> str:
        """Run pactl against this server; returns stdout."""
        env = {**os.environ, **self.env}
        res = subprocess.run(
            ["pactl", *args], env=env, capture_output=True, text=True, timeout=10, check=False
        )
        if res.returncode:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {res.stderr.strip()}")
        return res.stdout

    def log(self) -> str:
        try:
            return (self.root / "pulse.log").read_text(errors="replace")
        except OSError:
            return ""


def client_env(root: Path, socket: Path) -> dict[str, str]:
    return {
        "PULSE_SERVER": f"unix:{socket}",
        "PULSE_CLIENTCONFIG": str(root / "client.conf"),
        "PULSE_COOKIE": str(root / "cookie"),
    }


def start_pulse(root: Path) -> PulseServer:
    """Start the daemon under ``root``; raises RuntimeError with its log if it does not come up."""
    exe = shutil.which("pulseaudio")
    if exe is None:
        raise FileNotFoundError("pulseaudio")
    runtime, state = root / "runtime", root / "state"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    socket = root / "native"
    (root / "default.pa").write_text(
        f"load-module module-native-protocol-unix socket={socket} auth-anonymous=1\n"
        f"load-module module-null-sink sink_name={SINK} rate={RATE} channels=1 "
        f"sink_properties=device.description={SINK}\n"
        f"set-default-sink {SINK}\n"
        f"set-default-source {SINK}.monitor\n"
    )
    (root / "client.conf").write_text("autospawn = no\nenable-shm = no\n")
    (root / "daemon.conf").write_text(
        "daemonize = no\nexit-idle-time = -1\nhigh-priority = no\nrealtime-scheduling = no\n"
        "enable-shm = no\nflat-volumes = no\n"
        f"default-sample-rate = {RATE}\ndefault-sample-channels = 1\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "XDG_RUNTIME_DIR": str(runtime),
        "XDG_CONFIG_HOME": str(root / "config"),
        "PULSE_RUNTIME_PATH": str(runtime),
        "PULSE_STATE_PATH": str(state),
        "PULSE_CONFIG": str(root / "daemon.conf"),
        "PULSE_CLIENTCONFIG": str(root / "client.conf"),
    }
    log = open(root / "pulse.log", "wb")  # noqa: SIM115 - handed to the child, closed below
    try:
        proc = subprocess.Popen(
            [
                exe,
                "-n",
                "-F",
                str(root / "default.pa"),
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disable-shm=yes",
                "--realtime=no",
                "--high-priority=no",
                "--log-target=stderr",
                "--log-level=info",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
        )
    finally:
        log.close()
    server = PulseServer(root=root, socket=socket, sink=SINK, process=proc)
    deadline = time.monotonic() + START_TIMEOUT
    last_error = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pulseaudio exited with {proc.returncode}:\n{server.log()}")
        if socket.exists():
            try:
                info = server.pactl("info")
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                last_error = str(exc)
            else:
                if f"Default Sink: {SINK}" in info:
                    return server
        time.sleep(0.1)
    stop_pulse(server)
    raise RuntimeError(f"pulseaudio did not come up ({last_error}):\n{server.log()}")


def stop_pulse(server: PulseServer) -> None:
    proc = server.process
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
