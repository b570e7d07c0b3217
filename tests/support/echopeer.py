"""Echo peer for the cross-process transport tests (run as a script, not collected).

Answers one call on 127.0.0.1 (port printed as a JSON line on stdout), echoes
every media frame back with send_frame() and every control message back with
send_control(); on the control message b"report" it replies with a JSON report
of what it received.  Exits when the transport closes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys

from qphone.transport.calltransport import CallTransport
from qphone.transport.config import LOOPBACK_ADDRESSES, MediaPath, TransportConfig
from qphone.transport.frames import ReceivedFrame
from qphone.transport.signaling import SignalingListener


def emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main() -> int:
    media_path = MediaPath(sys.argv[1]) if len(sys.argv) > 1 else MediaPath.RTP
    config = TransportConfig(
        host_addresses=LOOPBACK_ADDRESSES,
        media_path=media_path,
        connect_timeout=10,
        peer_timeout=3,
        heartbeat_interval=0.25,
    )
    transport = CallTransport(config)
    received: list[ReceivedFrame] = []

    def on_frame(frame: ReceivedFrame) -> None:
        received.append(frame)
        transport.send_frame(frame.payload, 960 * len(received))

    def on_listening(listener: SignalingListener) -> None:
        emit({"port": listener.port})

    transport.set_frame_callback(on_frame)
    await transport.accept_as_answerer("127.0.0.1", 0, on_listening=on_listening)
    emit({"binding": transport.channel_binding().hex()})
    while True:
        try:
            message = await transport.recv_control()
        except Exception:
            break
        if message == b"report":
            digest = hashlib.sha256(b"".join(f.payload for f in received)).hexdigest()
            report = {"sequences": [f.sequence for f in received], "sha256": digest}
            transport.send_control(json.dumps(report).encode())
        else:
            transport.send_control(message)
    await transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
