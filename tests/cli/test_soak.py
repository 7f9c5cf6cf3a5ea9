"""The soak's short form (bench/soak.py): a fleet of two workers on a private PostgreSQL,
LoRA runs streaming in amid kills, partitions (where namespaces can be made) and one database
restart; nothing lost, nothing done twice."""

from __future__ import annotations

import pytest

from bench.soak import Plan, soak
from tests.cli.helpers import if_the_machine_allows


@pytest.mark.slow
@pytest.mark.timeout(150)  # its own drain deadline is 90 s; alone it takes about 30
def test_a_short_soak_loses_nothing_and_does_nothing_twice() -> None:
    with if_the_machine_allows():
        figures = soak(Plan(minutes=0.3, workers=2, every=1.5, drain=90.0, job="2s"))
    assert figures["runs unfinished"] == 0
    assert figures["runs succeeded"] == figures["runs submitted"] >= 3  # fewer when loaded
    assert figures["jobs per run"] == figures["models per succeeded run"] == 1
    assert figures["files per dataset"] == 1
    assert figures["db restarts"] == 1 and figures["kills"] + figures["cuts"] >= 1
