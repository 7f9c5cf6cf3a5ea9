"""Big runs show fast: a run keeps its pipeline's step order with the stored text (listing it
parses nothing), and a table is sized once and written in one go: columns two spaces apart, a
cell too wide folded onto the next lines (never cut), statuses coloured on a terminal."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from orchestrator.cli.screen import Cell, Screen, Styled
from tests.cli.helpers import run_id_from
from tests.conftest import CLI, write

STEPS = 250


def chain(steps: int) -> str:
    """A pipeline of `steps` echo steps, each after the one before, written in reverse (so the
    pipeline's order is not the file's)."""
    lines = ["name: chain", "steps:"]
    for i in reversed(range(steps)):
        needs = f", needs: [s{i - 1}]" if i else ""
        lines.append(f"  s{i}: {{uses: core/echo, with: {{x: {i}}}{needs}}}")
    return "\n".join(lines) + "\n"


def test_a_long_run_is_listed_in_its_pipelines_order_without_parsing_it(
        cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "chain.yaml", chain(STEPS))
    run_id = run_id_from(cli("run", "chain.yaml", check_code=0).stderr)

    def no_parsing(*args: object) -> None:
        raise AssertionError("show parsed the stored pipeline")

    monkeypatch.setattr("orchestrator.steps.builtin.stored_pipeline", no_parsing)
    shown = cli("show", run_id, check_code=0).stdout.splitlines()
    table = shown[shown.index(next(line for line in shown if line.startswith("STEP"))):]
    assert re.fullmatch(r"STEP\s{2,}STATUS\s{2,}ATTEMPTS\s{2,}DURATION\s{2,}ERROR", table[0])
    assert [line.split()[0] for line in table[1:]] == [f"s{i}" for i in range(STEPS)]
    assert all(re.fullmatch(r"s\d+\s+succeeded\s+1\s+\d+ms", line) for line in table[1:])
    assert len({line.index("succeeded") for line in table[1:]}) == 1  # one column
    document = json.loads(cli("show", run_id, "-o", "json", check_code=0).stdout)
    assert [step["id"] for step in document["steps"]] == [f"s{i}" for i in range(STEPS)]


def test_a_run_stored_before_orders_were_kept_is_ordered_by_its_text(
        cli: CLI, cli_process: CLI, tmp_path: Path) -> None:
    import sqlite3

    # s2 never starts (s1 fails): only the text can say where it goes, the rows cannot.
    write(tmp_path / "chain.yaml", "name: chain\nsteps:\n"
          "  s2: {uses: core/echo, needs: [s1]}\n"
          "  s1: {uses: core/fail, with: {transient: false}, needs: [s0]}\n"
          "  s0: {uses: core/echo}\n")
    run_id = run_id_from(cli("run", "chain.yaml", check_code=1).stderr)
    with sqlite3.connect(tmp_path / ".orchestrator" / "state.db") as db:
        db.execute("UPDATE pipeline_texts SET steps = NULL")
    # A process of its own: this one keeps the text (and its order) it stored, in memory.
    shown = cli_process("show", run_id, "-o", "json", check_code=0).stdout
    assert [s["id"] for s in json.loads(shown)["steps"]] == ["s0", "s1"]
    table = cli_process("show", run_id, check_code=0).stdout.splitlines()
    listed = [line.split()[0] for line in table if re.match(r"s\d\s", line)]
    assert listed == ["s0", "s1", "s2"]


def test_a_long_table_folds_and_colours() -> None:
    out = io.StringIO()
    rows: list[tuple[Cell, ...]] = [
        (f"s{i}", Styled("failed" if i == 3 else "succeeded", "red" if i == 3 else "green"),
         "1", "x" * 50 if i == 3 else "") for i in range(STEPS)]
    Screen(out, width=40, color=True).table(("STEP", "STATUS", "N", "ERROR"), rows)
    lines = out.getvalue().splitlines()
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]
    assert all(len(line) <= 40 for line in plain)
    assert plain[0].split() == ["STEP", "STATUS", "N", "ERROR"]
    failed = next(i for i, line in enumerate(plain) if line.startswith("s3 "))
    error_column = plain[0].index("ERROR")
    folded = [plain[failed][error_column:]] + [line[error_column:]
                                              for line in plain[failed + 1:failed + 3]]
    assert "".join(folded) == "x" * 50  # the whole value, folded, never cut
    assert plain[failed + 1][:error_column].strip() == ""
    assert "\x1b[31m" in lines[failed] and "\x1b[32m" in lines[1]  # red, green
    assert len(plain) == 1 + STEPS + 2
