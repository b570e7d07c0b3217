"""Moved to :mod:`qphone.config.profile`.

This alias stays only until the two imports outside qphone's own tree follow the move
(tests/keyserver/network/test_demo_cli.py, owned by the keyserver team, and
tests/qphone/test_kmeclient.py, which the KMS branch edits); then it is deleted.
"""

from qphone.config.profile import Profile, ProfileError, load_profile, parse_profile

__all__ = ["Profile", "ProfileError", "load_profile", "parse_profile"]
