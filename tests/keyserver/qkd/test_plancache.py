"""A link's plan is computed once per distinct set of parameters (keyserver/qkd/plancache.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

from keyserver.qkd.finitekey import optimised
from keyserver.qkd.physics import LinkParams
from keyserver.qkd.plancache import cache_key, planned, planned_in_background

PARAMS = LinkParams(distance_km=12.5, max_block_seconds=20)


def test_the_cache_gives_what_the_optimiser_gives_and_is_read_back(tmp_path: Path) -> None:
    computed = planned(PARAMS, tmp_path)
    assert computed == optimised(PARAMS)
    [file] = tmp_path.glob("*.json")
    assert file.stem == cache_key(PARAMS)
    assert file.stat().st_mode & 0o777 == 0o600
    # what a later module gets is the file (a planned field changed there comes back)
    obj = json.loads(file.read_text())
    obj["mu"] = round(obj["mu"] - 0.01, 4)
    file.write_text(json.dumps(obj))
    assert planned(PARAMS, tmp_path) == dataclasses.replace(computed, mu=obj["mu"])
    # other parameters: another file
    other = dataclasses.replace(PARAMS, distance_km=13.0)
    assert cache_key(other) != cache_key(PARAMS)


def test_a_cached_plan_for_other_inputs_or_garbage_is_computed_again(tmp_path: Path) -> None:
    want = optimised(PARAMS)
    path = tmp_path / f"{cache_key(PARAMS)}.json"
    wrong = dataclasses.asdict(want) | {"distance_km": 80.0}  # not this link's input
    for text in (json.dumps(wrong), "{not json", json.dumps({"mu": 0.5}), "[]"):
        path.write_text(text)
        assert planned(PARAMS, tmp_path) == want
        assert json.loads(path.read_text()) == dataclasses.asdict(want)  # rewritten


def test_no_cache_and_the_background_thread_give_the_same_plan(tmp_path: Path) -> None:
    want = optimised(PARAMS)
    assert planned(PARAMS, None) == want
    assert asyncio.run(planned_in_background(PARAMS, tmp_path / "plans")) == want
    assert (tmp_path / "plans" / f"{cache_key(PARAMS)}.json").exists()
