"""The answering side's policy: the profile's ``[policy]`` and the call's options, as the core's
:class:`~qphone.core.handshake.ResponderPolicy`; a refusal as a :class:`PolicyRefused` that names
the setting to change, and for the caller (:func:`caller_fix`) the option that would be
accepted."""

from __future__ import annotations

from qphone.config.profile import Policy, Profile
from qphone.core.callparams import TAG_BITS
from qphone.core.errors import ProposalRefused
from qphone.core.handshake import ResponderPolicy
from qphone.core.identity import PublicIdentity
from qphone.endpoint.options import CallOptions
from qphone.endpoint.outcome import PolicyRefused


def responder_policy(
    policy: Policy, options: CallOptions, expected_peer: PublicIdentity | None
) -> ResponderPolicy:
    """What this side accepts: ``--allow-pqc-only`` allows PQC-only for one call, ``--mode``
    requires a mode, the profile's ``[policy]`` sets the rest."""
    return ResponderPolicy(
        allow_pqc_only=options.allow_pqc_only or policy.allow_pqc_only,
        required_mode=options.mode,
        expected_peer=expected_peer,
        min_otp_tag_bits=policy.min_otp_tag_bits,
        max_epoch_ms=round(policy.max_epoch_seconds * 1000),
        max_epoch_frames=policy.max_epoch_frames,
    )


def policy_refused(exc: ProposalRefused, profile: Profile) -> PolicyRefused:
    """This side refused the proposal: say which setting refused it and how to change it."""
    where = str(profile.source) if profile.source is not None else "the profile"
    if exc.setting == "mode":
        fix = "answer with the caller's --mode, or without --mode, to accept it"
    elif exc.setting == "allow_pqc_only":
        fix = f"or set [policy] allow_pqc_only = true in {where}"
    else:
        fix = f"refused by [policy] {exc.setting} in {where}; change it there to accept such calls"
    return PolicyRefused(f"{exc}; {fix}", exc.setting)


def caller_fix(exc: ProposalRefused, policy: ResponderPolicy) -> str:
    """What the answerer tells the caller when its policy refuses the proposal: the refusal and
    the caller's option that would be accepted (sent in the handshake's abort message, which
    the caller shows as unauthenticated text)."""
    if exc.setting == "min_otp_tag_bits":
        bits = min(b for b in TAG_BITS if b >= policy.min_otp_tag_bits)
        fix = f"call with --tag-bits {bits} (or more)"
    elif exc.setting == "max_epoch_seconds":
        fix = (
            f"call with --rotate-seconds {policy.max_epoch_ms / 1000:g} or less (and "
            f"--rotate-frames {policy.max_epoch_frames} or less)"
        )
    elif exc.setting == "max_epoch_frames":
        fix = f"call with --rotate-frames {policy.max_epoch_frames} or less"
    elif exc.setting == "allow_pqc_only":
        fix = "call once your KME delivers QKD key (this side takes no PQC-only call)"
    elif exc.setting == "mode" and policy.required_mode is not None:
        fix = f"call with --mode {policy.required_mode.label}"
    else:
        fix = "call with the defaults"
    return f"{exc}: {fix}"
