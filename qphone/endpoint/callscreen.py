"""Wrong calls found from the signaling hints, before the handshake (sans-I/O).

The offer names the caller's SAE, the SAE it means to call and the mode it will propose; the
answer and a refusal name the answerer's SAE (:mod:`qphone.core.signalmessage`).  These hints
are unauthenticated, so they are used only to *refuse* a call early, with a message that names
the real mistake (a wrong profile, calling yourself, a wrong address, the other mode) instead of
the impersonation alarm the identity check would raise later.  A call they let through still
meets the authenticated handshake and the pinned identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from qphone.core.callparams import Mode
from qphone.core.signalmessage import RejectCode, SignalMessage
from qphone.endpoint.outcome import WrongPeer, calling_yourself
from qphone.transport.signaling import Refusal


@dataclass(frozen=True)
class Screened:
    """A caller refused: what it is told, and the line shown on this terminal."""

    refusal: Refusal
    note: str


def screen_offer(
    offer: SignalMessage, own_sae_id: str, peer_sae_id: str, required_mode: Mode | None
) -> Screened | None:
    """Answerer: refuse an offer whose hints do not fit this profile (None: go ahead)."""
    caller, callee = offer.sender, offer.recipient
    if caller and caller == own_sae_id:
        return Screened(
            Refusal(
                RejectCode.WRONG_PEER,
                f"this terminal is {own_sae_id} too: the caller uses {own_sae_id}'s profile",
            ),
            f"refused a call from a terminal that uses this terminal's own profile "
            f"({own_sae_id}): it is calling itself and needs the profile of {peer_sae_id}",
        )
    if callee and callee != own_sae_id:
        return Screened(
            Refusal(
                RejectCode.WRONG_PEER,
                f"this terminal is {own_sae_id}, not {callee}: check the address you called "
                "and the [peer] sae_id of your profile",
            ),
            f"refused a call from {caller or 'a caller'} meant for {callee} "
            f"(this terminal is {own_sae_id})",
        )
    if caller and caller != peer_sae_id:
        return Screened(
            Refusal(
                RejectCode.WRONG_PEER,
                f"this terminal ({own_sae_id}) takes calls from {peer_sae_id} only "
                f"(its profile's peer), not from {caller}",
            ),
            f"refused a call from {caller}: this profile's peer is {peer_sae_id}",
        )
    if required_mode is not None and offer.mode and offer.mode != required_mode.label:
        want = required_mode.label
        return Screened(
            Refusal(
                RejectCode.MODE,
                f"it accepts only {want} calls (it answers with --mode {want}): "
                f"call with --mode {want}",
            ),
            f"refused an {offer.mode} call from {caller or 'a caller'}: "
            f"this terminal accepts only {want} (--mode {want})",
        )
    return None


def check_answerer(answerer: str, own_sae_id: str, peer_sae_id: str) -> WrongPeer | None:
    """Caller: the failure when the answering terminal named another SAE than the profile's
    peer (None when it fits or gave no name)."""
    if not answerer or answerer == peer_sae_id:
        return None
    if answerer == own_sae_id:
        return WrongPeer(calling_yourself(own_sae_id, peer_sae_id))
    return WrongPeer(
        f"the answering terminal is {answerer}, but this profile calls {peer_sae_id}: "
        "check the address, or use the profile meant for this call"
    )
