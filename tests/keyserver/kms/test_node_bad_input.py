"""The node-to-node API under bad input (in one process, real HTTPS, in-memory links): every
handler (announce, sync, LSA, ext_keys, ack, void) answers malformed JSON, wrong types, absurd
sizes and counts, links that do not join the caller and replayed announcements with a 4xx (a
replayed announcement: the answer recorded the first time) and changes no state."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from keyserver.kms.node import MAX_NODE_BODY, KmsNode
from keyserver.pki.tls import client_context
from tests.support.node_fixtures import Net, running_network, topology

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
node = "c"
"""

PATHS = (
    "/kms/v1/link/announce",
    "/kms/v1/link/sync",
    "/kms/v1/lsa",
    "/kmapi/v1/ext_keys",
    "/kmapi/v1/ext_keys/ack",
    "/kmapi/v1/ext_keys/void",
)


def _node_client(net: Net, as_node: str) -> httpx.AsyncClient:
    creds = net.pki.node(as_node)
    ctx = client_context(creds.node_ca, creds.node.cert, creds.node.key)
    return httpx.AsyncClient(verify=ctx, timeout=10.0)


def _snapshot(node: KmsNode) -> dict[str, Any]:
    """What bad input must not change at a node (links idle: stock can only grow)."""
    s = node.store
    return {
        "stock": {
            (lid, o): s.link_keys.stock_bytes(lid, o)
            for lid in node.links
            for o in (node.links[lid].spec.a, node.links[lid].spec.b)
        },
        "announce_seq": {lid: s.link_keys.announce_seq(lid) for lid in node.links},
        "held": s.held.count(),
        "pending": s.relays.pending_count(),
        "lsdb": sorted((v.link, v.up) for v in node.lsdb.views(0.0)),
    }


BAD_JSON = [
    b"",
    b"{",
    b"\xff\xfe",
    b"[]",
    b"null",
    b"42",
    b'{"seq": 1, "seq": 2}',
    b"[" * 50_000 + b"]" * 50_000,
    b'{"n": ' + b"9" * 5000 + b"}",
]


def _wrong_types() -> list[dict[str, Any]]:
    rid = str(uuid.uuid4())
    return [
        {"link": "a-b", "seq": "1", "keys": []},
        {"link": "a-b", "seq": True, "keys": [{"key_ID": rid, "owner": "a"}]},
        {"link": "a-b", "seq": 2**80, "keys": [{"key_ID": rid, "owner": "a"}]},
        {"link": "a-b", "seq": 10**6, "keys": [{"key_ID": rid, "owner": "a"}] * 5000},
        {"link": "a-b", "seq": 10**6, "keys": [{"key_ID": "x", "owner": "zz"}]},
        {"link": "a-b", "sender": "a", "announce_seq": 1.5, "streams": []},
        {
            "link": "a-b",
            "sender": "a",
            "announce_seq": 1,
            "streams": [
                {"owner": "a", "end": -1, "layout": "00" * 32, "cursor": 0},
                {"owner": "b", "end": 2**70, "layout": "zz", "cursor": 5},
            ],
        },
        {
            "link": "a-b",
            "sender": "a",
            "announce_seq": 1,
            "streams": [
                {"owner": "a", "end": 10, "layout": "00" * 32, "cursor": 11},
                {"owner": "a", "end": 10, "layout": "00" * 32, "cursor": 0},
            ],
        },
        {"lsas": "all"},
        {"lsas": [{"origin": "a", "seq": -1, "links": []}] * 300},
        {"lsas": [{"origin": "a", "seq": 1, "links": [{"link": 5}]}]},
        {"lsas": [], "resync": "yes"},
        {"lsas": [], "all": True},
        {
            "keys": [],
            "initiator_sae_id": 1,
            "target_sae_ids": None,
            "ack_callback_url": "",
            "extension": {},
        },
        {"key_ids": "x", "status": "relayed", "extension": {"relay_id": rid, "reason": ""}},
        {"key_ids": [rid], "status": "maybe", "extension": {"relay_id": rid, "reason": ""}},
        {"key_ids": [rid] * 5000, "extension": {"relay_id": rid, "until_ms": 0}},
        {"key_ids": [rid], "extension": {"relay_id": "not-a-uuid", "until_ms": -5}},
    ]


def _unknown_links() -> list[tuple[str, dict[str, Any]]]:
    rid = str(uuid.uuid4())
    stream = {"end": 0, "layout": "00" * 32, "cursor": 0}
    return [
        (
            "/kms/v1/link/announce",
            {"link": "b-c", "seq": 1, "keys": [{"key_ID": rid, "owner": "b"}]},
        ),
        (
            "/kms/v1/link/announce",
            {"link": "x-y", "seq": 1, "keys": [{"key_ID": rid, "owner": "x"}]},
        ),
        (
            "/kms/v1/link/sync",
            {
                "link": "b-c",
                "sender": "a",
                "announce_seq": 0,
                "streams": [{"owner": "b", **stream}, {"owner": "c", **stream}],
            },
        ),
        (
            "/kms/v1/link/sync",
            {
                "link": "a-b",
                "sender": "a",
                "announce_seq": 0,
                "streams": [{"owner": "a", **stream}, {"owner": "c", **stream}],
            },
        ),
    ]


async def test_node_api_refuses_bad_input_with_4xx_and_changes_nothing(tmp_path: Path) -> None:
    async with running_network(tmp_path, topology(LINE), max_key_count=256) as net:
        b = net.nodes["b"]
        url = b.config.node_urls["b"]
        before = _snapshot(b)
        statuses: list[tuple[str, int]] = []
        async with _node_client(net, "a") as c:
            for path in PATHS:
                for body in BAD_JSON:
                    r = await c.post(
                        url + path, content=body, headers={"content-type": "application/json"}
                    )
                    statuses.append((path, r.status_code))
                r = await c.post(
                    url + path,
                    content=b" " * (MAX_NODE_BODY + 1),
                    headers={"content-type": "application/json"},
                )
                statuses.append((path, r.status_code))
                for obj in _wrong_types():
                    r = await c.post(url + path, json=obj)
                    statuses.append((path, r.status_code))
            for path, obj in _unknown_links():
                r = await c.post(url + path, json=obj)
                statuses.append((path, r.status_code))
            # a replayed announcement gets the answer recorded the first time, nothing more
            seq = b.store.link_keys.announce_seq("a-b")
            if seq >= 1:
                replay = {
                    "link": "a-b",
                    "seq": seq,
                    "keys": [{"key_ID": str(uuid.uuid4()), "owner": "a"}],
                }
                r = await c.post(url + "/kms/v1/link/announce", json=replay)
                assert r.status_code == 200 and r.json()["seq"] == seq
                assert set(r.json()["got"]) == {
                    str(k) for k in b.store.link_keys.announced("a-b", seq) or []
                }
        wrong = [(p, s) for p, s in statuses if not 400 <= s < 500]
        assert wrong == []
        after = _snapshot(b)
        assert after["announce_seq"] == before["announce_seq"]
        assert (after["held"], after["pending"]) == (before["held"], before["pending"])
        assert after["lsdb"] == before["lsdb"]
        assert all(after["stock"][k] >= v for k, v in before["stock"].items())  # none spent
