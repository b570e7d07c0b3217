"""One-hop direct keys through KMS nodes (one process, real HTTPS, in-memory links): the key
comes from the master's node's stream with no node-to-node message, is delivered identical to
the slave SAE once, to nobody else, survives restarts until delivered, and stays consumed.

    a --- b --- c      alice at a; bob and dave at b (one hop); carol at c (two hops)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from keyserver.etsi014.messages import MSG_NOT_FOUND
from keyserver.kms import directkey
from tests.support.node_fixtures import Net, running_network, topology, wait_for

LINE = """
[[nodes]]
id = "a"
[[nodes]]
id = "b"
[[nodes]]
id = "c"
[[links]]
a = "a"
b = "b"
distance_km = 5
[[links]]
a = "b"
b = "c"
distance_km = 5
[[saes]]
id = "alice"
node = "a"
[[saes]]
id = "bob"
node = "b"
[[saes]]
id = "dave"
node = "b"
[[saes]]
id = "carol"
node = "c"
"""
EXT_KEYS = "/kmapi/v1/ext_keys"


async def _enc(net: Net, slave: str, number: int = 1, size: int = 256) -> list[dict[str, Any]]:
    async with net.sae("alice") as alice:
        r = await alice.post(
            f"/api/v1/keys/{slave}/enc_keys", json={"number": number, "size": size}
        )
        assert r.status_code == 200, r.text
        keys: list[dict[str, Any]] = r.json()["keys"]
        return keys


async def _dec(net: Net, slave: str, ids: list[str], master: str = "alice") -> httpx.Response:
    async with net.sae(slave) as s:
        return await s.post(
            f"/api/v1/keys/{master}/dec_keys", json={"key_IDs": [{"key_ID": k} for k in ids]}
        )


def _not_found(r: httpx.Response) -> bool:
    return r.status_code == 400 and r.json()["message"] == MSG_NOT_FOUND


def _sent(net: Net, node: str, peer: str, path: str) -> int:
    client = net.nodes[node].peers.get(peer)
    return 0 if client is None else client.sent.get(path, 0)


async def _sync_now(net: Net) -> None:
    """One sync exchange on link a-b (both ends poked, wait until b has applied one)."""
    link_b = net.nodes["b"].links["a-b"]
    before = link_b.last_sync
    for n in ("a", "b"):
        net.nodes[n].links["a-b"].poke.set()
    await wait_for(lambda: link_b.last_sync > before, what="a sync on a-b")


async def test_one_hop_keys_are_direct_delivered_once_and_to_the_slave_only(
    tmp_path: Path,
) -> None:
    async with running_network(tmp_path, topology(LINE), hold_seconds=3.0) as net:
        keys = await _enc(net, "bob", number=3, size=512)
        ids = [k["key_ID"] for k in keys]
        assert all(uuid.UUID(i).version == directkey.VERSION for i in ids)
        assert _sent(net, "a", "b", EXT_KEYS) == 0  # no node-to-node message at all
        # a forged ID (one bit of the tag flipped) and another SAE at b: not found, no change
        forged = str(uuid.UUID(int=uuid.UUID(ids[0]).int ^ 1))
        assert _not_found(await _dec(net, "bob", [forged]))
        assert _not_found(await _dec(net, "dave", [ids[0]]))
        assert _not_found(await _dec(net, "bob", [ids[0]], master="carol"))
        assert _not_found(await _dec(net, "bob", [ids[0], str(uuid.uuid4())]))  # all or none
        # a sync (the owner reports its cursor past these slices) does not erase them at once
        await _sync_now(net)
        r = await _dec(net, "bob", ids[:2])
        assert r.status_code == 200, r.text
        assert r.json()["keys"] == keys[:2]  # the same key under the same ID at both ends
        assert _not_found(await _dec(net, "bob", ids[:1]))  # delivered once
        r = await _dec(net, "bob", ids[2:])
        assert r.status_code == 200 and r.json()["keys"] == keys[2:]
        assert net.nodes["a"].counters["direct_keys_issued"] == 3
        assert net.nodes["b"].counters["direct_keys_delivered"] == 3
        assert net.nodes["a"].counters["relays_started"] == 0
        async with net.sae("alice") as alice:
            st = (await alice.get("/api/v1/keys/bob/status")).json()
        assert st["status_extension"]["relay"]["direct_keys"] == 3
        # two hops still relay
        far = await _enc(net, "carol")
        assert uuid.UUID(far[0]["key_ID"]).version == 4
        r = await _dec(net, "carol", [far[0]["key_ID"]])
        assert r.status_code == 200 and r.json()["keys"] == far
        assert net.nodes["a"].counters["relays_delivered"] == 1
        # a key never collected: b erases its bytes once the owner's cursor past them is
        # hold_seconds old (3 s here), at a sync; then it is not found
        late = await _enc(net, "bob")
        await _sync_now(net)  # b learns the cursor past the late key now
        deadline = time.monotonic() + 3.2
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            await _sync_now(net)
        await _sync_now(net)
        assert _not_found(await _dec(net, "bob", [late[0]["key_ID"]]))


async def test_a_direct_key_survives_restarts_until_delivered_then_stays_consumed(
    tmp_path: Path,
) -> None:
    async with running_network(tmp_path, topology(LINE)) as net:
        keys = await _enc(net, "bob", number=2)
        cursor = net.nodes["a"].store.link_keys.view("a-b", "a").cursor
        await net.restart("a")
        # a's cursor was committed before the keys were returned: it never hands them out again
        assert net.nodes["a"].store.link_keys.view("a-b", "a").cursor >= cursor
        await net.restart("b")
        # b needs no sync, nor a: the slice is in b's store
        r = await _dec(net, "bob", [keys[0]["key_ID"]])
        assert r.status_code == 200 and r.json()["keys"] == keys[:1]
        await net.restart("b")
        assert _not_found(await _dec(net, "bob", [keys[0]["key_ID"]]))
        r = await _dec(net, "bob", [keys[1]["key_ID"]])
        assert r.status_code == 200 and r.json()["keys"] == keys[1:]
