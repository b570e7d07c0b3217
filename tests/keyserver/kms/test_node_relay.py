"""KMS nodes in one process (real HTTPS, in-memory links): relay, routing, multipath, trust."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import httpx
import pytest

from keyserver.kms.nodeconfig import Timers
from keyserver.pki.tls import client_context
from tests.support.node_fixtures import DIAMOND, Net, running_network, topology, wait_for


async def relay_pair(net: Net, number: int = 2, size: int = 256) -> tuple[list[dict], list[dict]]:
    async with net.sae("alice") as alice, net.sae("bob") as bob:
        r = await alice.post("/api/v1/keys/bob/enc_keys", json={"number": number, "size": size})
        assert r.status_code == 200, r.text
        keys = r.json()["keys"]
        r2 = await bob.post(
            "/api/v1/keys/alice/dec_keys", json={"key_IDs": [{"key_ID": k["key_ID"]} for k in keys]}
        )
        assert r2.status_code == 200, r2.text
        return keys, r2.json()["keys"]


async def test_relay_over_two_hops_and_status(tmp_path: Path) -> None:
    async with running_network(tmp_path, topology(DIAMOND)) as net:
        keys, got = await relay_pair(net, 3, 512)
        assert keys == got and len({k["key"] for k in keys}) == 3
        assert all(len(base64.b64decode(k["key"])) == 64 for k in keys)
        async with net.sae("alice") as alice:
            st = (await alice.get("/api/v1/keys/bob/status")).json()
        assert (st["source_KME_ID"], st["target_KME_ID"]) == ("a", "d")
        ext = st["status_extension"]
        assert ext["route"]["hops"] == 2 and ext["route"]["nodes"][0] == "a"
        assert ext["relay"]["relays"] == 1 and ext["relay"]["last_relay_ms"] > 0
        [used] = ext["relay"]["last_routes"]  # routes balance load, so may differ from now
        assert used[0] == "a" and used[-1] == "d" and len(ext["relay"]["link_bits"]) == 2
        [taken] = ext["relay"]["routes_used"]  # the relays' route, with its relay count
        assert taken["nodes"] == used and taken["relays"] == 1 and taken["hops"] == 2
        assert set(taken["links"]) == set(ext["relay"]["link_bits"]) and taken["legs"] == 1
        assert all(b == 8 * (3 * 64 + 32) for b in ext["relay"]["link_bits"].values())
        assert not ext["qkd_link"]["eavesdropper_alarm"]
        async with net.sae("bob") as bob:  # delivered keys are gone; not yours == not there
            again = await bob.post(
                "/api/v1/keys/alice/dec_keys", json={"key_IDs": [{"key_ID": keys[0]["key_ID"]}]}
            )
            assert again.status_code == 400 and "not found" in again.json()["message"]
        async with net.sae("carol") as carol:
            r = await carol.get("/api/v1/keys/bob/status")
            assert r.json()["target_KME_ID"] == "d"


async def test_eavesdropper_link_is_routed_around(tmp_path: Path) -> None:
    # the nodes poll their modules every second (default 5 s while a link holds key): the
    # alarm, the cut and the recovery below are each noticed at a poll
    fast = Timers(module_poll=1.0)
    async with running_network(tmp_path, topology(DIAMOND), timers=fast) as net:
        first = net.nodes["a"].routes("d", 64).routes[0]
        bad = first.links[1]
        net.links[bad].alarm = True

        def avoided() -> bool:
            d = net.nodes["a"].routes("d", 64)
            return d.ok and bad not in d.routes[0].links

        await wait_for(avoided, timeout=10, what="route around the eavesdropped link")
        for _ in range(5):
            keys, got = await relay_pair(net)
            assert keys == got
        async with net.sae("alice") as alice:
            st = (await alice.get("/api/v1/keys/bob/status")).json()["status_extension"]
        assert bad not in st["route"]["links"]
        down = {d["link"]: d for d in st["network"]["down_links"]}
        assert down[bad]["alarm"] is True
        # the other route goes too: a clear 503 naming the broken links
        other = st["route"]["links"][0]
        net.links[other].down = True
        await wait_for(lambda: not net.nodes["a"].routes("d", 64).ok, timeout=10, what="no route")
        async with net.sae("alice") as alice:
            r = await alice.post("/api/v1/keys/bob/enc_keys", json={"number": 1})
        assert r.status_code == 503
        msg = r.json()["message"]
        assert "no route" in msg and bad in msg and other in msg and "eavesdropper" in msg
        assert r.json()["details"][0]["qkd_link"]["eavesdropper_alarm"] is True
        # the cut fibre comes back: relays resume
        net.links[other].down = False
        await wait_for(lambda: net.nodes["a"].routes("d", 64).ok, timeout=15, what="recovery")
        keys, got = await relay_pair(net)
        assert keys == got


async def test_multipath_shares(tmp_path: Path) -> None:
    async with running_network(
        tmp_path, topology(DIAMOND), multipath=2, record=True, record_view=True
    ) as net:
        keys, got = await relay_pair(net, 4, 256)
        assert keys == got
        async with net.sae("alice") as alice:
            st = (await alice.get("/api/v1/keys/bob/status")).json()["status_extension"]
        assert st["route"]["legs"] == 2
        assert {tuple(r) for r in st["relay"]["last_routes"]} == {("a", "b", "d"), ("a", "c", "d")}
        [taken] = st["relay"]["routes_used"]
        assert taken["legs"] == 2 and taken["relays"] == 1


async def test_sae_certificate_cannot_speak_for_a_node(tmp_path: Path) -> None:
    async with running_network(tmp_path, topology(DIAMOND)) as net:
        await relay_pair(net, 1)
        async with net.sae("alice") as alice:  # hold one key at d for bob
            r = await alice.post("/api/v1/keys/bob/enc_keys", json={"number": 1})
            kid = r.json()["keys"][0]["key_ID"]
        before = net.nodes["d"].store.held.count()
        # an SAE certificate whose CN is a node's ID ("a"), signed by the SAE CA
        forged = net.pki._cas["sae"].issue(tmp_path / "forged", "a", "a")
        url = net.nodes["d"].config.node_urls["d"]
        for ca in (net.pki.ca_cert("sae"), net.pki.ca_cert("node")):
            ctx = client_context(ca, forged.cert, forged.key)
            ctx.check_hostname = False
            import ssl

            ctx.verify_mode = ssl.CERT_NONE
            async with httpx.AsyncClient(verify=ctx, timeout=5) as c:
                for path, body in (
                    (
                        "/kmapi/v1/ext_keys/void",
                        {
                            "key_ids": [kid],
                            "extension": {"relay_id": str(uuid.uuid4()), "until_ms": 0},
                        },
                    ),
                    ("/kms/v1/link/sync", {"link": "b-d"}),
                ):
                    with pytest.raises(httpx.HTTPError):
                        r = await c.post(url + path, json=body)
                        assert r.status_code == 401  # never reached with a valid handshake
                        raise httpx.HTTPError("refused")
        # and on the SAE port, an SAE named like a node gets nothing of the node API
        async with net.sae("bob") as bob:
            r = await bob.post("/kmapi/v1/ext_keys/void", json={})
            assert r.status_code in (404, 405)
        assert net.nodes["d"].store.held.count() == before
        async with net.sae("bob") as bob:
            r = await bob.post("/api/v1/keys/alice/dec_keys", json={"key_IDs": [{"key_ID": kid}]})
            assert r.status_code == 200
