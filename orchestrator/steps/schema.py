"""The JSON Schema of pipeline files, generated from the pydantic models that check them.

An editor given it (VS Code's YAML extension: `# yaml-language-server: $schema=...`)
completes keys, step types and each type's parameters, and flags what `validate` would: a
misspelt key, a parameter a step type does not take, a literal of the wrong type. Generated,
not written, so it cannot drift from what the loader accepts: the pipeline's shape comes from
`definition.model`, each step type's `with:` from its parameter model, and a value may always be a
`${{ ... }}` expression instead (checked when the run resolves it). What only the whole file can
tell (references, the DAG) stays `validate`'s.
"""

from __future__ import annotations

import copy
from typing import Any

from orchestrator.definition.loader import HOOK_SECTIONS
from orchestrator.definition.model import ID_PATTERN, PipelineHeader, StepSpec
from orchestrator.steps.registry import PYTHON_PREFIX, StepRegistry

__all__ = ["SCHEMA_ID", "pipeline_schema"]

SCHEMA_ID = "https://orchestrator.invalid/pipeline.schema.json"
EXPRESSION = {"type": "string", "pattern": r"\$\{\{.*\}\}",
              "description": "an expression, resolved when the step runs: ${{ inputs.x }}"}


def _or_expression(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or an expression in its place (a string schema takes one already)."""
    if schema.get("type") == "string" and "pattern" not in schema and "enum" not in schema:
        return schema
    return {"anyOf": [schema, EXPRESSION], **({k: schema[k] for k in ("description", "title")
                                              if k in schema})}


def _expressions_allowed(schema: dict[str, Any]) -> dict[str, Any]:
    """Every property of every object in `schema` (and its $defs) may be an expression."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            properties = node.get("properties")
            if isinstance(properties, dict):
                for name, value in list(properties.items()):
                    walk(value)
                    properties[name] = _or_expression(value)
            for key, value in node.items():
                if key != "properties":
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    return schema


def _lift_defs(schema: dict[str, Any], into: dict[str, Any], prefix: str) -> dict[str, Any]:
    """`schema` with its own `$defs` moved into `into` under `prefix` (refs rewritten), so
    the parameter models of many step types live side by side in one document."""
    defs = schema.pop("$defs", {})
    text_refs = {f"#/$defs/{name}": f"#/$defs/{prefix}{name}" for name in defs}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (text_refs.get(v, v) if k == "$ref" else rewrite(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    for name, value in defs.items():
        into[f"{prefix}{name}"] = rewrite(value)
    return rewrite(schema)  # type: ignore[no-any-return]


def pipeline_schema(registry: StepRegistry) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a pipeline file whose steps use `registry`'s types."""
    schema = PipelineHeader.model_json_schema(by_alias=True)
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    step = _lift_defs(StepSpec.model_json_schema(by_alias=True), defs, "")
    types = registry.types()
    step["properties"]["uses"] = {
        "anyOf": [{"enum": sorted(t.name for t in types)},
                  {"type": "string", "pattern": f"^{PYTHON_PREFIX}[A-Za-z0-9_.]+:[A-Za-z_]\\w*$"},
                  {"type": "object", "properties": {"python": {"type": "string"}},
                   "required": ["python"], "additionalProperties": False}],
        "description": "a built-in step type, or python: package.module:function",
    }
    step["allOf"] = []
    for step_type in sorted(types, key=lambda t: t.name):
        slug = step_type.name.replace("/", "_").replace("-", "_")
        params = _lift_defs(_expressions_allowed(
            step_type.params.model_json_schema(by_alias=True)), defs, f"{slug}__")
        params.setdefault("description", step_type.summary)
        defs[f"with__{slug}"] = params
        step["allOf"].append({
            "if": {"properties": {"uses": {"const": step_type.name}}, "required": ["uses"]},
            "then": {"properties": {"with": {"$ref": f"#/$defs/with__{slug}"}}},
        })
    defs["Step"] = step
    steps = {"type": "object", "minProperties": 1, "propertyNames": {"pattern": ID_PATTERN},
             "additionalProperties": {"$ref": "#/$defs/Step"}}
    schema["properties"]["steps"] = {
        **steps, "description": "the steps by id; `needs:` and the expressions they use order "
                                "them"}
    for section in HOOK_SECTIONS:
        described = schema["properties"][section].get("description", "")
        schema["properties"][section] = {**steps, "description": f"{described}; in order, "
                                                                 "after the steps"}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "orchestrator pipeline", **schema}
