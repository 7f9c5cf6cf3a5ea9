"""`matrix:`, `concurrency:` and `schedule:` in a pipeline file: expansion and validation."""

from __future__ import annotations

import itertools
import json
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.cron import CronSchedule
from orchestrator.definition.matrix import MatrixSpec, expand_matrix
from orchestrator.steps.builtin import load_pipeline
from tests.conftest import write
from tests.definition.test_validation import only, problems_of


def cells(**matrix: object) -> list[dict[str, object]]:
    return expand_matrix(MatrixSpec.model_validate(matrix))


# -- matrix expansion ------------------------------------------------------------------------

def test_axes_expand_to_their_product_in_file_order() -> None:
    assert cells(model=["a", "b"], lr=[1, 2]) == [
        {"model": "a", "lr": 1}, {"model": "a", "lr": 2},
        {"model": "b", "lr": 1}, {"model": "b", "lr": 2}]


def test_exclude_removes_every_cell_matching_all_its_keys() -> None:
    assert cells(model=["a", "b"], lr=[1, 2], exclude=[{"model": "a", "lr": 2}]) == [
        {"model": "a", "lr": 1}, {"model": "b", "lr": 1}, {"model": "b", "lr": 2}]
    # A partial entry removes every cell it matches.
    assert cells(model=["a", "b"], lr=[1, 2], exclude=[{"model": "b"}]) == [
        {"model": "a", "lr": 1}, {"model": "a", "lr": 2}]


def test_include_adds_a_new_cell_when_it_matches_none() -> None:
    assert cells(model=["a"], lr=[1], include=[{"model": "z", "lr": 9}]) == [
        {"model": "a", "lr": 1}, {"model": "z", "lr": 9}]


def test_include_extends_the_cells_it_matches_without_changing_axis_values() -> None:
    found = cells(model=["a", "b"], lr=[1, 2], include=[{"model": "a", "epochs": 5}])
    assert found == [{"model": "a", "lr": 1, "epochs": 5}, {"model": "a", "lr": 2, "epochs": 5},
                     {"model": "b", "lr": 1}, {"model": "b", "lr": 2}]
    # An entry of new keys only extends every cell.
    assert cells(model=["a", "b"], include=[{"gpu": "h100"}]) == [
        {"model": "a", "gpu": "h100"}, {"model": "b", "gpu": "h100"}]


def test_a_matrix_of_includes_only_and_duplicates_collapse() -> None:
    assert cells(include=[{"model": "a"}, {"model": "b"}, {"model": "a"}]) == [
        {"model": "a"}, {"model": "b"}]


def test_excluded_cells_do_not_come_back_through_an_include_that_matches_nothing_else(
) -> None:
    found = cells(model=["a", "b"], exclude=[{"model": "a"}], include=[{"model": "a"}])
    assert found == [{"model": "b"}, {"model": "a"}]


def _expanded_by_the_rules(spec: MatrixSpec) -> list[dict[str, object]]:
    """The rules of the module docstring, followed literally: each cell against each entry."""
    axes = spec.axes
    expanded = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(
        *axes.values())] if axes else []
    expanded = [c for c in expanded if not any(
        all(k in c and c[k] == v for k, v in e.items()) for e in spec.exclude)]
    originals = [dict(c) for c in expanded]
    added = []
    for entry in spec.include:
        hits = [c for c, o in zip(expanded, originals, strict=True)
                if all(o.get(k, v) == v for k, v in entry.items() if k in o)]
        for cell in hits:
            cell.update(entry)
        if not hits:
            added.append(dict(entry))
    unique: dict[str, dict[str, object]] = {}
    for cell in expanded + added:
        unique.setdefault(json.dumps(cell, sort_keys=True, default=str), cell)
    return list(unique.values())


_VALUES = st.one_of(st.integers(0, 3), st.sampled_from(["a", "b"]), st.booleans(),
                    st.sampled_from([1.0, 2.0]), st.lists(st.integers(0, 1), max_size=2))
_KEYS = st.sampled_from(["x", "y", "z", "extra"])


@given(axes=st.dictionaries(st.sampled_from(["x", "y", "z"]),
                            st.lists(_VALUES, min_size=1, max_size=4), min_size=1),
       exclude=st.lists(st.dictionaries(_KEYS, _VALUES, max_size=3), max_size=4),
       include=st.lists(st.dictionaries(_KEYS, _VALUES, max_size=3), max_size=4))
@settings(max_examples=300, deadline=None)
def test_expansion_matches_the_rules_for_any_matrix(axes: dict[str, list[object]],
                                                    exclude: list[dict[str, object]],
                                                    include: list[dict[str, object]]) -> None:
    """Matching through sets gives the cells, in the order, that comparing each cell with
    each entry gives (values of mixed types included: 1 == 1.0 == True)."""
    exclude = [{k: v for k, v in e.items() if k in axes} for e in exclude]
    spec = MatrixSpec.model_validate({**axes, "exclude": exclude, "include": include})
    assert expand_matrix(spec) == _expanded_by_the_rules(spec)


def test_ten_thousand_cells_with_five_thousand_excludes_expand_in_well_under_a_second(
) -> None:
    """Not cells x entries: 100 x 100 cells and 5,000 excludes (106 s before)."""
    spec = MatrixSpec.model_validate({
        "a": list(range(100)), "b": list(range(100)),
        "exclude": [{"a": a, "b": b} for a in range(100) for b in range(100)
                    if (a + b) % 2 == 0],
        "include": [{"a": i, "note": "kept"} for i in range(0, 100, 3)]})
    started = time.perf_counter()
    found = expand_matrix(spec)
    assert time.perf_counter() - started < 1.0
    assert len(found) == 5_000
    assert sum(1 for cell in found if cell.get("note") == "kept") == 34 * 50


# -- matrix validation -----------------------------------------------------------------------

def test_an_empty_axis_is_an_error_at_its_line(tmp_path: Path) -> None:
    problem = only(tmp_path, """
        name: p
        matrix:
          model: [a]
          lr: []
        steps:
          a: {uses: core/echo}
    """)
    assert (problem.line, problem.col) == (4, 7)
    assert problem.message == "matrix.lr: axis 'lr' is empty; give it at least one value or " \
                              "remove it"


def test_exclude_must_name_axes(tmp_path: Path) -> None:
    problem = only(tmp_path, """
        name: p
        matrix:
          model: [a]
          exclude: [{modle: a}]
        steps:
          a: {uses: core/echo}
    """)
    assert "names 'modle', which is not an axis (axes: model)" in problem.message


def test_matrix_references_are_checked(tmp_path: Path) -> None:
    problem = only(tmp_path, """
        name: p
        matrix:
          model: [a]
          include: [{model: b, epochs: 2}]
        steps:
          a:
            uses: core/echo
            with: {m: "${{ matrix.model }}", e: "${{ matrix.epochs }}", x: "${{ matrix.lr }}"}
    """)
    assert problem.line == 8
    assert "names no matrix key 'lr' (matrix keys: epochs, model)" in problem.message


def test_a_pipeline_knows_its_cells(tmp_path: Path) -> None:
    pipeline = load_pipeline(write(tmp_path / "p.yaml", """
        name: p
        matrix: {model: [a, b], max_parallel: 1, fail_fast: true}
        steps:
          a: {uses: core/echo, with: {m: "${{ matrix.model }}"}}
    """))
    assert pipeline.cells() == [{"model": "a"}, {"model": "b"}]
    assert pipeline.matrix is not None
    assert (pipeline.matrix.max_parallel, pipeline.matrix.fail_fast) == (1, True)


# -- concurrency -----------------------------------------------------------------------------

def test_concurrency_keys_take_inputs_matrix_and_run_only(tmp_path: Path) -> None:
    found = problems_of(tmp_path, """
        name: p
        inputs: {account: {default: acct}}
        concurrency: {key: "${{ secrets.KEY }}", limit: 2}
        steps:
          a:
            uses: core/echo
            concurrency: {key: "${{ steps.a.outputs.x }}", limit: 1}
          b:
            uses: core/echo
            concurrency: {key: "acct-${{ inputs.acount }}", limit: 1}
    """)
    messages = [p.message for p in found]
    assert [p.line for p in found] == [3, 7, 10]
    assert "a concurrency key can use inputs, matrix, run, not secrets" in messages[0]
    assert "not steps" in messages[1]
    assert "undefined input 'acount'" in messages[2]


def test_until_must_come_after_the_step(tmp_path: Path) -> None:
    found = problems_of(tmp_path, """
        name: p
        steps:
          a: {uses: core/echo}
          b:
            uses: core/echo
            needs: a
            concurrency: {key: k, limit: 1, until: a}
          c:
            uses: core/echo
            concurrency: {key: k, limit: 1, until: nope}
          d:
            uses: core/echo
            concurrency: {key: k, limit: 0}
    """)
    messages = sorted(p.message for p in found)
    assert any("step 'a' does not come after 'b'" in m for m in messages), messages
    assert any("unknown step 'nope' in until" in m for m in messages), messages
    assert any("greater than or equal to 1" in m for m in messages), messages


def test_slot_span_covers_the_steps_between(tmp_path: Path) -> None:
    pipeline = load_pipeline(write(tmp_path / "p.yaml", """
        name: p
        steps:
          launch: {uses: core/echo, concurrency: {key: k, limit: 1, until: wait}}
          poll: {uses: core/echo, needs: launch}
          wait: {uses: core/echo, needs: poll}
          side: {uses: core/echo, needs: launch}
          after: {uses: core/echo, needs: wait}
    """))
    assert pipeline.slot_span("launch") == {"launch", "poll", "wait"}
    assert pipeline.slot_span("poll") == {"poll"}


# -- schedules -------------------------------------------------------------------------------

def test_schedule_problems_are_reported_where_they_are(tmp_path: Path) -> None:
    found = problems_of(tmp_path, """
        name: p
        inputs: {epochs: {type: integer}}
        schedule:
          cron: "0 25 * * *"
          timezone: Mars/Olympus
          overlap: wait
        steps:
          a: {uses: core/echo}
    """)
    text = "\\n".join(f"{p.line}: {p.message}" for p in found)
    assert "4: schedule.cron: '0 25 * * *'" in text or "4: schedule.cron: cron '0 25" in text, \
        text
    assert "5: schedule.timezone: unknown time zone 'Mars/Olympus'" in text, text
    assert "6: schedule.overlap: input should be 'skip', 'queue', 'cancel_other' or 'allow'" \
        in text, text


def test_schedule_inputs_are_checked_against_the_pipeline(tmp_path: Path) -> None:
    found = problems_of(tmp_path, """
        name: p
        inputs: {epochs: {type: integer}, lr: {type: number, default: 0.1}}
        schedule:
          cron: "@daily"
          inputs: {lr: fast, epoch: 3}
        steps:
          a: {uses: core/echo}
    """)
    messages = [p.message for p in found]
    assert "schedule.inputs.lr: expected a number, got 'fast' (the input's type is number)" \
        in messages
    assert any(m.startswith("schedule.inputs: unknown input 'epoch'") for m in messages)
    assert "schedule: input 'epochs' has no default; give it in schedule.inputs" in messages


def test_a_bare_cron_string_is_a_schedule(tmp_path: Path) -> None:
    pipeline = load_pipeline(write(tmp_path / "p.yaml", """
        name: p
        schedule: "*/15 * * * *"
        steps:
          a: {uses: core/echo}
    """))
    assert pipeline.schedule is not None
    assert (pipeline.schedule.cron, pipeline.schedule.overlap, pipeline.schedule.catch_up) == (
        "*/15 * * * *", "skip", "none")


@pytest.mark.parametrize(("cron", "why"), [
    ("0 2 * *", "must have five fields"),
    ("0 2 * * * 5", "must have five fields"),
    ("0 0 30 2 *", "never fires"),
    ("@fortnightly", "unknown alias"),
])
def test_bad_cron_lines(cron: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        CronSchedule(cron)


# -- daylight saving -------------------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")


def local(fires: list[float]) -> list[str]:
    return [datetime.fromtimestamp(f, BERLIN).strftime("%m-%d %H:%M%z") for f in fires]


def test_a_fixed_time_in_the_skipped_hour_fires_once_at_the_jump() -> None:
    start = datetime(2026, 3, 28, 12, tzinfo=BERLIN).timestamp()
    fires = CronSchedule("30 2 * * *", "Europe/Berlin").fires_between(start, start + 3 * 86400)
    assert local(fires) == ["03-29 03:00+0200", "03-30 02:30+0200", "03-31 02:30+0200"]


def test_a_fixed_time_in_the_repeated_hour_fires_once() -> None:
    start = datetime(2026, 10, 24, 12, tzinfo=BERLIN).timestamp()
    fires = CronSchedule("30 2 * * *", "Europe/Berlin").fires_between(start, start + 3 * 86400)
    assert local(fires) == ["10-25 02:30+0200", "10-26 02:30+0100", "10-27 02:30+0100"]


def test_an_hourly_line_fires_every_real_hour_across_both_changes() -> None:
    hourly = CronSchedule("0 * * * *", "Europe/Berlin")
    spring = datetime(2026, 3, 29, 0, 30, tzinfo=BERLIN).timestamp()
    assert local(hourly.fires_between(spring, spring + 4 * 3600)) == [
        "03-29 01:00+0100", "03-29 03:00+0200", "03-29 04:00+0200", "03-29 05:00+0200"]
    autumn = datetime(2026, 10, 25, 0, 30, tzinfo=BERLIN).timestamp()
    assert local(hourly.fires_between(autumn, autumn + 4 * 3600)) == [
        "10-25 01:00+0200", "10-25 02:00+0200", "10-25 02:00+0100", "10-25 03:00+0100"]
