"""Logs never carry key bytes: a bytes field is written as its length only."""

from __future__ import annotations

import io
import json
import logging
import os

from keyserver.jsonlog import log, setup_logging


def test_bytes_fields_are_written_as_their_length_only() -> None:
    out = io.StringIO()
    root = logging.getLogger("keyserver")
    saved = root.handlers[:], root.level, root.propagate
    setup_logging(logging.DEBUG, out)
    key = os.urandom(32)
    try:
        log(
            logging.getLogger("keyserver.test"),
            logging.INFO,
            "relay",
            key_ID="k1",
            material=key,
            pad=bytearray(key),
            view=memoryview(key),
            nested={"x": key},
            n=3,
        )
    finally:
        root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]
    line = json.loads(out.getvalue())
    assert line["event"] == "relay" and line["key_ID"] == "k1" and line["n"] == 3
    assert line["material"] == line["pad"] == line["view"] == "<32 bytes>"
    assert line["nested"] == {"x": "<32 bytes>"}
    text = out.getvalue()
    assert key.hex() not in text and repr(key) not in text and str(key[:8])[2:-1] not in text
