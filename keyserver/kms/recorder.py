"""Testing aid: record node-to-node messages (and optionally what a node sees in the clear).

Enabled only by ``[node] testing = true`` with ``record_dir``; used by the tests that check no
key bit crosses a classical channel in the clear and that one compromised node's view is
independent of a multipath key. Each line: ``{"t", "dir", "peer", "path", "body"}`` or, for the
view, ``{"t", "view": {...}}``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class Recorder:
    def __init__(self, directory: Path, node_id: str, view: bool) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._f = (directory / f"{node_id}.jsonl").open("a", encoding="utf-8", buffering=1)
        self.view_enabled = view

    def message(self, direction: str, peer: str, path: str, body: Any) -> None:
        self._f.write(
            json.dumps(
                {"t": time.time(), "dir": direction, "peer": peer, "path": path, "body": body}
            )
            + "\n"
        )

    def view(self, **fields: Any) -> None:
        if self.view_enabled:
            self._f.write(json.dumps({"t": time.time(), "view": fields}) + "\n")

    def close(self) -> None:
        self._f.close()
