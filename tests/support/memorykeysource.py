"""An in-memory key source for endpoint tests: two SAEs' KMEs without keyserver processes.

:class:`MemoryKms` is the key network of one pair of SAEs; :meth:`MemoryKms.source` gives each
SAE its :class:`MemoryKeySource`, a :class:`qphone.endpoint.keysource.KeySource` (the protocol
the endpoint takes instead of its ETSI 014 client).  Keys handed out by ``enc_keys`` at one SAE
are held for the other and served once by its ``dec_keys`` (the same idea as the core's
``qphone.demo.inmemorycall.MemoryKmePair``, which holds them here).  Failures are the ETSI 014
client's typed errors: an unknown key ID is refused as a KME refuses it, an empty pool is
``KmeOutOfKeys`` (``stock_bits``), a KME that cannot be reached ``KmeUnavailable``
(``unavailable``).  What each source was asked is logged (:attr:`MemoryKeySource.calls`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from qphone.config.profile import Profile
from qphone.core.qkd import QkdKey
from qphone.demo.inmemorycall import MemoryKmePair
from qphone.kmeclient import KmeOutOfKeys, KmeRejected, KmeStatus, KmeUnavailable

KEY_SIZE = 256
MAX_KEY_PER_REQUEST = 128
MAX_KEY_SIZE = 65_536


@dataclass
class MemoryKms:
    """The KMEs of two SAEs in memory. ``stock_bits`` (None: endless) is the key both can
    still share; ``unavailable`` makes every request fail as an unreachable KME's does."""

    stock_bits: int | None = None
    unavailable: bool = False
    pair: MemoryKmePair = field(default_factory=MemoryKmePair)

    def source(self, sae_id: str) -> MemoryKeySource:
        return MemoryKeySource(self, sae_id)


class MemoryKeySource:
    """One SAE's KME in memory (satisfies :class:`~qphone.endpoint.keysource.KeySource`)."""

    def __init__(self, kms: MemoryKms, sae_id: str) -> None:
        self.kms = kms
        self.sae_id = sae_id
        self.url = f"memory://kme-of-{sae_id}"
        self.calls: list[str] = []  # "status", "enc_keys", "dec_keys", in order
        self.closed = False

    def _request(self, call: str) -> None:
        self.calls.append(call)
        if self.closed:
            raise KmeUnavailable(f"KME at {self.url}: the client is closed")
        if self.kms.unavailable:
            raise KmeUnavailable(f"KME at {self.url} unreachable (in-memory KME switched off)")

    async def status(self, slave_sae_id: str) -> KmeStatus:
        self._request("status")
        stock = self.kms.stock_bits
        return KmeStatus(
            source_kme_id=f"kme-of-{self.sae_id}",
            target_kme_id=f"kme-of-{slave_sae_id}",
            master_sae_id=self.sae_id,
            slave_sae_id=slave_sae_id,
            key_size=KEY_SIZE,
            stored_key_count=(1 << 20) if stock is None else stock // KEY_SIZE,
            max_key_count=1 << 20,
            max_key_per_request=MAX_KEY_PER_REQUEST,
            max_key_size=MAX_KEY_SIZE,
            min_key_size=8,
            max_sae_id_count=0,
        )

    async def enc_keys(
        self, slave_sae_id: str, number: int = 1, size_bits: int | None = None
    ) -> list[QkdKey]:
        self._request("enc_keys")
        bits = KEY_SIZE if size_bits is None else size_bits
        if number < 1 or bits <= 0 or bits % 8:
            raise ValueError("number must be >= 1 and size_bits a positive multiple of 8")
        if number > MAX_KEY_PER_REQUEST or bits > MAX_KEY_SIZE:
            raise KmeRejected(400, "request larger than max_key_per_request or max_key_size")
        stock = self.kms.stock_bits
        if stock is not None:
            if stock < number * bits:
                raise KmeOutOfKeys(f"KME at {self.url}: not enough key material ({stock} bits)")
            self.kms.stock_bits = stock - number * bits
        return self.kms.pair.enc_keys(number, bits)

    async def dec_keys(self, master_sae_id: str, key_ids: Sequence[uuid.UUID]) -> list[QkdKey]:
        self._request("dec_keys")
        if not key_ids:
            raise ValueError("key_ids must not be empty")
        try:
            return self.kms.pair.dec_keys(list(key_ids))
        except KeyError:
            raise KmeRejected(400, "key ID not found (unknown, or served already)") from None

    async def aclose(self) -> None:
        self.closed = True


def memory_profiles(tmp: Path) -> tuple[Profile, Profile]:
    """Profiles of alice and bob for calls with :class:`MemoryKeySource`: own identities and
    pins in ``tmp``; their ``[kme]`` (never used: the endpoint is given its key source) points
    nowhere."""
    nowhere = tmp / "no-kme-certificate.pem"
    alice = Profile(
        sae_id="alice",
        kme_url="https://127.0.0.1:1",
        ca_cert=nowhere,
        client_cert=nowhere,
        client_key=nowhere,
        peer_sae_id="bob",
        identity_file=tmp / "a.id",
        known_peers=tmp / "a.peers.json",
        source=tmp / "alice.toml",
    )
    bob = replace(
        alice,
        sae_id="bob",
        peer_sae_id="alice",
        identity_file=tmp / "b.id",
        known_peers=tmp / "b.peers.json",
        source=tmp / "bob.toml",
    )
    return alice, bob


def sources(kms: MemoryKms | None = None) -> tuple[MemoryKeySource, MemoryKeySource]:
    """Alice's and bob's key sources on one (new, endless) in-memory key network."""
    kms = kms or MemoryKms()
    return kms.source("alice"), kms.source("bob")
