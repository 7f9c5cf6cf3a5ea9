"""Pipeline files to `Pipeline` objects, reporting every problem found in one pass.

Each problem names a line and column. Checking goes on past a bad part wherever the rest can
still be understood, so one `validate` shows the author everything at once: the shape of each
part (pydantic), then step types, literal parameters, references and the step graph.

(Over 400 lines: one checker walks the file once, carrying the source positions and the
problems found so far through every check; the result it builds is `definition.pipeline`.)
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from orchestrator.definition.expressions import (
    ExpressionError,
    Reference,
    find_templates,
    parse_template,
)
from orchestrator.definition.graph import ancestors, order_or_cycle
from orchestrator.definition.hints import choice_hint, keys_at, unknown_key_hint
from orchestrator.definition.inputs import coerce_input
from orchestrator.definition.limits import DEFAULT_LIMITS, PipelineLimits
from orchestrator.definition.matrix import MatrixSpec, combinations, expand_matrix
from orchestrator.definition.model import (
    DEFAULT_RETRY,
    ID_PATTERN,
    Defaults,
    InputSpec,
    PipelineHeader,
    RetrySpec,
    ScheduleSpec,
    StepSpec,
)
from orchestrator.definition.pipeline import Pipeline, Step
from orchestrator.definition.steptypes import StepCatalogue, StepKind, UnknownStepType
from orchestrator.definition.yamlsource import NodePath, SourceMap, parse_yaml
from orchestrator.errors import PipelineInvalid, Problem
from orchestrator.inputfiles import NotUTF8, UnreadableFile, read_regular, utf8_text

__all__ = ["HOOK_SECTIONS", "load_file", "load_text"]

_ID = re.compile(ID_PATTERN)
_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEY_PATH = ("concurrency", "key")
"""The one place outside a step's `with:` that may hold expressions (of inputs, matrix, run)."""
_KEY_ROOTS = ("inputs", "matrix", "run")
HOOK_SECTIONS = ("on_success", "on_failure")
"""Steps run after the others end, by the run's outcome (ids `on_failure.<name>`)."""
_RUN_FIELDS = ("id", "name")
_HOOK_RUN_FIELDS = (*_RUN_FIELDS, "status", "error", "failed_step")
"""What hooks may read of the run: also its outcome, known once the other steps ended."""
_NOT_EVALUATED = ("expressions are only evaluated inside a step's (or hook's) with: and in "
                  "concurrency.key")

def load_file(path: str | Path, *, registry: StepCatalogue,
              limits: PipelineLimits = DEFAULT_LIMITS) -> Pipeline:
    """Read and validate a pipeline file; raises PipelineInvalid listing every problem."""
    file = Path(path)
    try:
        text = utf8_text(read_regular(file, max_bytes=limits.max_bytes,
                                      setting="max_pipeline_bytes"))
    except NotUTF8 as exc:
        problem = Problem(exc.line, exc.col, f"not UTF-8 text (byte 0x{exc.byte:02x})")
        raise PipelineInvalid(str(path), [problem]) from None
    except UnreadableFile as exc:
        raise PipelineInvalid(str(path), [Problem(1, 1, str(exc))]) from None
    return load_text(text, file, registry=registry, limits=limits)


def load_text(text: str, path: Path, *, registry: StepCatalogue,
              limits: PipelineLimits = DEFAULT_LIMITS) -> Pipeline:
    """Validate pipeline `text` as if read from `path` (resumed runs use their stored text)."""
    checker = _Checker(path, registry, limits)
    with _collector_paused():
        pipeline = checker.check(text)
    if checker.problems or pipeline is None:
        raise PipelineInvalid(str(path), checker.problems)
    return pipeline


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Checking a file makes some ten objects per node and keeps most until it ends; the cyclic
    garbage collector, run every 700 allocations, would walk them again and again for garbage
    reference counting frees anyway: half the time of a 10,000-step load (measured)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Checker:
    """Collects problems while building a Pipeline; see the module docstring for the order."""

    def __init__(self, path: Path, registry: StepCatalogue, limits: PipelineLimits) -> None:
        self.path = path
        self.limits = limits
        self.base_dir = path.resolve().parent
        self.registry = registry
        self.problems: list[Problem] = []
        self.source = SourceMap()
        self.matrix_keys: frozenset[str] | None = None

    # -- reporting ---------------------------------------------------------------------------

    def report(self, path: NodePath, message: str, *, at_key: bool = False) -> None:
        pos = self.source.locate(path, prefer_key=at_key)
        self.problems.append(Problem(pos.line, pos.col, message))

    def report_validation(self, exc: ValidationError, prefix: NodePath, data: Any,
                          skip: set[NodePath] | None = None,
                          model: type[BaseModel] | None = None) -> None:
        """Each of `exc`'s errors as a problem at its place; `skip` holds the places whose
        values are expressions (checked when the step runs: a key there is still checked
        now); `model` the one validated, whose keys a misspelt key is compared with."""
        for error in exc.errors(include_url=False):
            loc = _data_path(data, tuple(error["loc"]))
            kind = error["type"]
            if kind != "extra_forbidden" and skip and any(loc[: len(p)] == p for p in skip):
                continue
            where = ".".join(map(str, (*prefix, *loc))) or "pipeline"
            if kind == "extra_forbidden":
                key = str(loc[-1])
                hint = unknown_key_hint(key, keys_at(model, loc[:-1]))
                parent = ".".join(map(str, (*prefix, *loc[:-1]))) or "the top level"
                self.report((*prefix, *loc), f"unknown key '{key}' in {parent}{hint}",
                            at_key=True)
            elif kind == "missing":
                parent = ".".join(map(str, (*prefix, *loc[:-1]))) or "the top level"
                self.report((*prefix, *loc[:-1]), f"{parent}: missing required key '{loc[-1]}'",
                            at_key=True)
            else:
                message = str(error["msg"]).removeprefix("Value error, ")
                if kind in ("literal_error", "enum"):
                    message += choice_hint(error.get("input"),
                                            str((error.get("ctx") or {}).get("expected", "")))
                self.report((*prefix, *loc), f"{where}: {message[0].lower()}{message[1:]}")

    # -- the passes --------------------------------------------------------------------------

    def check(self, text: str) -> Pipeline | None:
        doc = parse_yaml(text, self.limits)
        self.source = doc.source
        self.problems.extend(doc.problems)
        data = doc.data
        if data is None:
            if not doc.problems:
                self.problems.append(Problem(1, 1, "empty pipeline file: expected a mapping "
                                                   "with at least name: and steps:"))
            return None
        if not isinstance(data, dict):
            kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
            self.report((), f"the top level must be a mapping (name:, steps:, ...), not {kind}")
            return None
        header = self._header(data)
        raw_steps = data.get("steps")
        if not isinstance(raw_steps, dict):
            return None
        inputs = header.inputs if header else self._inputs_alone(data.get("inputs"))
        defaults = header.defaults if header else Defaults()
        matrix = header.matrix if header else _part_alone(data.get("matrix"), MatrixSpec)
        self.matrix_keys = matrix.keys if matrix is not None else None
        if matrix is not None:
            self._matrix_size(matrix)
        self._key_references((), data.get("concurrency"), inputs)
        if header is not None and header.schedule is not None:
            self._schedule_inputs(header.schedule, inputs)
        specs = self._step_specs(raw_steps)
        hook_specs = self._hook_specs(data)
        types = {sid: t for sid, spec in {**specs, **hook_specs}.items()
                 if (t := self._step_type(sid, spec)) is not None}
        needs = {sid: self._needs(sid, spec, specs, types, inputs)
                 for sid, spec in specs.items()}
        for hid, spec in hook_specs.items():
            self._needs(hid, spec, specs, types, inputs)  # checked; hooks run in file order
        for sid, spec in {**specs, **hook_specs}.items():
            if sid in types:
                self._literal_params(sid, spec, types[sid])
        for sid, raw in raw_steps.items():
            if sid in specs and isinstance(raw, dict):
                self._key_references(("steps", sid), raw.get("concurrency"), inputs)
        order = self._order(needs)
        if order is not None:
            self._slot_until(specs, needs)
        if header is not None and header.select is not None and header.matrix is None:
            self.report(("select",), "select: ranks a batch's cells; this pipeline has no "
                                     "matrix: (a single run has nothing to choose between)")
        if header is None or self.problems or order is None:
            return None
        steps = {
            sid: Step(sid, specs[sid], types[sid], frozenset(needs[sid]),
                      _effective_retry(specs[sid], defaults), _effective_timeout(specs[sid],
                                                                                 defaults))
            for sid in order
        }
        hooks = {section: {hid: Step(hid, spec, types[hid], frozenset(),
                                     _effective_retry(spec, defaults),
                                     _effective_timeout(spec, defaults))
                           for hid, spec in hook_specs.items() if hid.startswith(f"{section}.")}
                 for section in HOOK_SECTIONS}
        return Pipeline(header.name, header.description, self.path, text, header.inputs, steps,
                        matrix=header.matrix, concurrency=header.concurrency,
                        schedule=header.schedule, budget=header.budget, select=header.select,
                        hooks={k: v for k, v in hooks.items() if v})

    def _header(self, data: dict[str, Any]) -> PipelineHeader | None:
        header = None
        skip: set[NodePath] = {(section,) for section in HOOK_SECTIONS}  # checked as steps
        matrix = data.get("matrix")
        if isinstance(matrix, dict):
            for axis, message in MatrixSpec.axis_problems(matrix):
                self.report(("matrix", axis), f"matrix.{axis}: {message}")
                skip.add(("matrix",))
        try:
            header = PipelineHeader.model_validate(data)
        except ValidationError as exc:
            self.report_validation(exc, (), data, skip=skip, model=PipelineHeader)
        outside = {k: v for k, v in data.items() if k != "steps" and k not in HOOK_SECTIONS}
        for path, _ in find_templates(outside):
            if path != _KEY_PATH:
                self.report(path, _NOT_EVALUATED)
        inputs = data.get("inputs")
        if isinstance(inputs, dict):
            for name, spec in inputs.items():
                if not _ID.match(name):
                    self.report(("inputs", name), f"input name '{name}' must start with a letter "
                                "or _ and hold only letters, digits, _ and -", at_key=True)
                self._input_default(name, spec)
        return header

    def _input_default(self, name: str, raw: Any) -> None:
        if not isinstance(raw, dict) or raw.get("default") is None:
            return
        try:
            spec = InputSpec.model_validate(raw)
            coerce_input(spec.type, spec.default)
        except ValidationError:
            return  # reported with the header
        except ValueError as exc:
            self.report(("inputs", name, "default"), f"inputs.{name}.default: {exc} "
                        f"(the input's type is {raw.get('type', 'string')})")

    def _inputs_alone(self, raw: Any) -> dict[str, InputSpec]:
        """The inputs of a file whose header has other problems (to keep checking refs): an
        input whose own declaration is wrong (`type: int`) is still declared, as any type, so
        the references to it are not reported as well."""
        if not isinstance(raw, dict):
            return {}
        valid = {}
        for name, spec in raw.items():
            try:
                valid[name] = InputSpec.model_validate(spec)
            except ValidationError:
                valid[str(name)] = InputSpec(type="object", default=None)
        return valid

    @staticmethod
    def _where(sid: str) -> NodePath:
        """Where a step is in the file: `steps.<id>`, or a hook's `on_failure.<name>`."""
        section, dot, name = sid.partition(".")
        return (section, name) if dot else ("steps", sid)

    def _hook_specs(self, data: dict[str, Any]) -> dict[str, StepSpec]:
        """The steps of `on_success:` and `on_failure:`, by id `on_failure.<name>`."""
        specs: dict[str, StepSpec] = {}
        for section in HOOK_SECTIONS:
            raw = data.get(section)
            if raw is None:
                continue
            if not isinstance(raw, dict) or not raw:
                self.report((section,), f"{section}: expected a mapping of steps (name: "
                                        "{uses: ..., with: ...}), run after the others end")
                continue
            hooks = self._step_specs(raw, section)
            for hid, spec in hooks.items():
                if spec.needs:
                    self.report((*self._where(hid), "needs"), f"{hid}.needs: hooks run in the "
                                "order they are written, after every step; they take no needs:")
                if spec.concurrency is not None:
                    self.report((*self._where(hid), "concurrency"),
                                f"{hid}.concurrency: hooks take no concurrency:")
            specs.update(hooks)
        return specs

    def _step_specs(self, raw_steps: dict[str, Any],
                    section: str = "steps") -> dict[str, StepSpec]:
        specs: dict[str, StepSpec] = {}
        for name, raw in raw_steps.items():
            sid = name if section == "steps" else f"{section}.{name}"
            where = (section, name)
            if not isinstance(name, str) or not _ID.match(name):
                self.report(where, f"step id '{name}' must start with a letter or _ and "
                            "hold only letters, digits, _ and -", at_key=True)
                continue
            if not isinstance(raw, dict):
                self.report(where, f"step '{name}' must be a mapping with at least uses:")
                continue
            try:
                specs[sid] = StepSpec.model_validate(raw)
            except ValidationError as exc:
                self.report_validation(exc, where, raw, model=StepSpec)
                # Keep checking the rest of the step: drop the keys that are wrong and retry.
                bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
                with contextlib.suppress(ValidationError):
                    specs[sid] = StepSpec.model_validate(
                        {k: v for k, v in raw.items() if k not in bad})
            outside_with = {k: v for k, v in raw.items() if k != "with"}
            for path, _ in find_templates(outside_with, where):
                if path != (*where, *_KEY_PATH):
                    self.report(path, _NOT_EVALUATED)
        return specs

    def _step_type(self, sid: str, spec: StepSpec) -> StepKind | None:
        where = (*self._where(sid), "uses")
        try:
            return self.registry.resolve(spec.uses, self.base_dir)
        except UnknownStepType as exc:
            self.report(where, f"{_dotted(where)}: {exc}")
            return None

    def _literal_params(self, sid: str, spec: StepSpec, step_type: StepKind) -> None:
        """Check the parameters known now; ones holding expressions are checked at run time."""
        expression_paths = {path for path, _ in find_templates(spec.with_)}
        try:
            step_type.params.model_validate(spec.with_)
        except ValidationError as exc:
            self.report_validation(exc, (*self._where(sid), "with"), spec.with_,
                                   skip=expression_paths, model=step_type.params)

    def _needs(self, sid: str, spec: StepSpec, specs: Mapping[str, StepSpec],
               types: Mapping[str, StepKind], inputs: Mapping[str, InputSpec]) -> set[str]:
        """Explicit `needs` plus every step this one's expressions reference."""
        needs: set[str] = set()
        for i, need in enumerate(spec.needs):
            if need in specs:
                needs.add(need)
            else:
                self.report((*self._where(sid), "needs", i),
                            _unknown_step(need, "needs", specs))
        for path, text in find_templates(spec.with_, (*self._where(sid), "with")):
            try:
                template = parse_template(text)
            except ExpressionError as exc:
                self.report(path, f"{_dotted(path)}: {exc}")
                continue
            for ref in template.references:
                message = self._reference_problem(sid, ref, specs, types, inputs)
                if message:
                    self.report(path, f"{_dotted(path)}: {message}")
                if ref.root == "steps" and ref.path and ref.path[0] in specs \
                        and ref.path[0] != sid:
                    needs.add(str(ref.path[0]))  # an edge even if the output name is wrong
        return needs

    def _reference_problem(self, sid: str, ref: Reference, specs: Mapping[str, StepSpec],
                           types: Mapping[str, StepKind],
                           inputs: Mapping[str, InputSpec]) -> str | None:
        path = ref.path
        if ref.root == "inputs":
            if not path:
                return None
            if path[0] not in inputs:
                known = ", ".join(sorted(inputs)) or "none are declared"
                return f"'{ref}' names an undefined input '{path[0]}' (inputs: {known})"
            return None
        if ref.root == "steps":
            if not path:
                return f"'{ref}' must name a step: steps.<id>.outputs.<name>"
            target = str(path[0])
            if target not in specs:
                return f"'{ref}': " + _unknown_step(target, "reference", specs)
            if len(path) < 2 or path[1] != "outputs":
                return f"'{ref}': a step is referenced as steps.{target}.outputs.<name>"
            if target == sid:
                return f"'{ref}': a step cannot use its own outputs"
            if len(path) >= 3 and target in types:
                declared = types[target].outputs(specs[target].with_)
                if declared is not None and path[2] not in declared:
                    listed = ", ".join(sorted(declared)) or "none"
                    return (f"'{ref}': step '{target}' ({specs[target].uses}) has no output "
                            f"'{path[2]}' (its outputs: {listed})")
            return None
        if ref.root == "matrix":
            if self.matrix_keys is None:
                return f"'{ref}': this pipeline has no matrix:"
            if path and path[0] not in self.matrix_keys:
                known = ", ".join(sorted(self.matrix_keys))
                return f"'{ref}' names no matrix key '{path[0]}' (matrix keys: {known})"
            return None
        if ref.root == "run":
            fields = _HOOK_RUN_FIELDS if "." in sid else _RUN_FIELDS
            if len(path) != 1 or path[0] not in fields:
                known = ", ".join(f"run.{f}" for f in fields)
                extra = "" if "." in sid else " (hooks also read run.status, run.error and " \
                                               "run.failed_step)"
                return f"'{ref}': run has only {known}{extra}"
            return None
        if len(path) != 1 or not _SECRET_NAME.match(str(path[0])):
            return f"'{ref}': a secret is referenced as secrets.NAME (letters, digits and _)"
        return None

    def _key_references(self, prefix: NodePath, raw: Any,
                        inputs: Mapping[str, InputSpec]) -> None:
        """A concurrency key's expressions: only inputs, matrix and run (known before steps run;
        never secrets, since keys are stored and shown)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("key"), str):
            return
        path = (*prefix, *_KEY_PATH)
        try:
            template = parse_template(raw["key"])
        except ExpressionError as exc:
            self.report(path, f"{_dotted(path)}: {exc}")
            return
        for ref in template.references:
            if ref.root not in _KEY_ROOTS:
                message: str | None = (f"'{ref}': a concurrency key can use "
                                       f"{', '.join(_KEY_ROOTS)}, not {ref.root}")
            else:
                message = self._reference_problem("", ref, {}, {}, inputs)
            if message:
                self.report(path, f"{_dotted(path)}: {message}")

    def _matrix_size(self, matrix: MatrixSpec) -> None:
        """At most `max_cells` cells; counted without expanding a matrix far beyond that."""
        limit = self.limits.max_cells
        bound = combinations(matrix)
        if bound <= limit:
            return
        if bound > 10 * limit:
            self.report(("matrix",), f"matrix: its axes make {bound:,} cells before exclude; "
                        f"at most {limit:,} (setting max_matrix_cells)", at_key=True)
            return
        count = len(expand_matrix(matrix))
        if count > limit:
            self.report(("matrix",), f"matrix: {count:,} cells; at most {limit:,} (setting "
                        "max_matrix_cells)", at_key=True)

    def _schedule_inputs(self, schedule: ScheduleSpec, inputs: Mapping[str, InputSpec]) -> None:
        for name, value in schedule.inputs.items():
            where = ("schedule", "inputs", name)
            if name not in inputs:
                known = ", ".join(sorted(inputs)) or "none are declared"
                self.report(where, f"schedule.inputs: unknown input '{name}' (inputs: {known})",
                            at_key=True)
                continue
            try:
                coerce_input(inputs[name].type, value)
            except ValueError as exc:
                self.report(where, f"schedule.inputs.{name}: {exc} (the input's type is "
                                   f"{inputs[name].type})")
        for name, spec in inputs.items():
            if spec.required and name not in schedule.inputs:
                self.report(("schedule",), f"schedule: input '{name}' has no default; give it "
                                           "in schedule.inputs", at_key=True)

    def _slot_until(self, specs: Mapping[str, StepSpec], needs: dict[str, set[str]]) -> None:
        """`concurrency.until` names a step that comes after (depends on) this one."""
        for sid, spec in specs.items():
            until = spec.concurrency.until if spec.concurrency else None
            if until is None:
                continue
            where = ("steps", sid, "concurrency", "until")
            if until not in specs:
                self.report(where, f"steps.{sid}.concurrency.until: "
                            + _unknown_step(until, "until", specs))
            elif sid not in ancestors(needs, {until}):
                self.report(where, f"steps.{sid}.concurrency.until: step '{until}' does not "
                            f"come after '{sid}' (it must depend on {sid}, directly or not)")

    def _order(self, needs: dict[str, set[str]]) -> list[str] | None:
        order, cycle = order_or_cycle(needs)
        if cycle is not None:
            members = " -> ".join(cycle)
            self.report(("steps", cycle[0]), f"dependency cycle: {members} "
                        "(each step needs the next, through needs: or an expression)",
                        at_key=True)
            return None
        return order


def _part_alone(raw: Any, model: type[MatrixSpec]) -> MatrixSpec | None:
    """A valid part of a file whose header has problems elsewhere (to keep checking refs)."""
    if raw is None:
        return None
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


def _unknown_step(name: str, where: str, specs: Mapping[str, StepSpec]) -> str:
    close = difflib.get_close_matches(name, list(specs), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown step '{name}' in {where} ({hint}steps: {', '.join(specs)})"


def _dotted(path: NodePath) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _data_path(data: Any, loc: tuple[Any, ...]) -> NodePath:
    """The part of a pydantic error location that is a path in the data.

    pydantic puts union member tags into locations (`retry.RetrySpec.max_attempts`); those are
    not keys of the data and are dropped. A last part absent from its mapping is a missing key
    and is kept.
    """
    path: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        if isinstance(current, dict):
            if part in current:
                current = current[part]
                path.append(part)
            elif i == len(loc) - 1:
                path.append(part)
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
            path.append(part)
    return tuple(path)


def _effective_retry(spec: StepSpec, defaults: Defaults) -> RetrySpec | None:
    if spec.inherits("retry"):
        return defaults.retry
    if spec.retry is None:
        return None
    return spec.retry.merged_over(defaults.retry or DEFAULT_RETRY)


def _effective_timeout(spec: StepSpec, defaults: Defaults) -> float | None:
    return defaults.timeout if spec.inherits("timeout") else spec.timeout
