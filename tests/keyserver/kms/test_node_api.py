"""A KMS node pair's ETSI GS QKD 014 API over real HTTPS (mutual TLS, real certificates).

The conformance suite of the former KME pair, run against two KMS nodes: any ETSI 014 client
that worked before still passes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyserver.etsi014 import messages as etsi014
from keyserver.etsi014.openapi import OPENAPI_PATH, STATUS_CODES
from keyserver.kms.nodeclient import NodeClient, NodeUnreachable
from keyserver.kms.nodeconfig import Tls
from keyserver.kms.relayinitiator import MSG_OUT_OF_KEYS
from tests.support.kme_fixtures import (
    DeterministicSource,
    KmePki,
    PairEnd,
    make_pki,
    running_pair,
    sae_client,
    wait_for,
)

ENC = "/api/v1/keys/bob/enc_keys"
DEC = "/api/v1/keys/alice/dec_keys"
STATUS = "/api/v1/keys/bob/status"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> KmePki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Pair:
    def __init__(self, pki: KmePki, a: PairEnd, b: PairEnd) -> None:
        self.pki, self.a, self.b = pki, a, b
        d = pki.demo
        self.alice = sae_client(d, a.url, d.alice)
        self.bob = sae_client(d, b.url, d.bob)
        self.carol = sae_client(d, a.url, pki.carol)
        self.dave = sae_client(d, b.url, pki.dave)

    async def aclose(self) -> None:
        for c in (self.alice, self.bob, self.carol, self.dave):
            await c.aclose()

    async def counts(self) -> tuple[int, int, int]:
        """(stored_key_count at A for alice->bob, at B for bob->alice, keys held at B)."""
        sa = (await self.alice.get(STATUS)).json()["stored_key_count"]
        sb = (await self.bob.get("/api/v1/keys/alice/status")).json()["stored_key_count"]
        return sa, sb, self.b.store.held.count()

    async def enc(self, **body: Any) -> list[dict[str, str]]:
        r = await self.alice.post(ENC, json=body)
        assert r.status_code == 200, r.text
        keys: list[dict[str, str]] = r.json()["keys"]
        return keys


@pytest.fixture
async def pair(pki: KmePki, tmp_path: Path) -> AsyncIterator[Pair]:
    async with running_pair(
        pki.demo, tmp_path, local_a=("alice", "carol"), local_b=("bob", "dave")
    ) as (a, b):
        p = Pair(pki, a, b)
        try:
            yield p
        finally:
            await p.aclose()


def ids_body(ids: list[str]) -> dict[str, Any]:
    return {"key_IDs": [{"key_ID": i} for i in ids]}


# -- the three calls --
async def test_status_reports_every_field(pair: Pair) -> None:
    r = await pair.alice.get(STATUS)
    assert r.status_code == 200
    st = r.json()
    assert st["source_KME_ID"] == "KME-A" and st["target_KME_ID"] == "KME-B"
    assert st["master_SAE_ID"] == "alice" and st["slave_SAE_ID"] == "bob"
    assert (st["key_size"], st["min_key_size"], st["max_key_size"]) == (256, 64, 65536)
    assert st["max_key_per_request"] == 128 and st["max_SAE_ID_count"] == 0
    assert st["max_key_count"] == 2000
    assert st["stored_key_count"] >= 100
    link = st["status_extension"]["qkd_link"]
    assert link["blocks_ok"] > 0 and link["eavesdropper_alarm"] is False
    assert link["last_qber"] == pytest.approx(0.02)
    # B reports the same link, from its own (receiver) module
    sb = (await pair.bob.get("/api/v1/keys/alice/status")).json()
    assert sb["source_KME_ID"] == "KME-B" and sb["master_SAE_ID"] == "bob"
    assert sb["status_extension"]["qkd_link"]["blocks_ok"] > 0


async def test_enc_then_dec_post_gives_identical_keys_once(pair: Pair) -> None:
    before = await pair.counts()
    keys = await pair.enc(number=3, size=512)
    assert len(keys) == 3 and len({k["key_ID"] for k in keys}) == 3
    assert all(len(base64.b64decode(k["key"])) == 64 for k in keys)
    after = await pair.counts()
    # one hop: direct keys (kms/directkey.py), 3 x (512 bits + a 128-bit one-time MAC key) of
    # A's stream, 1,920 bits (7.5 keys of 256); nothing moves to B, whose copy of A's stream
    # already holds them
    assert after[0] == before[0] - 8
    assert after[2] == before[2]
    r = await pair.bob.post(DEC, json=ids_body([k["key_ID"] for k in keys]))
    assert r.status_code == 200
    assert r.json()["keys"] == keys
    assert (await pair.counts())[2] == before[2]
    r = await pair.bob.post(DEC, json=ids_body([keys[0]["key_ID"]]))  # served once only
    assert r.status_code == 400
    assert r.json()["message"] == etsi014.MSG_NOT_FOUND


async def test_get_forms_and_defaults(pair: Pair) -> None:
    r = await pair.alice.get(ENC)
    assert r.status_code == 200
    (key,) = r.json()["keys"]
    assert len(base64.b64decode(key["key"])) == 32  # default key_size 256 bits
    r = await pair.alice.get(ENC, params={"number": "2", "size": "64"})
    two = r.json()["keys"]
    assert r.status_code == 200 and [len(base64.b64decode(k["key"])) for k in two] == [8, 8]
    r = await pair.alice.post(ENC)  # POST without body: all defaults
    assert r.status_code == 200 and len(r.json()["keys"]) == 1
    for k in [key, *two]:
        got = await pair.bob.get(DEC, params={"key_ID": k["key_ID"]})
        assert got.status_code == 200 and got.json()["keys"] == [k]


@pytest.mark.parametrize("size", [64, 72, 8192, 65536])
async def test_key_sizes_from_64_to_65536_bits(pair: Pair, size: int) -> None:
    (key,) = await pair.enc(number=1, size=size)
    assert len(base64.b64decode(key["key"])) == size // 8
    r = await pair.bob.post(DEC, json=ids_body([key["key_ID"]]))
    assert r.json()["keys"] == [key]


async def test_reverse_direction_bob_master_alice_slave(pair: Pair) -> None:
    r = await pair.bob.post("/api/v1/keys/alice/enc_keys", json={"number": 2})
    assert r.status_code == 200
    keys = r.json()["keys"]
    r = await pair.alice.post(
        "/api/v1/keys/bob/dec_keys", json=ids_body([k["key_ID"] for k in keys])
    )
    assert r.status_code == 200 and r.json()["keys"] == keys


async def test_extension_optional_is_accepted_and_ignored(pair: Pair) -> None:
    keys = await pair.enc(number=1, extension_optional=[{"abc_route_type": "direct"}])
    assert len(keys) == 1


# -- bad requests: spec status + message, and no state change --------------------------------------
BAD_ENC_BODIES: list[tuple[bytes, str]] = [
    (b"{not json", "request body is not valid UTF-8 JSON"),
    (b"\xff\xfe", "request body is not valid UTF-8 JSON"),
    (b"[1, 2]", "request body must be a JSON object"),
    (b'{"number": "3"}', "number must be an integer"),
    (b'{"number": true}', "number must be an integer"),
    (b'{"number": 1.5}', "number must be an integer"),
    (b'{"number": 0}', "number must be at least 1"),
    (b'{"number": -4}', "number must be at least 1"),
    (b'{"number": 129}', "number exceeds max_key_per_request (128)"),
    (b'{"number": 1000000000000000000000000000000}', "number exceeds max_key_per_request (128)"),
    (b'{"size": 100}', etsi014.MSG_SIZE_MULTIPLE),
    (b'{"size": 56}', "size must be between min_key_size (64) and max_key_size (65536) bits"),
    (b'{"size": 65544}', "size must be between min_key_size (64) and max_key_size (65536) bits"),
    (b'{"size": -256}', "size must be between min_key_size (64) and max_key_size (65536) bits"),
    (b'{"size": "256"}', "size must be an integer"),
    (b'{"size": null}', "size must be an integer"),
    (b'{"number": 1, "number": 2}', "duplicate field 'number' in request body"),
    (b'{"numbr": 1}', "unknown field 'numbr' in key request"),
    (b'{"extension_mandatory": {"a": 1}}', "extension_mandatory must be an array of objects"),
    (
        b'{"additional_slave_SAE_IDs": "carl"}',
        "additional_slave_SAE_IDs must be an array of strings",
    ),
    (b"[" * 5000 + b"]" * 5000, "request body is not valid UTF-8 JSON"),
]


@pytest.mark.parametrize(("body", "message"), BAD_ENC_BODIES)
async def test_enc_keys_bad_body(pair: Pair, body: bytes, message: str) -> None:
    before = await pair.counts()
    r = await pair.alice.post(ENC, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["message"] == message
    assert await pair.counts() == before


async def test_mandatory_extension_refused_with_details(pair: Pair) -> None:
    before = await pair.counts()
    body = {"extension_mandatory": [{"abc_route_type": "direct"}, {"abc_transfer": "qkd"}]}
    r = await pair.alice.post(ENC, json=body)
    assert r.status_code == 400
    assert r.json() == {
        "message": etsi014.MSG_EXT_MANDATORY,
        "details": [{"extension_mandatory_unsupported": ["abc_route_type", "abc_transfer"]}],
    }
    assert await pair.counts() == before


async def test_multicast_refused(pair: Pair) -> None:
    before = await pair.counts()
    r = await pair.alice.post(ENC, json={"additional_slave_SAE_IDs": ["dave"]})
    assert r.status_code == 400 and "max_SAE_ID_count (0)" in r.json()["message"]
    assert await pair.counts() == before


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("number=1e3", "number must be a non-negative decimal integer"),
        ("number=%2B1", "number must be a non-negative decimal integer"),
        ("number=-1", "number must be a non-negative decimal integer"),
        ("number=", "number must be a non-negative decimal integer"),
        ("size=1234567890123", "size must be a non-negative decimal integer"),
        ("number=0", "number must be at least 1"),
        ("size=12", "size must be between min_key_size (64) and max_key_size (65536) bits"),
        ("number=1&number=2", "query parameter 'number' given more than once"),
        ("count=1", "unknown query parameter 'count'"),
    ],
)
async def test_enc_keys_bad_query(pair: Pair, query: str, message: str) -> None:
    before = await pair.counts()
    r = await pair.alice.get(f"{ENC}?{query}")
    assert r.status_code == 400
    assert r.json()["message"] == message
    assert await pair.counts() == before


async def test_get_with_body_and_post_with_query_refused(pair: Pair) -> None:
    before = await pair.counts()
    r = await pair.alice.request("GET", ENC, content=b'{"number": 1}')
    assert r.status_code == 400 and "GET requests take no body" in r.json()["message"]
    r = await pair.alice.post(f"{ENC}?number=2", json={})
    assert r.status_code == 400
    assert await pair.counts() == before


async def test_oversized_body_refused(pair: Pair) -> None:
    before = await pair.counts()
    r = await pair.alice.post(ENC, content=b" " * (etsi014.MAX_BODY_BYTES + 10))
    assert r.status_code == 400 and "larger than" in r.json()["message"]
    assert await pair.counts() == before


@pytest.mark.parametrize("slave", ["carol-unknown", "KME-B"])
async def test_unknown_slave_refused(pair: Pair, slave: str) -> None:
    before = await pair.counts()
    for r in (
        await pair.alice.post(f"/api/v1/keys/{slave}/enc_keys", json={}),
        await pair.alice.get(f"/api/v1/keys/{slave}/status"),
    ):
        assert r.status_code == 400
        assert "is not an SAE of this network" in r.json()["message"]
    assert await pair.counts() == before


async def test_out_of_keys_is_503_and_consumes_nothing(pair: Pair) -> None:
    before = await pair.counts()
    r = await pair.alice.post(ENC, json={"number": 128, "size": 65536})  # 1 MiB > the pool
    assert r.status_code == 503
    body = r.json()
    assert body["message"] == MSG_OUT_OF_KEYS
    assert body["details"][0]["qkd_link"]["eavesdropper_alarm"] is False
    assert r.headers["retry-after"] == "1"
    assert await pair.counts() == before


BAD_DEC_BODIES: list[tuple[Any, str]] = [
    (
        {"key_IDs": [{"key_ID": "not-a-uuid"}]},
        "key_ID must be a UUID string (8-4-4-4-12 hex digits)",
    ),
    (
        {"key_IDs": [{"key_ID": "{12345678-1234-1234-1234-123456789abc}"}]},
        "key_ID must be a UUID string (8-4-4-4-12 hex digits)",
    ),
    ({"key_IDs": [{"key_ID": 5}]}, "key_ID must be a UUID string (8-4-4-4-12 hex digits)"),
    ({"key_IDs": []}, "key_IDs must be a non-empty array"),
    ({"key_IDs": "x"}, "key_IDs must be a non-empty array"),
    ({}, "key_IDs must be a non-empty array"),
    ({"key_IDs": ["x"]}, 'each key_IDs entry must be an object {"key_ID": uuid}'),
    (
        {"key_IDs": [{"key_ID": str(uuid.UUID(int=1)), "x": 1}]},
        'each key_IDs entry must be an object {"key_ID": uuid}',
    ),
    (
        {"key_IDs": [{"key_ID": str(uuid.UUID(int=1))}] * 2},
        "key_IDs lists the same key_ID more than once",
    ),
    (
        {"key_IDs": [{"key_ID": str(uuid.UUID(int=i))} for i in range(129)]},
        "key_IDs has more than max_key_per_request (128) entries",
    ),
    ({"key_IDs": [{"key_ID": str(uuid.uuid4())}]}, etsi014.MSG_NOT_FOUND),
    ({"key_ID": str(uuid.uuid4())}, "unknown field 'key_ID' in key IDs request"),
]


@pytest.mark.parametrize(("body", "message"), BAD_DEC_BODIES)
async def test_dec_keys_bad_body(pair: Pair, body: Any, message: str) -> None:
    keys = await pair.enc(number=1)
    before = await pair.counts()
    r = await pair.bob.post(DEC, json=body)
    assert r.status_code == 400
    assert r.json()["message"] == message
    assert await pair.counts() == before
    ok = await pair.bob.post(DEC, json=ids_body([keys[0]["key_ID"]]))  # still there
    assert ok.status_code == 200 and ok.json()["keys"] == keys


async def test_dec_keys_known_plus_unknown_id_delivers_nothing(pair: Pair) -> None:
    keys = await pair.enc(number=2)
    ids = [k["key_ID"] for k in keys]
    r = await pair.bob.post(DEC, json=ids_body([*ids, str(uuid.uuid4())]))
    assert r.status_code == 400 and r.json()["message"] == etsi014.MSG_NOT_FOUND
    r = await pair.bob.post(DEC, json=ids_body(ids))
    assert r.status_code == 200 and r.json()["keys"] == keys


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "GET dec_keys needs the key_ID query parameter"),
        ("key_ID=xyz", "key_ID must be a UUID string (8-4-4-4-12 hex digits)"),
        (
            f"key_ID={uuid.UUID(int=3)}&key_ID={uuid.UUID(int=4)}",
            "query parameter 'key_ID' given more than once",
        ),
        (f"key_ID={uuid.UUID(int=3)}", etsi014.MSG_NOT_FOUND),
        ("number=1", "unknown query parameter 'number'"),
    ],
)
async def test_dec_keys_bad_query(pair: Pair, query: str, message: str) -> None:
    before = await pair.counts()
    r = await pair.bob.get(f"{DEC}?{query}")
    assert r.status_code == 400 and r.json()["message"] == message
    assert await pair.counts() == before


# -- authentication and authorisation --
async def test_no_client_certificate_is_401(pair: Pair) -> None:
    before = await pair.counts()
    async with sae_client(pair.pki.demo, pair.a.url, None) as anon:
        for method, path in (("GET", STATUS), ("POST", ENC), ("GET", ENC), ("POST", DEC)):
            r = await anon.request(method, path, json={} if method == "POST" else None)
            assert r.status_code == 401, (method, path)
            assert "client certificate" in r.json()["message"]
    assert await pair.counts() == before


async def test_certificate_from_another_ca_fails_the_handshake(pair: Pair) -> None:
    async with sae_client(pair.pki.demo, pair.a.url, pair.pki.rogue) as rogue:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            await rogue.get(STATUS)


@pytest.mark.parametrize("who", ["mallory", "bob"])
async def test_unregistered_certificate_is_401(pair: Pair, who: str) -> None:
    certs = {"mallory": pair.pki.mallory, "bob": pair.pki.demo.bob}
    before = await pair.counts()
    async with sae_client(pair.pki.demo, pair.a.url, certs[who]) as c:
        for r in (await c.get(STATUS), await c.post(ENC, json={}), await c.get(ENC)):
            assert r.status_code == 401
            assert "is not registered at KME KME-A" in r.json()["message"]
    assert await pair.counts() == before


async def test_other_pair_cannot_fetch_keys(pair: Pair) -> None:
    keys = await pair.enc(number=2)
    ids = [k["key_ID"] for k in keys]
    before = await pair.counts()
    # dave (at B, not the slave named at issue) asks for alice->bob keys: the same answer as
    # for keys that do not exist (no oracle)
    r = await pair.dave.post(DEC, json=ids_body(ids))
    assert r.status_code == 400 and r.json()["message"] == etsi014.MSG_NOT_FOUND
    r = await pair.dave.get(DEC, params={"key_ID": ids[0]})
    assert r.status_code == 400
    # bob names the wrong master (carol) for alice's keys
    r = await pair.bob.post("/api/v1/keys/carol/dec_keys", json=ids_body(ids))
    assert r.status_code == 400
    # alice (a master at A) cannot collect her own keys as a slave: A does not hold them
    r = await pair.alice.post("/api/v1/keys/alice/dec_keys", json=ids_body(ids))
    assert r.status_code == 400
    assert await pair.counts() == before
    r = await pair.bob.post(DEC, json=ids_body(ids))
    assert r.status_code == 200 and r.json()["keys"] == keys


async def test_carol_to_bob_keys_are_separate_from_alice_to_bob(pair: Pair) -> None:
    r = await pair.carol.post(ENC, json={"number": 1})
    assert r.status_code == 200
    ck = r.json()["keys"]
    r = await pair.bob.post(DEC, json=ids_body([ck[0]["key_ID"]]))  # master alice in path
    assert r.status_code == 400
    r = await pair.bob.post("/api/v1/keys/carol/dec_keys", json=ids_body([ck[0]["key_ID"]]))
    assert r.status_code == 200 and r.json()["keys"] == ck


async def test_node_endpoints_are_not_on_the_sae_api(pair: Pair) -> None:
    before = await pair.counts()
    for path in ("/kmapi/v1/ext_keys/void", "/kmapi/v1/ext_keys", "/kms/v1/link/sync"):
        r = await pair.bob.post(path, json={})
        assert r.status_code in (404, 405)
    assert await pair.counts() == before


async def test_node_client_pins_the_peer_node_certificate(pair: Pair) -> None:
    net = pair.pki.demo.network
    creds = net.node("KME-A")
    wrong = NodeClient(
        "KME-X",
        pair.b.node.config.node_urls["KME-B"],
        Tls(creds.node_ca, creds.node.cert, creds.node.key),
        None,
    )
    try:
        with pytest.raises(NodeUnreachable, match="KME-X"):
            await wrong.post("/kms/v1/lsa", {"lsas": []})
    finally:
        await wrong.aclose()


# -- OpenAPI --
async def test_openapi_matches_routes_and_status_codes(pair: Pair) -> None:
    r = await pair.alice.get(OPENAPI_PATH)
    assert r.status_code == 200
    doc = r.json()
    documented = {
        (
            method.upper(),
            path.replace("{slave_SAE_ID}", "{sae}").replace("{master_SAE_ID}", "{sae}"),
        )
        for path, ops in doc["paths"].items()
        for method in ops
    }
    served = {
        (route.method, route.resource.canonical)
        for route in pair.a.node._sae_app().router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/api/v1/")
    }
    assert documented == served
    for path, ops in doc["paths"].items():
        for op in ops.values():
            expected = [c for c in STATUS_CODES if path != OPENAPI_PATH or c != "400"]
            assert sorted(op["responses"]) == sorted(expected)
    schemas = doc["components"]["schemas"]
    st = (await pair.alice.get(STATUS)).json()
    assert set(schemas["Status"]["required"]) <= set(st)
    assert set(st) <= set(schemas["Status"]["properties"])
    assert set(schemas["KeyRequest"]["properties"]) == etsi014._KEY_REQUEST_FIELDS


# -- concurrency --
async def test_50_concurrent_clients_drain_the_pool_without_duplicates(
    pki: KmePki, tmp_path: Path
) -> None:
    source = DeterministicSource(seed=11, block_bytes=8192, limit=4)  # 32 kB in all, then quiet
    async with running_pair(pki.demo, tmp_path, source=source, fill=False) as (a, b):
        await wait_for(
            lambda: (
                a.store.link_keys.stock_bytes("A-B", "KME-A")
                + a.store.link_keys.stock_bytes("A-B", "KME-B")
                == 32768
            ),
            what="all keys shared",
        )
        d = pki.demo
        got: list[dict[str, str]] = []

        async def drain() -> None:
            async with sae_client(d, a.url, d.alice) as c:
                while True:
                    r = await c.post(ENC, json={"number": 3})
                    if r.status_code == 503:
                        assert r.json()["message"].startswith(MSG_OUT_OF_KEYS)
                        assert r.json()["details"][0]["reason"] == "out_of_keys"
                        one = await c.get(ENC)  # single keys until truly empty
                        if one.status_code == 503:
                            return
                        assert one.status_code == 200
                        got.extend(one.json()["keys"])
                        continue
                    assert r.status_code == 200, r.text
                    got.extend(r.json()["keys"])

        results = await asyncio.gather(*(drain() for _ in range(50)), return_exceptions=True)
        assert [e for e in results if e is not None] == []
        assert (
            a.store.link_keys.stock_bytes("A-B", "KME-A") < 64
        )  # less than one key and its MAC key
        ids = [k["key_ID"] for k in got]
        assert len(ids) == len(set(ids)) and len(got) > 100
        materials = [k["key"] for k in got]
        assert len(materials) == len(set(materials))
        async with sae_client(d, b.url, d.bob) as bob:
            for i in range(0, len(got), 128):
                chunk = got[i : i + 128]
                r = await bob.post(DEC, json=ids_body([k["key_ID"] for k in chunk]))
                assert r.status_code == 200 and r.json()["keys"] == chunk


async def test_concurrent_dec_keys_for_one_id_serves_it_once(pair: Pair) -> None:
    (key,) = await pair.enc(number=1)
    d = pair.pki.demo
    clients = [sae_client(d, pair.b.url, d.bob) for _ in range(10)]
    try:
        rs = await asyncio.gather(*(c.get(DEC, params={"key_ID": key["key_ID"]}) for c in clients))
    finally:
        for c in clients:
            await c.aclose()
    assert sorted(r.status_code for r in rs) == [200] + [400] * 9


# -- the link --
async def test_peer_down_means_503_and_no_key_delivered(pki: KmePki, tmp_path: Path) -> None:
    """A relay (one hop direct keys off: they need no message, test_direct_keys.py)."""
    async with running_pair(pki.demo, tmp_path, direct_one_hop=False) as (a, b):
        await b.node.stop()
        before = a.stored_key_count()
        d = pki.demo
        async with sae_client(d, a.url, d.alice) as alice:
            r = await alice.post(ENC, json={"number": 2})
        assert r.status_code == 503
        assert a.stored_key_count() <= before  # spent (or not), never reused
        # B comes back: the void reaches it and the keys are not collectable
        from keyserver.kms.node import KmsNode

        b2 = KmsNode(b.node.config, {"A-B": b.stats.end(False)})
        await b2.start()
        b.node = b2
        await wait_for(lambda: not a.node.store.relays.voids_out(), what="voids delivered")
        assert b2.store.held.count() == 0
        await wait_for(lambda: a.node.routes("KME-B", 64).ok, what="link back up")
        async with sae_client(d, a.url, d.alice) as alice, sae_client(d, b2.sae_url, d.bob) as bob:
            keys = (await alice.post(ENC, json={"number": 2})).json()["keys"]
            r = await bob.post(DEC, json=ids_body([k["key_ID"] for k in keys]))
            assert r.status_code == 200 and r.json()["keys"] == keys


async def test_aborted_blocks_are_counted_and_raise_the_alarm(pki: KmePki, tmp_path: Path) -> None:
    source = DeterministicSource(seed=5, block_bytes=4096, abort_every=1)  # every block aborted
    async with running_pair(pki.demo, tmp_path, source=source, fill=False) as (a, _b):
        await wait_for(lambda: a.stats.blocks_aborted >= 3, what="aborted blocks")
        assert a.stored_key_count() == 0
        d = pki.demo
        async with sae_client(d, a.url, d.alice) as alice:
            st = (await alice.get(STATUS)).json()
            link = st["status_extension"]["qkd_link"]
            assert link["eavesdropper_alarm"] is True and link["blocks_aborted"] >= 3
            assert link["blocks_ok"] == 0 and st["stored_key_count"] == 0
            r = await alice.post(ENC, json={})
            assert r.status_code == 503
            assert r.json()["details"][0]["qkd_link"]["eavesdropper_alarm"] is True
            assert "eavesdropper" in r.json()["message"]


def test_error_bodies_are_etsi_error_objects() -> None:
    e = etsi014.EtsiError(400, "m", [{"a": 1}])
    assert json.loads(json.dumps(e.body())) == {"message": "m", "details": [{"a": 1}]}
    assert etsi014.EtsiError(401, "x").body() == {"message": "x"}


async def test_logs_are_json_and_never_carry_key_material(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    from keyserver.jsonlog import JsonFormatter

    caplog.set_level("DEBUG", logger="keyserver")
    keys = await pair.enc(number=2, size=1024)
    r = await pair.bob.post(DEC, json=ids_body([k["key_ID"] for k in keys]))
    assert r.status_code == 200
    await pair.dave.post(DEC, json=ids_body([k["key_ID"] for k in keys]))  # refused: logged
    lines = [JsonFormatter().format(rec) for rec in caplog.records]
    events = [json.loads(line)["event"] for line in lines]
    assert "direct_keys_issued" in events and "request_refused" in events
    text = "\n".join(lines)
    assert keys[0]["key_ID"] in text  # IDs are logged ...
    for k in keys:  # ... key bytes never, in any encoding
        raw = base64.b64decode(k["key"])
        assert k["key"] not in text and raw.hex() not in text and raw[:16].hex() not in text


async def test_one_pair_cannot_drain_the_pool_while_another_draws(pair: Pair) -> None:
    sa = (await pair.alice.get(STATUS)).json()["stored_key_count"]
    assert (await pair.carol.post(ENC, json={"number": 1})).status_code == 200
    # alice alone could take it all; with carol registered at the node, half of the link's
    # stock is hers: a request for three quarters of it is refused, naming the quota and share
    big = {"number": 128, "size": 256 * (sa // 128 * 3 // 4)}
    r = await pair.alice.post(ENC, json=big)
    assert r.status_code == 503
    (detail,) = r.json()["details"]
    assert detail["reason"] == "out_of_keys" and detail["quota"] == "sae_stock_share"
    assert detail["sae"] == "alice" and detail["link"] == "A-B" and detail["saes"] == 2
    assert detail["needed_bits"] > detail["balance_bits"]
    assert (await pair.alice.post(ENC, json={"number": 4})).status_code == 200
