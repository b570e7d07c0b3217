"""Structured logs: one JSON object per line on stderr. Callers pass fields, never key material.

As a second line of defence, a field holding bytes (``bytes``, ``bytearray``, ``memoryview``: the
types key material has here) is written as ``"<N bytes>"``, never as its content, so a key passed
to a log call by mistake does not reach the log file (docs/keyserver.md, "At rest")."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

_FIELDS = "qkd_fields"


def _field(value: Any) -> Any:
    """How a field json cannot encode is written: bytes by their length only, the rest as str."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    return str(value)


class JsonFormatter(logging.Formatter):
    """Formats a record as ``{"ts", "level", "logger", "event", ...fields}``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, _FIELDS, None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=_field, separators=(",", ":"))


def setup_logging(level: int | str = logging.INFO, stream: TextIO | None = None) -> None:
    """Route the `keyserver` loggers to `stream` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("keyserver")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def log(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log `event` with structured `fields` (IDs, counts, sizes: never key bytes)."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS: fields})
