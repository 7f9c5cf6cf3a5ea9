"""A sweep judged and its winner promoted, on the local API (training simulated: a cell
answers what its own data taught): an evaluate step per cell with a gate, the batch's
objective (`select:`), `show BATCH` ranking the cells, `promote` moving an alias once,
`models --alias` answering which model serves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import CLI, REPO, write

FAST = {"ORCH_LOCAL_JOB_DURATION": "500ms"}
SWEEP = """\
    name: pick
    matrix:
      data: [DATA]
    select: {by: eval.exact_match}
    steps:
      upload: {uses: together/upload-file, with: {path: "${{ matrix.data }}"}}
      launch:
        uses: together/launch-fine-tune
        with:
          training_file: "${{ steps.upload.outputs.file_id }}"
          model: meta-llama/Meta-Llama-3.1-8B-Instruct-Reference
          n_epochs: 1
      wait:
        uses: together/wait-fine-tune
        with: {job_id: "${{ steps.launch.outputs.job_id }}", poll_interval: 100ms}
      evaluate:
        uses: together/evaluate
        with:
          model: "${{ steps.wait.outputs.model_name }}"
          job_id: "${{ steps.launch.outputs.job_id }}"
          file: all.jsonl
          max_tokens: 8
          require: {exact_match: ">= 0.6", lift.exact_match: "> 0"}
      register:
        uses: registry/record-model
        with:
          model: "${{ steps.wait.outputs.model_name }}"
          metrics: {eval: "${{ steps.evaluate.outputs.scores }}"}
"""


def sweep(cli: CLI, tmp_path: Path, data: list[str]) -> str:
    """Run the sweep over the training files `data` (all.jsonl: 8 capitals, half.jsonl: 4,
    same.jsonl: all.jsonl's bytes under another name); its batch id."""
    lines = (REPO / "pipelines" / "data" / "train.jsonl").read_text().splitlines()
    write(tmp_path / "all.jsonl", "\n".join(lines) + "\n")
    write(tmp_path / "same.jsonl", "\n".join(lines) + "\n")
    write(tmp_path / "half.jsonl", "\n".join(lines[:4]) + "\n")
    write(tmp_path / "sweep.yaml", SWEEP.replace("DATA", ", ".join(data)))
    cli("run", "sweep.yaml", env=FAST)
    return str(json.loads(cli("batches", "-o", "json", check_code=0).stdout)[0]["id"])


def test_the_best_cell_is_promoted_once_and_a_gated_cell_never_registered(
        cli: CLI, tmp_path: Path) -> None:
    batch = sweep(cli, tmp_path, ["half.jsonl", "all.jsonl"])
    shown = json.loads(cli("show", batch, "-o", "json", check_code=0).stdout)
    half, full = shown["cells"]
    assert half["status"] == "failed" and "exact_match is 0.5, required >= 0.6" in \
        half["error"]
    assert full["figures"]["eval.exact_match"] == 1.0
    assert full["figures"]["lift.exact_match"] == 1.0
    assert shown["selection"]["winner"] == full["id"]
    assert shown["selection"]["left_out"] == [{"run_id": half["id"], "why": "failed"}]
    table = cli("show", batch, check_code=0).stdout
    assert "EVAL.EXACT_MATCH" in table and "best" in table
    registered = [m["name"] for m in json.loads(cli("models", "-o", "json",
                                                    check_code=0).stdout)]
    assert registered == [full["model_name"]]  # the gate kept the half-trained model out

    dry = cli("promote", batch, "--dry-run", check_code=0).stdout
    assert "would point at" in dry
    cli("models", "--alias", "production", check_code=2)  # nothing moved yet
    first = json.loads(cli("promote", batch, "-o", "json", check_code=0).stdout)
    again = json.loads(cli("promote", batch, "-o", "json", check_code=0).stdout)
    assert (first["moved"], again["moved"]) == (True, False)
    assert first["model"] == again["model"] == full["model_name"]
    serving = json.loads(cli("models", "--alias", "production", "-o", "json",
                             check_code=0).stdout)
    assert serving["model"] == full["model_name"]
    assert serving["entry"]["metrics"] == {"eval": {"exact_match": 1.0}}
    assert len(serving["history"]) == 1 and serving["source"] == batch
    assert "@" in serving["moved_by"] and "eval.exact_match" in serving["reason"]
    listed = json.loads(cli("models", "-o", "json", check_code=0).stdout)
    assert listed[0]["aliases"] == ["production"]


def test_a_tie_goes_to_the_first_cell_and_says_so(cli: CLI, tmp_path: Path) -> None:
    batch = sweep(cli, tmp_path, ["same.jsonl", "all.jsonl"])
    promoted = cli("promote", batch, "--alias", "staging", check_code=0).stdout
    shown = json.loads(cli("show", batch, "-o", "json", check_code=0).stdout)
    first, second = (cell["id"] for cell in shown["cells"])
    assert shown["selection"]["winner"] == first and shown["selection"]["tied"] == [second]
    assert f"tie: {second} has the same eval.exact_match; the first in cell order, {first}, " \
           "wins" in promoted


@pytest.mark.parametrize(("args", "message"), [
    (["--by", "evals.x"], "--by: 'evals.x' is not an objective"),
    (["--alias", "-x"], "expected one argument"),
    (["--alias", "pro duction"], "'pro duction' is not an alias name"),
])
def test_a_bad_promotion_is_one_line(cli: CLI, tmp_path: Path, args: list[str],
                                     message: str) -> None:
    write(tmp_path / "m.yaml", "name: m\nmatrix: {x: [1, 2]}\nsteps:\n  a: {uses: core/echo}\n")
    cli("run", "m.yaml", check_code=0)
    batch = json.loads(cli("batches", "-o", "json", check_code=0).stdout)[0]["id"]
    refused = cli("promote", batch, *args, check_code=2)
    assert message in refused.stderr and refused.stderr.count("\n") == 1
    unnamed = cli("promote", batch, check_code=2)
    assert "names no objective (select: {by: eval.exact_match}): give one with --by" in \
        unnamed.stderr
    nothing = cli("promote", batch, "--by", "eval.exact_match", check_code=1)
    assert "left out" in nothing.stdout and "no cell of batch" in nothing.stderr


def test_the_promote_step_moves_an_alias_once(cli: CLI, tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", """\
        name: p
        steps:
          promote:
            uses: registry/promote
            with: {alias: staging, model: acme/m-1, why: passed its gate}
    """)
    cli("run", "p.yaml", check_code=0)
    cli("run", "p.yaml", check_code=0)
    serving = json.loads(cli("models", "--alias", "staging", "-o", "json",
                             check_code=0).stdout)
    assert serving["model"] == "acme/m-1" and len(serving["history"]) == 1
    assert serving["moved_by"].startswith("run r-") and serving["reason"] == "passed its gate"
    assert serving["entry"] is None


def test_select_is_validated(cli: CLI, tmp_path: Path) -> None:
    write(tmp_path / "s.yaml", "name: s\nselect: {by: eval.x}\nsteps:\n  a: {uses: core/echo}\n")
    assert "select: ranks a batch's cells; this pipeline has no matrix:" in cli(
        "validate", "s.yaml", check_code=2).stderr
    write(tmp_path / "s.yaml", "name: s\nmatrix: {x: [1]}\nselect: {by: best}\nsteps:\n"
                               "  a: {uses: core/echo}\n")
    assert "select.by: 'best' is not an objective" in cli("validate", "s.yaml",
                                                          check_code=2).stderr


def test_the_objective_grammar_is_one() -> None:
    """`validate` (pydantic's model) and the read side (no pydantic: start-up) read the same
    objectives."""
    from orchestrator.definition.model import OBJECTIVE_PATTERN
    from orchestrator.views.batches import OBJECTIVE

    assert f"^{OBJECTIVE.pattern}$" == OBJECTIVE_PATTERN
