"""Short authentication string: a few words both users read aloud to detect a man in the middle."""

from __future__ import annotations

from functools import cache

SAS_WORDS = 4
SAS_BYTES = 6  # 4 words x 11 bits = 44 bits used


@cache
def _wordlist() -> tuple[str, ...]:
    from mnemonic import Mnemonic  # BIP-39 English list: 2048 short, distinct words

    words = tuple(Mnemonic("english").wordlist)
    if len(words) != 2048:
        raise RuntimeError("BIP-39 word list must have 2048 words")
    return words


def sas_words(sas_bytes: bytes, count: int = SAS_WORDS) -> str:
    """Map ``sas_bytes`` (at least 11*count bits) to ``count`` words."""
    if len(sas_bytes) * 8 < 11 * count:
        raise ValueError("not enough SAS bits")
    value = int.from_bytes(sas_bytes, "big")
    total = len(sas_bytes) * 8
    words = _wordlist()
    return " ".join(words[(value >> (total - 11 * (i + 1))) & 0x7FF] for i in range(count))
