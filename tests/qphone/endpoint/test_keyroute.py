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
