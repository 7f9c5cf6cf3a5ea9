"""The price before the launch: `plan` shows each fine-tune's estimate (Together's
estimate-price) and a sweep's total; `run` holds them against `budget.max_usd`, refusing in one
line (exit 2) unless `--yes`; the run keeps the estimate its launch was given, and `show` says
it. On the local provider in-process, and on provider `together` over loopback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cli.helpers import run_id_from, state
from tests.conftest import CLI, write
from tests.localapi.conftest import BASE, INSTRUCTIONS
from tests.localapi.test_server import KEY, free_port, serving

PIPELINE = """\
name: priced
{budget}
{matrix}
steps:
  upload:
    uses: together/upload-file
    with: {{path: train.jsonl}}
  launch:
    uses: together/launch-fine-tune
    with:
      training_file: "${{{{ steps.upload.outputs.file_id }}}}"
      model: {base}
      n_epochs: {epochs}
"""


def priced(epochs: int) -> tuple[int, str]:
    """Tokens and price the local API estimates for INSTRUCTIONS trained `epochs` times: a
    token per 4 bytes, $0.48 per million tokens."""
    tokens = len(INSTRUCTIONS) // 4 * epochs
    return tokens, f"${round(tokens * 0.48 / 1e6, 6):.6f}"


def pipeline(tmp_path: Path, *, budget: float | None = None, epochs: str = "2",
             matrix: str = "") -> Path:
    (tmp_path / "train.jsonl").write_bytes(INSTRUCTIONS)
    text = PIPELINE.format(budget=f"budget: {{max_usd: {budget}}}" if budget else "",
                           matrix=matrix, base=BASE, epochs=epochs)
    return write(tmp_path / "priced.yaml", text)


def test_plan_prices_each_cell_of_a_sweep_and_the_run_reuses_its_upload(
        cli: CLI, tmp_path: Path) -> None:
    pipeline(tmp_path, epochs="${{ matrix.epochs }}", budget=0.0002,
             matrix="matrix: {epochs: [1, 3]}")
    plan = cli("plan", "priced.yaml", check_code=0)
    assert re.search(r"uploaded train.jsonl as file-\S+ to have it priced; the run will "
                     r"reuse it", plan.stderr)
    for epochs in (1, 3):
        tokens, usd = priced(epochs)
        assert f"launch [epochs={epochs}]  {usd} ({tokens} tokens)" in plan.stdout
    assert "total for 2 fine-tunes: $0.000097; budget.max_usd $0.000200: within it" in \
        plan.stdout
    skipped = cli("plan", "priced.yaml", "--no-estimate", check_code=0)
    assert "price estimate" not in skipped.stdout
    cli("run", "priced.yaml", check_code=0)
    reused = state(tmp_path, "SELECT json_extract(outputs, '$.reused') FROM steps "
                             "WHERE step_id = 'upload'")
    assert reused == [(1,), (1,)]  # the file plan uploaded


def test_run_refuses_a_launch_above_the_budget_unless_yes(cli: CLI, tmp_path: Path) -> None:
    tokens, usd = priced(2)
    pipeline(tmp_path, budget=0.00003)
    refused = cli("run", "priced.yaml", check_code=2)
    assert refused.stderr.strip() == (
        f"priced.yaml: the estimated price {usd} of 1 fine-tune exceeds budget.max_usd "
        "$0.000030 (orchestrator plan priced.yaml shows each; --yes launches anyway)")
    assert state(tmp_path, "SELECT id FROM runs") == []  # nothing was created
    planned = cli("plan", "priced.yaml", check_code=0).stdout
    assert "budget.max_usd $0.000030: run refuses it without --yes" in planned
    done = cli("run", "priced.yaml", "--yes", check_code=0)
    run_id = run_id_from(done.stderr)
    shown = cli("show", run_id, check_code=0).stdout
    assert f"price     {usd} estimated by the provider for 1 fine-tune" in shown
    document = json.loads(cli("show", run_id, "-o", "json", check_code=0).stdout)
    assert f"${document['estimated_price_usd']:.6f}" == usd
    [launch] = [s for s in document["steps"] if s["id"] == "launch"]
    assert launch["outputs"]["estimated_tokens"] == tokens


def test_a_launch_within_budget_runs_and_an_unknowable_one_needs_yes(cli: CLI,
                                                                    tmp_path: Path) -> None:
    pipeline(tmp_path, budget=1.0)
    cli("run", "priced.yaml", check_code=0)
    pipeline(tmp_path, budget=1.0, epochs="${{ steps.upload.outputs.lines }}")
    refused = cli("run", "priced.yaml", check_code=2)
    assert refused.stderr.strip() == (
        "priced.yaml: budget.max_usd $1.00 cannot be checked: launch has no estimate "
        "(steps.upload.outputs.lines is known only when the run gets there); --yes launches "
        "anyway")
    done = cli("run", "priced.yaml", "--yes", check_code=0)
    shown = cli("show", run_id_from(done.stderr), check_code=0).stdout
    assert f"price     {priced(3)[1]} estimated" in shown  # the launch's own estimate


@pytest.mark.slow
def test_plan_and_budget_on_provider_together_over_loopback(cli: CLI, tmp_path: Path) -> None:
    pipeline(tmp_path, budget=0.00003)
    tokens, usd = priced(2)
    with serving(tmp_path, free_port()) as base:
        env = {"TOGETHER_API_KEY": KEY, "TOGETHER_BASE_URL": base}
        plan = cli("plan", "priced.yaml", "--provider", "together", env=env, check_code=0)
        assert f"launch  {usd} ({tokens} tokens)" in plan.stdout
        refused = cli("run", "priced.yaml", "--provider", "together", env=env, check_code=2)
        assert "exceeds budget.max_usd $0.000030" in refused.stderr
        cli("run", "priced.yaml", "--provider", "together", "--yes", env=env, check_code=0)
