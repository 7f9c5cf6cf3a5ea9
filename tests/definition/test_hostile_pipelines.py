"""Hostile pipeline files: each is refused in one line naming file, line and column, bounded in
time and memory, never with a traceback (the corpus lives in tests/hostile/pipelines)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.definition.limits import PipelineLimits
from orchestrator.errors import PipelineInvalid
from orchestrator.steps.builtin import load_pipeline, parse_pipeline
from tests.cli.helpers import measured
from tests.conftest import CLI, REPO

CORPUS = REPO / "tests" / "hostile" / "pipelines"
SUPPORTED_TAGS = "(only !!str, !!int, !!float, !!bool, !!null, !!seq and !!map)"
EXPECTED = {
    "alias-bomb.yaml": "7:8: alias expands to more than 100,000 nodes (setting "
                       "max_yaml_alias_nodes)",
    "alias-cycle.yaml": "5:22: alias *w is inside the node it names (a cycle)",
    "deep-block.yaml": "67:129: nested more than 64 levels deep (setting max_yaml_depth)",
    "deep-flow.yaml": "6:70: nested more than 64 levels deep (setting max_yaml_depth)",
    # libyaml's own bound (1,000 flow levels) comes first here: it scans ahead of the events.
    "deep-flow-5000.yaml": "6:1006: YAML: exceeded maximum nesting depth (while increasing "
                           "flow level)",
    "expression-index.yaml": f"5:34: steps.s.with.x: index [{'9' * 20}... (5,000 characters)] "
                             f"is too large in 'inputs.x[{'9' * 51}... (5,010 characters)'",
    "expression-long.yaml": f"3:34: steps.s.with.x: unknown name '{'x' * 60}... (10,000 "
                            f"characters)' in '{'x' * 60}... (10,000 characters)' (expressions "
                            "start with one of: inputs, steps, matrix, run, secrets)",
    "huge-integer.yaml": "3:34: an integer of 5,000 digits; at most 4,300",
    "infinite.yaml": "3:34: 1e400 is not a finite number (JSON cannot hold it); quote it to "
                     "mean the text",
    "launch-lora-yes.yaml": "5:54: steps.launch.with.lora: input should be a valid boolean",
    "matrix-axes.yaml": "2:1: matrix: its axes make 10,000,000,000 cells before exclude; at "
                        "most 10,000 (setting max_matrix_cells)",
    "matrix-cells.yaml": "2:1: matrix: 12,000 cells; at most 10,000 (setting max_matrix_cells)",
    "merge-scalar.yaml": "3:35: YAML: expected a mapping or list of mappings for merging, but "
                         "found scalar (while constructing a mapping)",
    "not-utf8.yaml": "3:37: not UTF-8 text (byte 0xe9)",
    "tag-binary.yaml": f"3:34: the tag !!binary is not supported {SUPPORTED_TAGS}",
    "tag-python.yaml": "3:34: the tag !!python/object/apply:os.system is not supported "
                       f"{SUPPORTED_TAGS}",
    "tag-set.yaml": f"3:34: the tag !!set is not supported {SUPPORTED_TAGS}",
    "timezone-folder.yaml": "2:41: schedule.timezone: unknown time zone 'Europe' (use an IANA "
                            "name like UTC or Europe/Berlin)",
    "two-documents.yaml": "4:1: YAML: expected a single document in the stream, but found "
                          "another document",
}


def test_the_corpus_is_what_the_table_expects() -> None:
    """Every file of the corpus has its expected message, and every message its file."""
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_hostile_file_is_one_problem_at_its_position(name: str) -> None:
    """Loading the file raises PipelineInvalid with exactly the expected line."""
    with pytest.raises(PipelineInvalid) as caught:
        load_pipeline(CORPUS / name)
    assert str(caught.value) == f"{CORPUS / name}:{EXPECTED[name]}"


def test_validate_answers_the_whole_corpus_in_one_line_each(cli: CLI, tmp_path: Path) -> None:
    """`orchestrator validate` on every file: exit code 2, one line per file, no traceback."""
    for name in EXPECTED:
        (tmp_path / name).write_bytes((CORPUS / name).read_bytes())
    result = cli("validate", *sorted(EXPECTED), check_code=2)
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"{name}:{EXPECTED[name]}" for name in sorted(EXPECTED)]


def test_files_that_are_not_regular_files_are_refused_without_reading(tmp_path: Path) -> None:
    """/dev/zero, a FIFO nobody writes to and a folder are each one problem, at once."""
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    for path, kind in (("/dev/zero", "a character device"), (str(fifo), "a FIFO"),
                       (str(tmp_path), "a directory")):
        with pytest.raises(PipelineInvalid) as caught:
            load_pipeline(path)
        assert str(caught.value) == f"{path}:1:1: is {kind}, not a regular file"


def test_size_and_node_bounds_are_settings(tmp_path: Path) -> None:
    """A file above max_pipeline_bytes is refused before it is parsed; one with more nodes
    than max_yaml_nodes where it crosses the bound."""
    path = tmp_path / "long.yaml"
    path.write_text("name: long\nsteps:\n  s: {uses: core/echo, with: {x: [" +
                    ", ".join(["1"] * 1500) + "]}}\n")
    with pytest.raises(PipelineInvalid) as caught:
        load_pipeline(path, limits=PipelineLimits(max_bytes=2048))
    assert str(caught.value) == (f"{path}:1:1: is larger than 2 KiB (4.4 KiB; setting "
                                 "max_pipeline_bytes)")
    with pytest.raises(PipelineInvalid) as caught:
        load_pipeline(path, limits=PipelineLimits(max_nodes=1000))
    assert str(caught.value) == f"{path}:3:2996: more than 1,000 nodes (setting max_yaml_nodes)"


def test_the_cli_reads_the_bounds_from_its_settings(cli: CLI, tmp_path: Path) -> None:
    """`validate` honours a lowered bound from the environment, as `run` does."""
    (tmp_path / "sweep.yaml").write_text(
        "name: sweep\nmatrix: {lr: [1, 2, 3]}\nsteps:\n  s: {uses: core/echo, with: {x: 1}}\n")
    result = cli("validate", "sweep.yaml", env={"ORCH_MAX_MATRIX_CELLS": "2"}, check_code=2)
    assert result.stderr == ("sweep.yaml:2:1: matrix: 3 cells; at most 2 (setting "
                             "max_matrix_cells)\n")
    cli("run", "sweep.yaml", env={"ORCH_MAX_MATRIX_CELLS": "2"}, check_code=2)
    cli("validate", "sweep.yaml", check_code=0)


def test_an_alias_bomb_is_refused_in_under_a_second_and_200_mib() -> None:
    """The 380-byte bomb expands to 9**9 nodes if built: refused having built nothing."""
    cost = measured("validate", str(CORPUS / "alias-bomb.yaml"))
    assert cost.code == 2 and "alias expands to more than 100,000 nodes" in cost.stderr
    assert cost.cpu < 1.0 and cost.peak_mib < 200, cost


def test_a_file_of_millions_of_nodes_is_refused_within_bounds(tmp_path: Path) -> None:
    """8 MiB of `1,1,1,...` (4 million nodes; 80 s and 4 GiB to load before the bound):
    refused at the 200,001st node, in bounded time and under 200 MiB."""
    path = tmp_path / "flat.yaml"
    path.write_text("name: flat\nsteps:\n  s: {uses: core/echo, with: {x: [" +
                    "1," * (4 * 2**20 - 64) + "1]}}\n")
    cost = measured("validate", str(path))
    assert cost.code == 2 and "more than 200,000 nodes (setting max_yaml_nodes)" in cost.stderr
    assert cost.cpu < 2.0 and cost.peak_mib < 200, cost


# -- any text at all: only the documented errors, quickly ------------------------------------

_YAML_CHARS = st.sampled_from([*"abc:{}[],-&*!|>'\"#%@?~ \n\t.0123456789<=\\",
                               "steps:", "name: p\n", "  ", "${{", "}}", "uses: core/echo",
                               "&a", "*a", "<<", "!!str", "!!int", "!!binary", "1e5", "0x",
                               "\u001b", "\u00e9", "---", "..."])


@given(st.lists(_YAML_CHARS, max_size=80).map("".join))
@settings(max_examples=500, deadline=None)
def test_any_text_is_a_pipeline_or_problems_never_an_exception(text: str) -> None:
    """Whatever the file holds, loading gives a Pipeline or PipelineInvalid with positions,
    in well under a second."""
    started = time.perf_counter()
    try:
        parse_pipeline(text, Path("any.yaml"))
    except PipelineInvalid as exc:
        assert exc.problems and all(p.line >= 1 and p.col >= 1 for p in exc.problems)
    assert time.perf_counter() - started < 1.0


_NESTED = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                       lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=4), inner, max_size=4),
                       max_leaves=30)


@given(_NESTED, st.integers(1, 6))
@settings(max_examples=200, deadline=None)
def test_anchors_and_aliases_are_expanded_within_bounds(value: object, copies: int) -> None:
    """A document that names a value once and refers to it many times (nested too) loads to
    the same data as one that spells it out, or is refused at the alias that crossed the
    bound; never more memory than the bound allows."""
    import yaml

    spelled = yaml.safe_dump({"name": "p", "x": [value] * copies, "y": [[value] * copies]})
    aliased = yaml.dump({"name": "p", "x": [value] * copies, "y": [[value] * copies]},
                        Dumper=yaml.SafeDumper)  # the dumper writes anchors for shared objects
    from orchestrator.definition.yamlsource import parse_yaml

    small = PipelineLimits(max_alias_nodes=50)
    plain, shared = parse_yaml(spelled), parse_yaml(aliased, small)
    if shared.problems:
        assert [p.message for p in shared.problems] == [
            "alias expands to more than 50 nodes (setting max_yaml_alias_nodes)"]
    else:
        assert shared.data == plain.data


@given(st.lists(st.sampled_from(["${{", "}}", "inputs", "steps", ".", "[", "]", "'", '"',
                                 "0", "-", "x", " ", "outputs", "secrets", "9" * 30]),
                max_size=40).map("".join))
@settings(max_examples=500, deadline=None)
def test_any_expression_text_parses_or_is_an_expression_error(text: str) -> None:
    from orchestrator.definition.expressions import ExpressionError, parse_template

    try:
        template = parse_template(text)
    except ExpressionError as exc:
        assert len(str(exc)) < 400
    else:
        assert all(ref.root for ref in template.references)
