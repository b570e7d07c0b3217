"""Each SAE's share of a link's stock: balances always add up to the stock, a draining SAE
cannot take an idle SAE's reserve, one SAE alone gets the whole rate."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from keyserver.kms.stockshare import StockShares

CAP = 8192


def test_a_draining_sae_leaves_the_other_its_share_and_gets_the_rest_of_the_rate() -> None:
    shares = StockShares(["dave", "alice"], CAP)
    stock = CAP
    taken = 0
    while (refusal := shares.draw("dave", [("L", 32, stock)])) is None:
        stock -= 32
        taken += 32
    assert taken == CAP // 2  # its share of a full stock, not the whole stock
    assert refusal.share_bytes == CAP // 2 and refusal.balance_bytes == 0
    details = refusal.details()
    assert details["quota"] == "sae_stock_share" and details["share_bits"] == 8 * CAP // 2
    assert "share of link L" in refusal.text()
    # alice, idle so far, still has her whole share; 1-key requests go through
    for _ in range(10):
        assert shares.draw("alice", [("L", 32, stock)]) is None
        stock -= 32
    # the link delivers 1000 bytes: alice is below her share, so half of it refills her reserve
    stock += 1000
    b = shares.balances("L", stock)
    assert b["alice"] == CAP // 2 - 320 + 320 and b["dave"] == 1000 - 320
    # once alice is full again, all new key goes to dave
    stock += 500
    assert shares.balances("L", stock)["dave"] == 1180


def test_one_sae_alone_has_the_whole_stock() -> None:
    shares = StockShares(["alice"], CAP)
    assert shares.draw("alice", [("L", CAP, CAP)]) is None
    assert shares.draw("alice", [("L", 1, 0)]) is not None


def test_a_refused_multipath_draw_charges_nothing_and_a_refund_restores() -> None:
    shares = StockShares(["a", "b"], CAP)
    assert shares.draw("a", [("L1", 100, CAP), ("L2", CAP, CAP)]) is not None
    assert shares.balances("L1", CAP)["a"] == CAP // 2
    assert shares.draw("a", [("L1", 100, CAP), ("L2", 100, CAP)]) is None
    shares.refund("a", [("L1", 100), ("L2", 100)])
    assert shares.balances("L1", CAP)["a"] == CAP // 2


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["draw", "arrive", "transit"]), st.integers(0, 2), st.integers(1, 3000)
        ),
        max_size=60,
    )
)
def test_balances_track_the_stock_and_no_draw_exceeds_a_balance(
    ops: list[tuple[str, int, int]],
) -> None:
    saes = ["x", "y", "z"]
    shares = StockShares(saes, CAP)
    stock = 0
    for op, who, amount in ops:
        if op == "arrive":
            stock = min(CAP, stock + amount)
        elif op == "transit":  # key taken by relays crossing this node
            stock = max(0, stock - amount)
        else:
            before = shares.balances("L", stock)
            if shares.draw(saes[who], [("L", amount, stock)]) is None:
                assert amount <= before[saes[who]]
                stock -= amount
            else:
                assert amount > before[saes[who]]
        b = shares.balances("L", stock)
        assert sum(b.values()) == stock and min(b.values()) >= 0
