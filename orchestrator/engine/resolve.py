"""Evaluating a step's `with:` in its run: inputs, run info, secrets and upstream outputs.

The same resolution serves two purposes: the parameters a step runs with, and the step's
*configuration hash*, which `resume --reload` compares to tell a changed step from an unchanged
one. The hash sees `${{ secrets.X }}` as written, never the secret's value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from orchestrator.definition.expressions import ExpressionError, Reference, lookup, render
from orchestrator.definition.pipeline import Pipeline, Step
from orchestrator.store.records import RunRecord, StepRecord, StepStatus

__all__ = ["Resolution", "same_config"]

CONFIG_HASH_DIGITS = 12


def same_config(stored: str | None, digest: str | None) -> bool:
    """Whether a step's stored hash is that of `digest`'s configuration (None: no hash, or one
    that cannot be computed now); a hash stored with more digits (16, by earlier versions) is
    compared on the digits both have."""
    if stored is None or digest is None:
        return stored == digest
    return stored[:CONFIG_HASH_DIGITS] == digest


class Resolution:
    """Looks up the values a run's expressions refer to.

    It holds the run and its records and builds a root (`run`, `steps.X`) only when an
    expression reads it: a waiting run keeps no dicts of values nothing reads."""

    __slots__ = ("_outcome", "_records", "_run", "_run_name", "_secrets")

    def __init__(self, run: RunRecord, run_name: str, records: Mapping[str, StepRecord],
                 secrets: Mapping[str, str]) -> None:
        self._run = run
        self._run_name = run_name
        self._records = records
        """Read at each lookup: the executor's own, updated as steps finish."""
        self._secrets = secrets
        self._outcome: tuple[str, str | None, str | None] = ("running", None, None)

    @classmethod
    def of_run(cls, run: RunRecord, pipeline: Pipeline, records: Mapping[str, StepRecord],
               secrets: Mapping[str, str]) -> Resolution:
        """The resolution of `run`: upstream outputs are those of its succeeded steps in
        `records`, read at each lookup (so an executor's records, updated as steps finish)."""
        return cls(run, pipeline.name, records, secrets)

    def outcome(self, status: str, error: str | None, failed_step: str | None) -> None:
        """What the run's hooks read of it once its steps ended (`run.status`, ...)."""
        self._outcome = (status, error, failed_step)

    def _root(self, name: str) -> Any:
        if name == "inputs":
            return self._run.inputs
        if name == "secrets":
            return self._secrets
        if name == "matrix":
            return self._run.matrix or {}
        status, error, failed_step = self._outcome  # "run", the one root left (ROOTS)
        return {"id": self._run.id, "name": self._run_name, "status": status, "error": error,
                "failed_step": failed_step}

    def _resolve(self, ref: Reference) -> Any:
        if ref.root == "steps":
            target = str(ref.path[0])
            record = self._records.get(target)
            if record is None or record.status is not StepStatus.SUCCEEDED \
                    or record.outputs is None:
                msg = f"{ref}: step '{target}' has not succeeded, so it has no outputs yet"
                raise ExpressionError(msg, ref.offset)
            return lookup({target: {"outputs": record.outputs}}, ref)
        if ref.root == "secrets" and ref.path and ref.path[0] not in self._secrets:
            msg = f"{ref}: the secret {ref.path[0]} is not set in the environment"
            raise ExpressionError(msg, ref.offset)
        return lookup(self._root(ref.root), ref)

    def _resolve_for_hash(self, ref: Reference) -> Any:
        return f"${{{{ {ref.text} }}}}" if ref.root == "secrets" else self._resolve(ref)

    def params(self, step: Step) -> dict[str, Any]:
        """The step's `with:`, every expression replaced by its value. Raises ExpressionError."""
        rendered: dict[str, Any] = render(step.with_, self._resolve)
        return rendered

    def key(self, template: str) -> str:
        """A concurrency key with its expressions (inputs, matrix, run) filled in."""
        value = render(template, self._resolve)
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    def config_hash(self, step: Step, *, rendered: Mapping[str, Any] | None = None) -> str:
        """A digest of what the step would run with (its type and resolved parameters).

        `rendered`, the parameters the step just ran with, saves rendering them again when the
        step uses no secrets (whose values must not enter the hash). Twelve hex digits (48
        bits) tell one step's configuration from its next: a change goes unseen once in 10^14,
        and every stored step carries it (it had 16 digits once: see `same_config`).
        """
        if rendered is None or step.uses_secrets:
            rendered = render(step.with_, self._resolve_for_hash)
        blob = json.dumps({"uses": step.spec.uses, "with": rendered}, sort_keys=True,
                          default=str, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:CONFIG_HASH_DIGITS]
