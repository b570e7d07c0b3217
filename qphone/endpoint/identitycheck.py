"""Trust on first use: which identity the peer must present, and the check after the handshake.

:meth:`PinCheck.expected` gives the handshake the identity pinned for the peer (none with
``--trust-new-identity``), so a changed identity fails the handshake before any key is used.
:meth:`PinCheck.check` runs once the handshake is complete: a first call pins the identity; a
changed one is refused (:class:`~qphone.endpoint.outcome.IdentityChanged`) unless the user said
``--trust-new-identity``, in which case it is re-pinned with a loud warning.
"""

from __future__ import annotations

from collections.abc import Callable

from qphone.config.pins import KnownPeers, PinStatus
from qphone.core.identity import PublicIdentity
from qphone.endpoint.outcome import identity_changed, identity_changed_banner


class PinCheck:
    def __init__(
        self,
        known_peers: KnownPeers,
        peer_sae_id: str,
        trust_new_identity: bool,
        answering: bool = False,
    ) -> None:
        self._pins = known_peers
        self._peer = peer_sae_id
        self._trust = trust_new_identity
        self.answering = answering  # the advice names the answerer's next step, not the caller's

    def expected(self) -> PublicIdentity | None:
        if self._trust:
            return None
        return self._pins.pinned(self._peer)

    def check(
        self, identity: PublicIdentity, say: Callable[[str], None], warn: Callable[[str], None]
    ) -> PinStatus:
        """Pin on first use; raises IdentityChanged for a changed identity without trust."""
        pin = self._pins.check(self._peer, identity)
        if pin.status is PinStatus.NEW:
            say(f"first call with {self._peer}: pinned identity {pin.fingerprint}")
        elif pin.status is PinStatus.CHANGED:
            if not self._trust:
                raise identity_changed(self._peer, pin.pinned, pin.fingerprint, self.answering)
            warn(
                identity_changed_banner(self._peer, pin.pinned, pin.fingerprint)
                + " Re-pinned because --trust-new-identity was given."
            )
            self._pins.repin(self._peer, identity)
        return pin.status
