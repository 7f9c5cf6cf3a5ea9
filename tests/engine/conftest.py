"""Engine fixtures: a store on the real clock, for tests that read event-log timestamps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.store.base import StateStore
from orchestrator.store.opening import open_store
from tests.engine.harness import Harness


@pytest.fixture
async def live_store(tmp_path: Path) -> AsyncIterator[StateStore]:
    async with open_store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        yield store


@pytest.fixture
def live_harness(tmp_path: Path, live_store: StateStore) -> Harness:
    """A harness on the real clock whose slot waiters re-ask the store every 50 ms."""
    return Harness(tmp_path, live_store, slot_poll_interval=0.05)
