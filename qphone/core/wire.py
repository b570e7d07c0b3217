"""Bounded, strict binary encoding helpers for handshake and control messages.

All integers are big-endian. Variable-length fields carry an explicit length prefix and a maximum;
a parser that finishes with bytes left over rejects the message.
"""

from __future__ import annotations

import uuid

from qphone.core.errors import MalformedMessage


class Writer:
    """Appends fields to a message."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        self._parts.append(value.to_bytes(1, "big"))
        return self

    def u16(self, value: int) -> Writer:
        self._parts.append(value.to_bytes(2, "big"))
        return self

    def u32(self, value: int) -> Writer:
        self._parts.append(value.to_bytes(4, "big"))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(value.to_bytes(8, "big"))
        return self

    def fixed(self, data: bytes, size: int) -> Writer:
        if len(data) != size:
            raise ValueError(f"field must be {size} bytes, got {len(data)}")
        self._parts.append(bytes(data))
        return self

    def var16(self, data: bytes) -> Writer:
        """A field of up to 65535 bytes, with a 2-byte length prefix."""
        self.u16(len(data))
        self._parts.append(bytes(data))
        return self

    def uuids(self, ids: list[uuid.UUID] | tuple[uuid.UUID, ...]) -> Writer:
        self.u8(len(ids))
        for key_id in ids:
            self._parts.append(key_id.bytes)
        return self

    def finish(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads fields from a message, refusing anything out of bounds."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = memoryview(bytes(data))
        self._pos = 0
        self._what = what

    def _take(self, size: int, field: str) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise MalformedMessage(
                f"{self._what}: truncated in field {field!r} "
                f"(need {size} bytes at offset {self._pos}, have {len(self._data) - self._pos})"
            )
        out = bytes(self._data[self._pos : end])
        self._pos = end
        return out

    def u8(self, field: str) -> int:
        return self._take(1, field)[0]

    def u16(self, field: str) -> int:
        return int.from_bytes(self._take(2, field), "big")

    def u32(self, field: str) -> int:
        return int.from_bytes(self._take(4, field), "big")

    def u64(self, field: str) -> int:
        return int.from_bytes(self._take(8, field), "big")

    def fixed(self, size: int, field: str) -> bytes:
        return self._take(size, field)

    def var16(self, field: str, max_size: int) -> bytes:
        size = self.u16(field + " length")
        if size > max_size:
            raise MalformedMessage(f"{self._what}: field {field!r} is {size} bytes, max {max_size}")
        return self._take(size, field)

    def uuids(self, field: str, max_count: int) -> tuple[uuid.UUID, ...]:
        count = self.u8(field + " count")
        if count > max_count:
            raise MalformedMessage(f"{self._what}: {count} entries in {field!r}, max {max_count}")
        return tuple(uuid.UUID(bytes=self._take(16, field)) for _ in range(count))

    def end(self) -> None:
        left = len(self._data) - self._pos
        if left:
            raise MalformedMessage(f"{self._what}: {left} unexpected trailing bytes")
