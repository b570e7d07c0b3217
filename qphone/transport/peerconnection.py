"""The call's one ``RTCPeerConnection``: how it is made, why it failed, and the DTLS check.

:func:`new_peer_connection` makes it from the :class:`~qphone.transport.config.TransportConfig`
(BUNDLE: one ICE/DTLS transport for everything; ``iceServers=[]`` rather than None, since aiortc
would otherwise add a public STUN server) and :func:`restrict_candidates` keeps ICE to the
configured host addresses. :func:`setup_failure` and :func:`connection_failure` say in one line
why set-up or a running connection failed, naming what to check. :func:`session_binding` checks
the certificate the peer presented in DTLS against every fingerprint it sent over signaling and
computes the channel binding from the DTLS session (:mod:`qphone.core.channelbinding`).
"""

from __future__ import annotations

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection

from qphone.core.channelbinding import (
    CallRole,
    Fingerprint,
    FingerprintError,
    binding_for_role,
    check_certificate,
)
from qphone.transport.aiortchooks import (
    DtlsSessionUnavailable,
    dtls_session,
    restrict_host_candidates,
)
from qphone.transport.config import TransportConfig

ICE_HINT = (
    "Check that each side can reach the other's addresses (firewall, NAT: configure "
    "STUN/TURN servers)"
)
DTLS_HINT = (
    "the peer's certificate did not match the fingerprint received over signaling, "
    "which is what a relay in the middle of the signaling path would cause"
)


class SessionBindingError(Exception):
    """The DTLS session cannot be bound to the call; the message says why."""


def new_peer_connection(config: TransportConfig) -> RTCPeerConnection:
    servers = [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
        for s in config.ice_servers
    ]
    return RTCPeerConnection(
        RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


def restrict_candidates(pc: RTCPeerConnection, config: TransportConfig) -> None:
    """Gather ICE host candidates only on ``config.host_addresses`` (all when None)."""
    if config.host_addresses is not None:
        restrict_host_candidates(pc, config.host_addresses)


def setup_failure(pc: RTCPeerConnection, timeout: float) -> str:
    """Why the control channel did not open within ``timeout`` seconds."""
    if pc.iceConnectionState != "completed":
        return f"ICE found no working network path within {timeout:.1f} s. " + ICE_HINT
    return (
        f"the encrypted channel did not open within {timeout:.1f} s after ICE "
        "connected (the peer's DTLS check probably failed: " + DTLS_HINT + ")"
    )


def connection_failure(pc: RTCPeerConnection) -> str | None:
    """Why the connection ended, when its state is ``failed`` or ``closed`` (else None)."""
    state = pc.connectionState
    if state == "closed":
        return "the peer closed the connection"
    if state != "failed":
        return None
    if pc.iceConnectionState == "failed":
        return "ICE failed: the network path to the peer broke. " + ICE_HINT
    return "DTLS failed: " + DTLS_HINT


def session_binding(
    pc: RTCPeerConnection, role: CallRole, remote_fingerprints: tuple[Fingerprint, ...]
) -> bytes:
    """Check the peer's DTLS certificate against every SDP fingerprint and return the channel
    binding of the DTLS session; raises :class:`SessionBindingError`."""
    try:
        session = dtls_session(pc)
        check_certificate(session.peer_certificate, remote_fingerprints)
    except (DtlsSessionUnavailable, FingerprintError) as exc:
        raise SessionBindingError(
            f"DTLS check failed: {exc} (which is what a relay in the middle of the "
            "signaling path would cause)"
        ) from exc
    return binding_for_role(role, session)
