"""Is the profile consistent with what its KME says?  Checked before dialing or listening.

One ETSI GS QKD 014 ``status`` request for the profile's peer (no key is taken): the KME answers
only for an SAE it serves, names the calling SAE (from its client certificate) as
``master_SAE_ID``, and gives the limits a call's key requests must respect (``min_key_size``,
``max_key_size``, ``max_key_per_request``).  A profile that does not fit raises
:class:`ProfileMismatch` naming the field to fix; a KME that cannot be reached is not a profile
error (the call reports it, or runs PQC-only where allowed), so :func:`check_profile` returns
None then.
"""

from __future__ import annotations

from qphone.config.profile import Profile
from qphone.kmeclient import KmeClient, KmeError, KmeRejected, KmeStatus, KmeUnavailable


class ProfileMismatch(ValueError):
    """The profile does not fit its KME; the message names the field and the fix."""


async def check_profile(profile: Profile, timeout: float = 5.0) -> KmeStatus | None:
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
    except KmeUnavailable:
        return None
    except KmeError:
        return None
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
    return status
