"""Each local SAE's share of the key a node holds on a link (sans-I/O).

Without shares, one registered SAE could take the whole stock of a link ahead of time and leave
every other SAE at that node a 503 (ETSI GS QKD 014 lets a master ask as often as it likes). A
node therefore splits the stock it holds on each link (its own stream: the key it spends as the
initiator of relays) into balances, one per SAE registered at the node:

* key arriving on the link (the stock grew since the last look) fills the balances below their
  *share* (the stream's stock cap / the number of SAEs) first, equally, and only then the others:
  an SAE that draws nothing keeps up to its share in reserve, and all the rest of the link's rate
  goes to the SAEs that draw;
* key leaving the stock by other ways (relays of other nodes crossing this one, resynchronisation)
  is taken from the largest balances first;
* a relay started for a master SAE is charged to that SAE's balance on each first link of its
  route; if the balance is short, the request is refused (:class:`ShareRefusal`) and nothing is
  charged, however much the others hold.

So no SAE takes more than its share of the stock, an idle SAE's reserve is there when it starts a
call, and one SAE alone still gets the whole rate of the link. Balances live in memory: after a
restart they are rebuilt from the stock (equal shares).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ShareRefusal:
    """A request larger than the master SAE's balance on a link."""

    link: str
    sae: str
    need_bytes: int
    balance_bytes: int
    share_bytes: int
    saes: int

    def details(self) -> dict[str, object]:
        """The ETSI 014 error details (with the node's ``reason``)."""
        return {
            "quota": "sae_stock_share",
            "link": self.link,
            "sae": self.sae,
            "needed_bits": 8 * self.need_bytes,
            "balance_bits": 8 * self.balance_bytes,
            "share_bits": 8 * self.share_bytes,
            "saes": self.saes,
        }

    def text(self) -> str:
        return (
            f"SAE {self.sae} has {8 * self.balance_bytes} bits left of its share of link "
            f"{self.link} ({8 * self.share_bytes} bits, 1/{self.saes} of the stock cap) and this "
            f"request needs {8 * self.need_bytes}; its share refills at the link's rate"
        )


def _fill(balances: dict[str, int], amount: int, cap: int) -> None:
    """Add ``amount`` to the balances below ``cap`` first, equally (water-filling), the rest to
    all equally."""
    while amount > 0:
        low = [s for s, b in balances.items() if b < cap]
        if not low:
            break
        each = max(1, amount // len(low))
        for s in low:
            give = min(each, cap - balances[s], amount)
            balances[s] += give
            amount -= give
            if amount == 0:
                return
    names = list(balances)
    for i, s in enumerate(names):
        balances[s] += amount // len(names) + (1 if i < amount % len(names) else 0)


def _drain(balances: dict[str, int], amount: int) -> None:
    """Take ``amount`` from the largest balances first."""
    while amount > 0:
        top = max(balances.values())
        if top == 0:
            return
        rich = [s for s, b in balances.items() if b == top]
        below = max([b for b in balances.values() if b < top], default=0)
        step = min(top - below, -(-amount // len(rich)))
        for s in rich:
            take = min(step, amount, balances[s])
            balances[s] -= take
            amount -= take
            if amount == 0:
                return


class StockShares:
    """The balances of ``saes`` on every link whose stream holds at most ``cap_bytes``."""

    def __init__(self, saes: Sequence[str], cap_bytes: int) -> None:
        if not saes:
            raise ValueError("at least one SAE")
        self.saes = tuple(dict.fromkeys(saes))
        self.cap_bytes = cap_bytes
        self._links: dict[str, dict[str, int]] = {}

    @property
    def share_bytes(self) -> int:
        return self.cap_bytes // len(self.saes)

    def balances(self, link: str, stock_bytes: int) -> dict[str, int]:
        """Each SAE's balance on ``link`` now that the stock holds ``stock_bytes``."""
        b = self._links.setdefault(link, dict.fromkeys(self.saes, 0))
        held = sum(b.values())
        if stock_bytes > held:
            _fill(b, stock_bytes - held, self.share_bytes)
        elif stock_bytes < held:
            _drain(b, held - stock_bytes)
        return dict(b)

    def draw(self, sae: str, needs: Sequence[tuple[str, int, int]]) -> ShareRefusal | None:
        """Charge ``sae`` for a relay: ``(link, need_bytes, stock_bytes)`` per first link. All or
        nothing: a refusal for the first link where its balance is short charges nothing."""
        if sae not in self.saes:
            raise KeyError(sae)
        for link, need, stock in needs:
            have = self.balances(link, stock)[sae]
            if need > have:
                return ShareRefusal(link, sae, need, have, self.share_bytes, len(self.saes))
        for link, need, _ in needs:
            self._links[link][sae] -= need
        return None

    def refund(self, sae: str, needs: Sequence[tuple[str, int]]) -> None:
        """Give back what :meth:`draw` charged for a relay that spent no key after all."""
        for link, need in needs:
            self._links[link][sae] += need
