"""Run ids: readable, time-sortable, and unique in practice."""

from __future__ import annotations

import re

from orchestrator.ids import new_run_id


def test_run_id_shape_and_time() -> None:
    run_id = new_run_id(now=1_800_000_000)
    assert re.fullmatch(r"r-270115-080000-[0-9a-hjkmnp-tv-z]{6}", run_id), run_id


def test_run_ids_do_not_repeat() -> None:
    ids = {new_run_id(now=0) for _ in range(2000)}
    assert len(ids) >= 1990  # 30 random bits: a collision or two is possible, not more
