"""Roles and states are enums whose values are the words the wire, the logs and the status carry."""

from __future__ import annotations

import io
import json
import logging

import pytest

from keyserver.jsonlog import JsonFormatter, log
from keyserver.qkd import messages as m
from keyserver.qkd.classicalchannel import AuthPad, MemoryAuthStore
from keyserver.qkd.role import ModuleState, Role


def test_status_json_reads_as_the_plain_words() -> None:
    out = json.dumps({"role": Role.RECEIVER, "state": ModuleState.ABORTED})
    assert out == '{"role": "receiver", "state": "aborted"}'
    assert [r.value for r in Role] == ["transmitter", "receiver"]
    assert [s.value for s in ModuleState] == ["connecting", "running", "aborted", "stopped"]


def test_hello_is_byte_identical_and_its_role_compares_with_the_enum() -> None:
    nonce = bytes(16)
    wire = m.encode(m.Hello("l", Role.TRANSMITTER, nonce, 3, 4, "{}"))
    assert wire == m.encode(m.Hello("l", "transmitter", nonce, 3, 4, "{}"))
    hello = m.decode(wire)
    assert isinstance(hello, m.Hello)
    assert hello.role == Role.TRANSMITTER and hello.role != Role.RECEIVER


def test_a_log_line_carries_the_role_as_its_word() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("keyserver.test_role")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log(logger, logging.INFO, "session_up", role=Role.RECEIVER, state=ModuleState.RUNNING)
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert (line["role"], line["state"]) == ("receiver", "running")
    assert '"role":"receiver"' in stream.getvalue()


def test_the_pad_takes_a_role_by_its_word_and_refuses_another() -> None:
    pad = AuthPad("receiver", [], 0, MemoryAuthStore())  # type: ignore[arg-type]
    assert pad.role is Role.RECEIVER
    with pytest.raises(ValueError, match="role must be transmitter or receiver"):
        AuthPad("sender", [], 0, MemoryAuthStore())  # type: ignore[arg-type]
