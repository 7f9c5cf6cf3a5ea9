"""`validate` reports every problem of a pipeline file, each with its line, column and text."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import PipelineInvalid, Problem
from orchestrator.steps.builtin import load_pipeline
from tests.conftest import write


def problems_of(tmp_path: Path, text: str) -> list[Problem]:
    path = write(tmp_path / "p.yaml", text)
    with pytest.raises(PipelineInvalid) as caught:
        load_pipeline(path)
    return caught.value.problems


def only(tmp_path: Path, text: str) -> Problem:
    found = problems_of(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


def test_unknown_step_type_names_line_and_suggests(tmp_path: Path) -> None:
    """A misspelt `uses:` is reported at its value with the closest built-in type."""
    problem = only(tmp_path, """
        name: p
        steps:
          a:
            uses: core/ehco
    """)
    assert (problem.line, problem.col) == (4, 11)
    assert "unknown step type 'core/ehco'" in problem.message
    assert "did you mean 'core/echo'?" in problem.message


def test_unknown_needs_target(tmp_path: Path) -> None:
    """A `needs:` entry that is not a step is reported at that entry."""
    problem = only(tmp_path, """
        name: p
        steps:
          a: {uses: core/echo}
          b:
            uses: core/echo
            needs: [a, c]
    """)
    assert (problem.line, problem.col) == (6, 16)
    assert problem.message == "unknown step 'c' in needs (steps: a, b)"


def test_cycle_names_its_members(tmp_path: Path) -> None:
    """A cycle through needs: and an expression is reported once, with every member."""
    problem = only(tmp_path, """
        name: p
        steps:
          a:
            uses: core/echo
            with: {y: 1}
            needs: [c]
          b:
            uses: core/echo
            with: {x: "${{ steps.a.outputs.y }}"}
          c:
            uses: core/echo
            needs: b
    """)
    assert problem.message.startswith("dependency cycle: ")
    members = problem.message.split(": ", 1)[1].split(" (")[0].split(" -> ")
    assert set(members) == {"a", "b", "c"} and members[0] == members[-1]
    assert problem.line in (3, 7, 10)


def test_self_reference_is_a_problem(tmp_path: Path) -> None:
    """A step that reads its own outputs is told so."""
    problem = only(tmp_path, """
        name: p
        steps:
          a:
            uses: core/echo
            with: {x: "${{ steps.a.outputs.x }}"}
    """)
    assert problem.line == 5
    assert "a step cannot use its own outputs" in problem.message


def test_undefined_input(tmp_path: Path) -> None:
    """A reference to an input that is not declared lists the declared ones."""
    problem = only(tmp_path, """
        name: p
        inputs:
          model: {default: m}
        steps:
          a:
            uses: core/echo
            with:
              x: "${{ inputs.modle }}"
    """)
    assert (problem.line, problem.col) == (8, 10)
    assert problem.message == ("steps.a.with.x: 'inputs.modle' names an undefined input "
                               "'modle' (inputs: model)")


def test_undefined_step_in_reference(tmp_path: Path) -> None:
    """A reference to a step that does not exist suggests the closest one."""
    problem = only(tmp_path, """
        name: p
        steps:
          upload: {uses: core/echo, with: {file_id: f}}
          launch:
            uses: core/echo
            with: {file: "${{ steps.uplaod.outputs.file_id }}"}
    """)
    assert problem.line == 6
    assert "unknown step 'uplaod' in reference (did you mean 'upload'?" in problem.message


def test_output_the_upstream_step_does_not_declare(tmp_path: Path) -> None:
    """A step type that declares its outputs makes a wrong output name a validation error."""
    problem = only(tmp_path, """
        name: p
        steps:
          nap: {uses: core/sleep, with: {duration: 1s}}
          after:
            uses: core/echo
            with: {x: "${{ steps.nap.outputs.seconds }}"}
    """)
    assert problem.line == 6
    assert "step 'nap' (core/sleep) has no output 'seconds' (its outputs: slept)" in \
        problem.message


@pytest.mark.parametrize(("value", "line"), [
    pytest.param("5 minutes", 5, id="words"),
    pytest.param("-3s", 5, id="negative"),
    pytest.param("3 s", 5, id="space"),
])
def test_bad_duration_in_parameters(tmp_path: Path, value: str, line: int) -> None:
    """Durations must have a unit and no spaces; the message shows the accepted forms."""
    problem = only(tmp_path, f"""
        name: p
        steps:
          a:
            uses: core/sleep
            with: {{duration: "{value}"}}
    """.replace("            with", "            with", 1))
    assert problem.line == line
    assert f"bad duration '{value}'" in problem.message
    assert "30s, 5m, 2h" in problem.message


def test_bad_duration_in_timeout_and_defaults(tmp_path: Path) -> None:
    """A bad `timeout` is found both in defaults and on a step, in one pass."""
    found = problems_of(tmp_path, """
        name: p
        defaults:
          timeout: 5 minutes
        steps:
          a:
            uses: core/echo
            timeout: 1 hour
    """)
    assert [(p.line, p.message.split(":")[0]) for p in found] == [
        (3, "defaults.timeout"), (7, "steps.a.timeout")]


def test_wrong_parameter_type_for_a_literal(tmp_path: Path) -> None:
    """Literal parameters are checked against the step type's model at validate time."""
    problem = only(tmp_path, """
        name: p
        steps:
          a:
            uses: core/fail
            with:
              times: three
    """)
    assert (problem.line, problem.col) == (6, 14)
    assert problem.message.startswith("steps.a.with.times: input should be a valid integer")


def test_expression_parameters_are_not_checked_until_run_time(tmp_path: Path) -> None:
    """A parameter holding an expression may be a string now and an integer at run time."""
    path = write(tmp_path / "p.yaml", """
        name: p
        inputs:
          n: {type: integer, default: 2}
        steps:
          a:
            uses: core/fail
            with: {times: "${{ inputs.n }}"}
    """)
    assert list(load_pipeline(path).steps) == ["a"]


def test_missing_required_parameter(tmp_path: Path) -> None:
    """A required parameter that is absent is reported at the step's `with`."""
    problem = only(tmp_path, """
        name: p
        steps:
          a:
            uses: core/sleep
            with: {}
    """)
    assert problem.line == 5
    assert problem.message == "steps.a.with: missing required key 'duration'"


def test_duplicate_keys(tmp_path: Path) -> None:
    """A key given twice is reported at the second, naming the line of the first."""
    problem = only(tmp_path, """
        name: p
        steps:
          a: {uses: core/echo}
          a: {uses: core/sleep}
    """)
    assert (problem.line, problem.col) == (4, 3)
    assert problem.message == "duplicate key 'a' (first defined on line 3)"


def test_tabs_in_indentation(tmp_path: Path) -> None:
    """Every tab-indented line is reported, not PyYAML's cryptic scanner error."""
    found = problems_of(tmp_path, "name: p\nsteps:\n\ta:\n  \t  uses: core/echo\n")
    assert [(p.line, p.col, p.message) for p in found] == [
        (3, 1, "tab character in indentation; indent with spaces"),
        (4, 3, "tab character in indentation; indent with spaces"),
    ]


@pytest.mark.parametrize(("text", "kind"), [
    pytest.param("- a\n- b\n", "a list", id="list"),
    pytest.param("just text\n", "a str", id="scalar"),
])
def test_non_mapping_root(tmp_path: Path, text: str, kind: str) -> None:
    """The top level must be a mapping."""
    problem = only(tmp_path, text)
    assert problem.line == 1
    assert problem.message == f"the top level must be a mapping (name:, steps:, ...), not {kind}"


def test_empty_file(tmp_path: Path) -> None:
    """An empty file says what a pipeline needs."""
    problem = only(tmp_path, "\n")
    assert "empty pipeline file" in problem.message


def test_yaml_syntax_error_has_a_position(tmp_path: Path) -> None:
    """A YAML syntax error comes back as a problem with a line, not a traceback."""
    problem = only(tmp_path, """
        name: p
        steps:
          a: {uses: core/echo
          b: x
    """)
    assert problem.line == 4
    assert problem.message.startswith("YAML: ")


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    """A misspelt key is reported at the key with a suggestion."""
    problem = only(tmp_path, """
        name: p
        steps:
          a:
            uses: core/echo
            nedds: []
    """)
    assert (problem.line, problem.col) == (5, 5)
    assert problem.message == "unknown key 'nedds' in steps.a (did you mean 'needs'?)"


def test_a_known_key_in_the_wrong_place_says_where_it_belongs(tmp_path: Path) -> None:
    """Not "did you mean 'max_parallel'?" for max_parallel itself: it goes under matrix."""
    problem = only(tmp_path, """
        name: p
        matrix: {i: [1, 2]}
        max_parallel: 2
        steps:
          a: {uses: core/echo}
    """)
    assert problem.message == ("unknown key 'max_parallel' in the top level ('max_parallel' "
                               "belongs in matrix)")


def test_every_problem_in_one_pass(tmp_path: Path) -> None:
    """Problems in different steps and sections are all reported together, sorted by line."""
    found = problems_of(tmp_path, """
        name: p
        inputs:
          n: {type: integer, default: three}
        steps:
          a:
            uses: core/sleeep
            nedds: [b]
          b:
            uses: core/fail
            with: {times: x}
            timeout: forever
          c:
            uses: core/echo
            with: {v: "${{ inputs.m }}"}
            needs: [zz]
    """)
    assert [p.line for p in found] == [3, 6, 7, 10, 11, 14, 15]


def test_bad_expression_syntax_cannot_run_code(tmp_path: Path) -> None:
    """Anything but a reference is rejected: expressions can never execute code."""
    problem = only(tmp_path, """
        name: p
        steps:
          a:
            uses: core/echo
            with: {x: "${{ __import__('os').system('true') }}"}
    """)
    assert problem.message.startswith("steps.a.with.x: unexpected \"('os')")
    assert "expressions can only reference values" in problem.message


def test_expressions_outside_with_are_rejected(tmp_path: Path) -> None:
    """Only `with:` is evaluated; an expression elsewhere would silently stay text."""
    problem = only(tmp_path, """
        name: p
        steps:
          a:
            uses: core/echo
            description: "${{ inputs.x }}"
    """)
    assert problem.message == ("expressions are only evaluated inside a step's (or hook's) "
                               "with: and in concurrency.key")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    """An unreadable path is a problem of that path, not a traceback."""
    with pytest.raises(PipelineInvalid, match="no such file"):
        load_pipeline(tmp_path / "nope.yaml")
    with pytest.raises(PipelineInvalid, match="is a directory"):
        load_pipeline(tmp_path)


def test_problem_format_is_file_line_col() -> None:
    """The printed form is FILE:LINE:COL: message."""
    assert Problem(3, 7, "bad").format("p.yaml") == "p.yaml:3:7: bad"
