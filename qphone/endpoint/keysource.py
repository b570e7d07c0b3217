"""Where a call's QKD keys come from: the ETSI GS QKD 014 interface the endpoint takes.

:class:`~qphone.endpoint.endpoint.CallEndpoint` takes a :class:`KeySource` the way httpx's
client takes a transport: by default it builds the ETSI 014 client
(:class:`qphone.kmeclient.KmeClient`, which satisfies the protocol structurally) from the
profile; a test gives an in-memory source instead (``tests/support/memorykeysource.py``).

The contract is ETSI GS QKD 014's three calls (§5.1 Get status, §5.2 Get key, §5.3 Get key with
key IDs) plus closing:

* :meth:`KeySource.status` for the pair (this SAE, ``slave_sae_id``): key sizes,
  ``max_key_per_request`` (the key supply splits larger requests), and a qkd-keyserver node's
  ``status_extension`` (the key route report starts from it);
* :meth:`KeySource.enc_keys` (the master SAE, the caller) returns ``number`` new keys of
  ``size_bits``, each with a new ID; :meth:`KeySource.dec_keys` (the slave SAE, the answerer)
  returns the keys of ``key_ids``, in that order;
* failures are :class:`qphone.kmeclient.KmeError` subclasses, each one line: ``KmeOutOfKeys``
  (and its kinds) is retried for a while by the key supply, any other ends the key supply
  (fail closed; ``--allow-pqc-only`` decides what the handshake does without key);
* ``url`` names the source in messages (a KME that re-serves a key ID is named as faulty);
* :meth:`KeySource.aclose` is called once, when the endpoint shuts down.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from qphone.core.qkd import QkdKey
from qphone.kmeclient import KmeStatus


class KeySource(Protocol):
    """An SAE's access to its KME (ETSI GS QKD 014)."""

    url: str

    async def status(self, slave_sae_id: str) -> KmeStatus: ...

    async def enc_keys(
        self, slave_sae_id: str, number: int = 1, size_bits: int | None = None
    ) -> list[QkdKey]: ...

    async def dec_keys(self, master_sae_id: str, key_ids: Sequence[uuid.UUID]) -> list[QkdKey]: ...

    async def aclose(self) -> None: ...
