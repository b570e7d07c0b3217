"""The key route report: parsed strictly from a KME's Status extension, deltas over a call."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from qphone.endpoint.keyroute import key_route, relay_totals, route_report


def ext(relays: int, mean: float | None, bits: dict[str, int], failures: int = 0) -> dict[str, Any]:
    return {
        "route": {
            "nodes": ["beijing", "tianjin", "jinan"],
            "links": ["beijing-tianjin", "tianjin-jinan"],
            "hops": 2,
            "legs": 1,
            "distance_km": 420.5,
        },
        "relay": {
            "relays": relays,
            "failures": failures,
            "mean_relay_ms": mean,
            "link_bits": bits,
        },
    }


def test_a_call_reports_its_own_relays_and_link_key() -> None:
    before = ext(3, 100.0, {"beijing-tianjin": 3000, "tianjin-jinan": 3000})
    after = ext(5, 160.0, {"beijing-tianjin": 5000, "tianjin-jinan": 5000}, failures=1)
    r = route_report(before, after)
    assert r is not None and r.route is not None
    assert r.route.nodes == ("beijing", "tianjin", "jinan") and r.route.hops == 2
    assert r.key_requests == 2 and r.failed_requests == 1
    assert r.relay_ms_mean == 250.0  # (5 x 160 - 3 x 100) / 2
    assert r.link_bits == {"beijing-tianjin": 2000, "tianjin-jinan": 2000}
    j = r.to_json()
    assert j["hops"] == 2 and j["distance_km"] == 420.5 and j["key_requests"] == 2
    assert "beijing -> tianjin -> jinan (2 hops, 420.5 km)" in r.describe()


def test_first_relay_of_a_pair_has_no_mean_before() -> None:
    r = route_report(ext(0, None, {}), ext(1, 80.0, {"beijing-tianjin": 1280}))
    assert r is not None and r.relay_ms_mean == 80.0 and r.link_bits == {"beijing-tianjin": 1280}


def test_a_kme_without_the_extension_gives_no_route() -> None:
    assert route_report(None, None) is None
    assert route_report({}, {"route": "x"}) is None


def test_counters_that_went_backwards_give_the_route_only() -> None:
    """A restarted node starts its counters again: no negative cost is reported."""
    r = route_report(ext(9, 10.0, {"beijing-tianjin": 9000}), ext(1, 10.0, {}))
    assert r is not None and r.route is not None
    assert r.key_requests == 0 and r.link_bits == {} and r.relay_ms_mean is None


def test_malformed_routes_are_refused() -> None:
    good = ext(0, None, {})["route"]
    assert key_route({"route": good}) is not None
    for bad in (
        {**good, "nodes": ["a"]},  # nodes and links disagree
        {**good, "links": "beijing-tianjin"},
        {**good, "legs": -1},
        {**good, "legs": True},
        {**good, "nodes": ["a\n", "b", "c"]},
        {**good, "nodes": ["x" * 129, "b", "c"]},
    ):
        assert key_route({"route": bad}) is None
    assert relay_totals({"relay": {"relays": 1, "failures": 0, "mean_relay_ms": "1"}}) is None
    assert relay_totals({"relay": {"relays": 1, "failures": 0, "link_bits": {"a": -1}}}) is None


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=30,
    )
)
def test_any_extension_parses_or_is_refused_without_error(value: Any) -> None:
    for extension in ({"route": value, "relay": value}, {"route": value}, {"relay": value}):
        route_report(extension, extension)


def _ring_ext(relays_short: int, relays_long: int, bits: dict[str, int]) -> dict[str, Any]:
    """A node whose next relay would take the short way, while its relays went both ways."""
    short = {"nodes": ["shushan", "jingkai", "binhu"], "links": ["s-j", "j-b"], "legs": 1}
    long = {
        "nodes": ["shushan", "a", "b", "c", "d", "binhu"],
        "links": ["s-a", "a-b", "b-c", "c-d", "d-b"],
        "legs": 1,
        "distance_km": 80.0,
    }
    used = [{**short, "distance_km": 33.0, "relays": relays_short}]
    used.append({**long, "relays": relays_long})
    return {
        "route": {**short, "distance_km": 33.0},
        "relay": {
            "relays": relays_short + relays_long,
            "failures": 0,
            "mean_relay_ms": 50.0,
            "link_bits": bits,
            "routes_used": used,
        },
    }


def test_the_route_reported_is_the_one_the_relays_took() -> None:
    """The node would now take the 2-hop way, but the call's 5 relays went round the ring."""
    before = _ring_ext(4, 0, {"s-j": 4000, "j-b": 4000})
    long_bits = {k: 5 * 1280 for k in ("s-a", "a-b", "b-c", "c-d", "d-b")}
    after = _ring_ext(4, 5, {"s-j": 4000, "j-b": 4000, **long_bits})
    r = route_report(before, after)
    assert r is not None and r.route is not None
    assert r.route.nodes == ("shushan", "a", "b", "c", "d", "binhu") and r.route.hops == 5
    assert r.key_requests == 5 and set(r.link_bits) == set(long_bits)
    assert "(5 hops, 80 km)" in r.describe() and "2 hops" not in r.describe()
    assert r.to_json()["routes_used"] == [
        {"nodes": list(r.route.nodes), "hops": 5, "legs": 1, "relays": 5}
    ]


def test_relays_on_two_routes_are_both_named() -> None:
    r = route_report(_ring_ext(1, 0, {}), _ring_ext(3, 6, {}))
    assert r is not None and [n for _, n in r.routes_used] == [6, 2]
    assert "for 6 of them, 1 other route(s) for the rest" in r.describe()
    assert len(r.describe_routes()) == 2


def test_a_malformed_routes_used_gives_no_relay_figures() -> None:
    bad = _ring_ext(1, 1, {})
    bad["relay"]["routes_used"][0]["relays"] = -1
    assert relay_totals(bad) is None
