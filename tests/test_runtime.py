"""The composition root: what `open_runtime` builds, and what it leaves unloaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.runtime import open_runtime
from orchestrator.settings import load_settings
from orchestrator.steps.builtin import load_pipeline
from orchestrator.store.records import RunStatus
from tests.conftest import write


async def test_every_engine_setting_reaches_the_engine(tmp_path: Path) -> None:
    settings = load_settings(state_url=f"sqlite:///{tmp_path / 'state.db'}",
                             slot_poll_interval="50ms", cancel_poll_interval="2s",
                             lease_ttl="45s", max_recoveries=5, max_parallel_steps=3,
                             max_yaml_depth=20)
    async with open_runtime(settings) as rt:
        config = rt.orchestrator.config
        assert (config.slot_poll_interval, config.cancel_poll_interval, config.lease_ttl,
                config.max_recoveries, config.max_parallel_steps) == (0.05, 2.0, 45.0, 5, 3)
        assert config.pipeline_limits.max_depth == 20
        assert rt.orchestrator.slots._poll_interval == 0.05


async def test_a_runtime_runs_a_pipeline_on_the_local_provider(tmp_path: Path) -> None:
    """Store, providers and orchestrator wired once: a run made here is read back there."""
    settings = load_settings(state_url=f"sqlite:///{tmp_path / 'state.db'}",
                             local_data_dir=str(tmp_path / "local"))
    pipeline = load_pipeline(write(tmp_path / "p.yaml", """
        name: p
        steps:
          hello: {uses: core/echo, with: {greeting: hi}}
    """))
    async with open_runtime(settings) as rt:
        outcome = await rt.orchestrator.run(pipeline, {})
        assert rt.providers is not None
        assert rt.providers.default is not None
        assert rt.providers.default.name == "local"
    async with open_runtime(settings, engine=False) as rt:
        assert (await rt.store.get_run(outcome.run_id)).status is RunStatus.SUCCEEDED
        with pytest.raises(RuntimeError, match="without an engine"):
            _ = rt.orchestrator


def test_a_store_only_runtime_loads_neither_engine_nor_http_nor_local_api(
        tmp_path: Path) -> None:
    """What read-only commands open: the store, and nothing that slows their start."""
    code = (
        "import sys, anyio\n"
        "from orchestrator.runtime import open_runtime\n"
        "from orchestrator.settings import load_settings\n"
        f"settings = load_settings(state_url='sqlite:///{tmp_path / 'state.db'}')\n"
        "async def main():\n"
        "    async with open_runtime(settings, engine=False) as rt:\n"
        "        await rt.store.list_runs(limit=1)\n"
        "anyio.run(main)\n"
        "print(sorted(m for m in ('orchestrator.engine', 'orchestrator.localapi', 'httpx', "
        "'starlette', 'orchestrator.providers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


BUILDERS = {"open_store", "Orchestrator", "Providers", "SQLiteStore", "PostgresStore",
            "from_settings", "serving"}
"""What builds a store, an orchestrator or a provider pool (`Providers.from_settings`,
`Providers.serving`)."""
MAKERS = {"orchestrator/runtime.py": BUILDERS,
          "orchestrator/store/opening.py": {"SQLiteStore", "PostgresStore"},
          "orchestrator/providers/pool.py": {"Providers"}}
"""Who may: the composition root, and each factory for what it makes."""


def _builders_called(path: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                name = func.id
            elif isinstance(func, ast.Attribute):
                name = func.attr
                owner = ast.unparse(func.value)
                if name in ("from_settings", "serving") and not owner.endswith("Providers"):
                    continue  # another class's factory (LocalAPIConfig.from_settings)
            else:
                continue
            if name in BUILDERS:
                found.add(name)
    return found


def test_only_the_runtime_builds_stores_pools_and_orchestrators() -> None:
    """`ui` opened its own store, `plan` and `run` built their own provider pools: every
    module but the composition root (and each factory for what it makes) asks the runtime."""
    root = Path(__file__).resolve().parent.parent
    wrong = {}
    for path in sorted((root / "orchestrator").rglob("*.py")):
        name = path.relative_to(root).as_posix()
        extra = _builders_called(path) - MAKERS.get(name, set())
        if extra:
            wrong[name] = sorted(extra)
    assert wrong == {}


def test_the_reader_sees_a_builder_called(tmp_path: Path) -> None:
    """The check above reads calls by name and by attribute."""
    probe = write(tmp_path / "probe.py", """
        from orchestrator.store.opening import open_store
        store = open_store("sqlite:///x")
        pool = orchestrator.providers.pool.Providers.from_settings(settings)
    """)
    assert _builders_called(probe) == {"open_store", "from_settings"}
