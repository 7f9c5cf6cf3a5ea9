"""The Python API resolves inputs, defaults, settings and providers as the command line does."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import orchestrator
from orchestrator.errors import InputsInvalid, PipelineInvalid
from tests.conftest import write

PIPELINE = """\
    name: api
    inputs:
      epochs: {type: integer, default: 3}
      data: {type: path, default: data.txt}
      lr: {type: number}
    steps:
      a:
        uses: core/echo
        with: {epochs: "${{ inputs.epochs }}", data: "${{ inputs.data }}", lr: "${{ inputs.lr }}"}
"""


def test_run_file_fills_in_defaults_and_coerces_as_the_cli_does(tmp_path: Path) -> None:
    write(tmp_path / "flows" / "api.yaml", PIPELINE)
    result = orchestrator.run_file("flows/api.yaml", {"lr": "0.5"})
    assert (result.status, result.exit_code, result.succeeded) == ("succeeded", 0, True)
    assert result.outputs["a"] == {"epochs": 3, "lr": 0.5,
                                   "data": str(tmp_path / "flows" / "data.txt")}
    shown = orchestrator.show_run(result.run_id)
    assert shown["run"]["inputs"]["epochs"] == 3 and shown["steps"][0]["id"] == "a"
    assert [r["id"] for r in orchestrator.runs(status="succeeded")] == [result.run_id]
    assert orchestrator.wait_run(result.run_id, timeout=5)["status"] == "succeeded"


def test_bad_input_raises_the_clis_errors(tmp_path: Path) -> None:
    write(tmp_path / "api.yaml", PIPELINE)
    with pytest.raises(InputsInvalid, match="input 'lr' is required"):
        orchestrator.run_file("api.yaml")
    with pytest.raises(InputsInvalid, match="input 'epochs': expected an integer"):
        orchestrator.run_file("api.yaml", {"lr": 1, "epochs": "many"})
    write(tmp_path / "broken.yaml", "name: b\nsteps:\n  a: {uses: core/ecco}\n")
    with pytest.raises(PipelineInvalid, match=r"broken.yaml:3:\d+: steps.a.uses"):
        orchestrator.run_file("broken.yaml")
    assert not (tmp_path / ".orchestrator" / "state.db").exists()  # nothing was created


def test_detach_queues_and_a_matrix_returns_its_cells(tmp_path: Path) -> None:
    write(tmp_path / "api.yaml", PIPELINE)
    queued = orchestrator.run_file("api.yaml", {"lr": 1}, detach=True)
    assert queued.status == "queued"
    assert orchestrator.runs(status="queued")[0]["id"] == queued.run_id
    write(tmp_path / "m.yaml", """\
        name: m
        matrix: {x: [1, 2]}
        steps:
          a: {uses: core/echo, with: {x: "${{ matrix.x }}"}}
    """)
    batch = orchestrator.run_file("m.yaml", state_url=f"sqlite:///{tmp_path}/other.db")
    assert batch.status == "succeeded" and [c.outputs["a"]["x"] for c in batch.cells] == [1, 2]


def test_orchestrator_run_fills_in_a_defaulted_input(tmp_path: Path) -> None:
    """The engine's own entry point takes partial inputs too (it used to fail on a default)."""
    write(tmp_path / "api.yaml", PIPELINE)
    pipeline = orchestrator.load_pipeline(tmp_path / "api.yaml")
    settings = orchestrator.load_settings()

    async def main() -> orchestrator.RunOutcome:
        from orchestrator.runtime import open_runtime

        async with open_runtime(settings) as rt:
            return await rt.orchestrator.run(pipeline, {"lr": 2})

    outcome = anyio.run(main)
    assert outcome.status is orchestrator.RunStatus.SUCCEEDED
    shown = orchestrator.show_run(outcome.run_id)
    assert shown["steps"][0]["outputs"]["epochs"] == 3


def test_the_api_writes_nothing_to_stderr_unless_asked(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A script's output is its own: no log lines by default; `log_format=...` asks for
    them; what the steps logged is kept with the run either way."""
    import structlog

    write(tmp_path / "api.yaml", PIPELINE)
    result = orchestrator.run_file("api.yaml", {"lr": 1})
    assert result.succeeded
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    structlog.reset_defaults()
    orchestrator.run_file("api.yaml", {"lr": 1}, log_format="json")
    lines = capfd.readouterr().err.splitlines()
    assert any('"event": "run finished"' in line for line in lines)
