"""`validate` and `orchestrator schema` (what editors check files with) agree: on a corpus of
files people write, each valid or with one mistake of shape, one accepts what the other
accepts; on every other file of the tests (the hostile corpus, the shipped pipelines), a file
the schema refuses is refused by `validate` too."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from orchestrator.definition.yamlsource import parse_yaml
from orchestrator.errors import PipelineInvalid
from orchestrator.steps.builtin import BUILTIN, load_pipeline
from orchestrator.steps.schema import pipeline_schema
from tests.conftest import REPO

AGREEMENT = Path(__file__).parent / "agreement"
OTHERS = [*sorted((REPO / "pipelines").glob("*.yaml")),
          *sorted((REPO / "tests" / "hostile" / "pipelines").glob("*.yaml"))]
VALIDATOR = jsonschema.Draft202012Validator(pipeline_schema(BUILTIN))


def _validate(path: Path) -> bool:
    try:
        load_pipeline(path)
    except PipelineInvalid:
        return False
    return True


def _schema_accepts(path: Path) -> bool | None:
    """The schema's verdict on the file as the orchestrator reads it (YAML 1.2: `on` is a
    key, not true); None for a file that is not YAML at all."""
    try:
        data = parse_yaml(path.read_text(encoding="utf-8")).data
    except (UnicodeDecodeError, ValueError):
        return None
    if data is None:
        return None
    return not any(True for _ in VALIDATOR.iter_errors(json.loads(json.dumps(data))))


@pytest.mark.parametrize("path", sorted(AGREEMENT.glob("*.yaml")), ids=lambda p: p.name)
def test_validate_and_the_schema_give_the_same_verdict(path: Path) -> None:
    expected = path.name.startswith("ok-")
    assert _validate(path) is expected
    assert _schema_accepts(path) is expected


@pytest.mark.parametrize("path", OTHERS, ids=lambda p: p.name)
def test_what_the_schema_refuses_validate_refuses(path: Path) -> None:
    verdict = _schema_accepts(path)
    if verdict is False:
        assert not _validate(path)
    if _validate(path):
        assert verdict is True


@pytest.mark.parametrize(("name", "message"), [
    ("param-name-in-an-expression.yaml", "10:7: unknown key 'lora_rank' in steps.launch.with "
                                         "(did you mean 'lora_r'?)"),
    ("input-type-int.yaml", "3:18: inputs.epochs.type: input should be 'string', 'integer', "
                            "'number', 'boolean', 'path', 'duration', 'list' or 'object' (did "
                            "you mean 'integer'?)"),
    ("expect-contain.yaml", "5:45: unknown key 'contain' in steps.smoke.with.expect (did you "
                            "mean 'contains'?)"),
    ("top-level-on.yaml", "2:1: unknown key 'on' in the top level (a pipeline runs when you run "
                          "it, a worker takes it, or its schedule: fires)"),
    ("step-need.yaml", "4:24: unknown key 'need' in steps.b (did you mean 'needs'?)"),
])
def test_a_mistake_is_one_line_with_the_key_of_its_place(name: str, message: str) -> None:
    """A parameter's name is checked whatever its value (an expression too: `lora_rank`
    passed, then every cell failed at launch, after uploading); the suggestion is a key of
    the place the mistake is in (`on:` was offered `cron`, a key of schedule:)."""
    with pytest.raises(PipelineInvalid) as caught:
        load_pipeline(AGREEMENT / name)
    assert str(caught.value) == f"{AGREEMENT / name}:{message}"


def test_a_known_key_in_the_wrong_place_says_where_it_goes(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\ncron: '0 2 * * *'\nsteps:\n  a: {uses: core/echo}\n")
    with pytest.raises(PipelineInvalid, match=r"unknown key 'cron' in the top level \('cron' "
                                              r"belongs in schedule\)"):
        load_pipeline(path)
