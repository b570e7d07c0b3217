"""Transport settings and limits: ICE servers, host addresses, media path, timeouts."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from qphone.transport.signaling import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MESSAGE_TIMEOUT

MAX_CONTROL_BYTES = 32 * 1024
MAX_CONTROL_BACKLOG = 256
MAX_PAYLOAD_BYTES = 1200
LOOPBACK_ADDRESSES = ("127.0.0.1",)


class MediaPath(enum.Enum):
    """How protected frames travel: one RTP packet each, or an unreliable data channel."""

    RTP = "rtp"
    DATACHANNEL = "datachannel"


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server, e.g. ``IceServer(("stun:stun.example.org:3478",))``."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class TransportConfig:
    """Transport settings.  Defaults suit a LAN: no STUN/TURN, all interfaces."""

    ice_servers: tuple[IceServer, ...] = ()
    host_addresses: tuple[str, ...] | None = None
    """None: ICE host candidates on every interface (aioice's choice, which skips
    127.0.0.1); otherwise only these addresses, e.g. ``LOOPBACK_ADDRESSES``."""
    media_path: MediaPath = MediaPath.RTP
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    """Seconds for TCP signaling connect and, separately, for ICE+DTLS+SCTP setup."""
    signaling_timeout: float = DEFAULT_MESSAGE_TIMEOUT
    """Seconds to wait for the peer's offer/answer once connected."""
    peer_timeout: float = 5.0
    """Declare the peer vanished after this many seconds without any packet from it."""
    heartbeat_interval: float = 0.5
    receive_queue_frames: int = 512

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0 or self.signaling_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if not 0 < self.heartbeat_interval < self.peer_timeout:
            raise ValueError("need 0 < heartbeat_interval < peer_timeout")
        if self.receive_queue_frames < 1:
            raise ValueError("receive_queue_frames must be >= 1")
