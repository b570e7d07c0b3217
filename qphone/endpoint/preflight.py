"""Is the profile consistent with what its KME says?  Checked before dialing or listening.

One ETSI GS QKD 014 ``status`` request for the profile's peer (no key is taken): the KME answers
only for an SAE it serves, names the calling SAE (from its client certificate) as
``master_SAE_ID``, and gives the limits a call's key requests must respect (``min_key_size``,
``max_key_size``, ``max_key_per_request``).  A profile that does not fit raises
:class:`ProfileMismatch` naming the field to fix; a KME that cannot be reached, or whose link
reports an eavesdropper, is not a profile error: :func:`check_profile` says so in
:attr:`KmeCheck.problem`, and the command line stops there (exit 1) unless the call may run
PQC-only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from qphone.config.profile import Profile
from qphone.kmeclient import KmeClient, KmeError, KmeRejected, KmeStatus


class ProfileMismatch(ValueError):
    """The profile does not fit its KME; the message names the field and the fix."""


@dataclass(frozen=True)
class KmeCheck:
    """What the KME said: its status, or why no QKD key can come from it now (``problem``:
    unreachable, or an eavesdropper alarm on the link)."""

    status: KmeStatus | None
    problem: str | None = None


async def check_profile(profile: Profile, timeout: float = 5.0) -> KmeCheck:
    """The KME's status toward the profile's peer; raises :class:`ProfileMismatch`."""
    name = str(profile.source) if profile.source else "the profile"
    peer, own = profile.peer_sae_id, profile.sae_id
    try:
        kme = KmeClient.from_profile(profile, timeout=timeout)
    except KmeRejected as exc:  # the certificate or key cannot be loaded
        raise ProfileMismatch(
            f"{name}: {exc.message}; fix [kme] client_cert and client_key"
        ) from None
    try:
        async with kme:
            status = await kme.status(peer)
    except KmeRejected as exc:
        if exc.status == 401:
            raise ProfileMismatch(
                f"{name}: the KME at {profile.kme_url} refused this SAE's certificate "
                f"({exc.message}): [kme] client_cert and client_key must be {own}'s, signed by "
                "the KME's CA"
            ) from None
        raise ProfileMismatch(
            f"{name}: [peer] sae_id = {peer!r}, but the KME at {profile.kme_url} serves no such "
            f"peer ({exc.message}): set [peer] sae_id to the SAE you call, or use the profile "
            "meant for this terminal"
        ) from None
    except KmeError as exc:  # unreachable, or not an ETSI 014 answer: not a profile error
        return KmeCheck(None, f"cannot get a QKD key from the KME: {exc}")
    if status.master_sae_id != own:
        raise ProfileMismatch(
            f"{name}: [sae] id = {own!r}, but the KME knows this terminal's certificate as SAE "
            f"{status.master_sae_id!r}: the profile mixes the files of two SAEs (use "
            f"{status.master_sae_id}'s profile, or fix [sae] id / [kme] client_cert)"
        )
    if status.slave_sae_id != peer:
        raise ProfileMismatch(
            f"{name}: the KME answered for SAE {status.slave_sae_id!r} when asked about the "
            f"peer {peer!r}: check [peer] sae_id"
        )
    if status.eavesdropper_alarm:
        return KmeCheck(
            status,
            f"the KME at {profile.kme_url} reports an eavesdropper alarm on the QKD link (its "
            "error rate is above the abort threshold): no QKD key will come until the link is "
            "checked",
        )
    return KmeCheck(status)


async def wait_for_key(
    profile: Profile,
    timeout: float,
    min_bits: int = 1,
    on_wait: Callable[[], None] | None = None,
) -> KmeStatus | None:
    """Wait until the profile's KME holds ``min_bits`` of key for its peer, or reports an
    eavesdropper alarm (no key will come then); None if it did neither within ``timeout``.

    A freshly started QKD link needs a while before its first key: ``qphone demo`` and the
    tests wait here instead of failing their first call."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    told = False
    async with KmeClient.from_profile(profile) as kme:
        while loop.time() < deadline:
            with contextlib.suppress(KmeError):
                status = await kme.status(profile.peer_sae_id)
                if status.eavesdropper_alarm or status.stored_key_count * status.key_size >= (
                    min_bits
                ):
                    return status
            if on_wait is not None and not told:
                on_wait()
                told = True
            await asyncio.sleep(0.5)
    return None
