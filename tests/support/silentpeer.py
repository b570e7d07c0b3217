"""A peer that connects and then says nothing, to hold a qphone process in its handshake.

Run as a script: ``python -m tests.support.silentpeer answer`` listens on 127.0.0.1 (port 0)
as SAE "bob"; ``python -m tests.support.silentpeer call PORT`` calls 127.0.0.1:PORT as SAE
"alice" calling "bob".  Either way it sets up the WebRTC transport and then never speaks the
handshake.  It prints JSON lines on stdout: ``{"port": N}`` once listening, ``{"connected":
true}`` once the transport is up, ``{"abort": REASON}`` for an abort message from the other
side, ``{"control": N}`` for other control messages (their length), ``{"closed": REASON}``
when the transport closes, then exits.
"""

from __future__ import annotations

import asyncio
import json
import sys

from qphone.core.abort import decode_abort, is_abort
from qphone.transport.calltransport import CallTransport
from qphone.transport.config import LOOPBACK_ADDRESSES, TransportConfig
from qphone.transport.signaling import SignalingListener


def emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main() -> int:
    transport = CallTransport(
        TransportConfig(host_addresses=LOOPBACK_ADDRESSES, connect_timeout=10, peer_timeout=3)
    )

    def on_listening(listener: SignalingListener) -> None:
        emit({"port": listener.port})

    if sys.argv[1] == "answer":
        await transport.accept_as_answerer("127.0.0.1", 0, on_listening=on_listening, name="bob")
    else:
        await transport.connect_as_caller(
            "127.0.0.1", int(sys.argv[2]), caller="alice", callee="bob", mode="aes"
        )
    emit({"connected": True})
    while True:
        try:
            data = await transport.recv_control()
        except Exception as exc:
            emit({"closed": str(exc)})
            break
        if is_abort(data):
            emit({"abort": decode_abort(data).reason})
        else:
            emit({"control": len(data)})
    await transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
