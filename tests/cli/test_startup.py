"""What a command loads before it does its work: a read-only command (runs, show, logs,
metrics, models, batches) loads no library outside the standard one (no pydantic, settings
reader, HTTP client, rich console, structlog or anyio) and none of the engine, the step types
or the local API; the engine loads no HTTP client until a run needs its provider."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cli.helpers import run_id_from
from tests.conftest import CLI, write

ALLOWED_OUTSIDE = {"orchestrator", "_distutils_hack"}
"""Top-level modules beyond Python's own a read-only command may load (_distutils_hack is
setuptools', loaded by `site` in every process)."""
PACKAGE = Path(__file__).resolve().parents[2] / "orchestrator"
OURS_FORBIDDEN = ("orchestrator.engine", "orchestrator.localapi", "orchestrator.steps",
                  "orchestrator.providers", "orchestrator.settings", "orchestrator.log",
                  "orchestrator.definition.loader", "orchestrator.schedule")
"""Our packages a read-only command leaves unloaded (`orchestrator.settings` is pydantic's
reader; `settings_read` is the light one)."""

PROBE = """
import json, sys
from orchestrator.cli import main
loaded = []
for args in json.loads(sys.argv[1]):
    before = set(sys.modules)
    code = main(args)
    new = set(sys.modules) - before
    outside = sorted({m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names)
                     - {"__main__"})
    forbidden = json.loads(sys.argv[2])
    ours = sorted(m for m in new if any(m == f or m.startswith(f + ".") for f in forbidden))
    loaded.append([" ".join(args), code, outside, ours])
sys.stderr.write(json.dumps(loaded))
"""


def loads(tmp_path: Path, commands: list[list[str]]) -> list[list[object]]:
    """For each command, run in turn in one fresh process: its exit code, the top-level
    modules outside the standard library loaded so far, and our forbidden ones it loaded."""
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(commands),
                             json.dumps(OURS_FORBIDDEN)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    found: list[list[object]] = json.loads(result.stderr.splitlines()[-1])
    return found


def test_read_only_commands_load_only_what_reading_needs(cli: CLI, tmp_path: Path) -> None:
    write(tmp_path / "one.yaml", "name: one\nsteps:\n  hello: {uses: core/echo, with: {x: 1}}\n")
    run_id = run_id_from(cli("run", "one.yaml", check_code=0).stderr)
    commands = [["runs"], ["runs", "-o", "json"], ["show", run_id], ["show", run_id, "-o", "json"],
                ["logs", run_id], ["metrics", run_id], ["models"], ["batches"]]
    for command, code, outside, ours in loads(tmp_path, commands):
        assert code == 0, command
        assert isinstance(outside, list) and isinstance(ours, list)
        assert set(outside) <= ALLOWED_OUTSIDE, f"{command} loaded {outside}"
        assert ours == [], f"{command} loaded {ours}"


def test_the_probe_sees_what_a_command_loads(tmp_path: Path) -> None:
    """`validate` parses a pipeline: pydantic and the loader load, and the probe says so."""
    write(tmp_path / "one.yaml", "name: one\nsteps:\n  hello: {uses: core/echo}\n")
    [[_, code, outside, ours]] = loads(tmp_path, [["validate", "one.yaml"]])
    assert code == 0 and isinstance(outside, list) and isinstance(ours, list)
    assert "pydantic" in outside and "orchestrator.definition.loader" in ours


def test_importing_the_engine_loads_no_http_client() -> None:
    """The Python API and the engine load httpx (and the Together client) only when a run
    first needs its provider."""
    code = ("import sys; from orchestrator import run_file; "
            "import orchestrator.engine.orchestrator; "
            "print(sorted(m for m in ('httpx', 'orchestrator.providers.together.client', "
            "'starlette', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_only_the_log_module_imports_structlog() -> None:
    """structlog loads through `orchestrator.log` (which keeps rich out of its import): an
    `import structlog` anywhere else could load it first, rich and all."""
    import ast

    elsewhere = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "log.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(n.split(".")[0] == "structlog" for n in names):
                elsewhere.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not elsewhere, elsewhere


def test_a_pipeline_of_core_steps_opens_no_provider(cli: CLI, tmp_path: Path) -> None:
    """Its step types talk to no provider: no client opens (no key is asked for, not even
    on provider together), and neither httpx nor the local API loads."""
    write(tmp_path / "one.yaml", "name: one\nsteps:\n  hello: {uses: core/echo, with: {x: 1}}\n")
    [[_, code, outside, ours]] = loads(tmp_path, [["run", "one.yaml", "--provider", "together"]])
    assert code == 0 and isinstance(outside, list) and isinstance(ours, list)
    assert not {"httpx", "starlette", "rich"} & set(outside), outside
    assert not [m for m in ours if m.startswith(("orchestrator.localapi",
                                                  "orchestrator.providers.together"))]
    refused = cli("run", "one.yaml", "--provider", "together", check_code=0)
    assert "succeeded" in refused.stderr
