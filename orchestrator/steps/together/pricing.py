"""What a pipeline's (or a batch's) fine-tunes would cost, before any of them is launched.

For every `together/launch-fine-tune` step of every cell, its parameters are filled in from the
inputs and the cell's matrix values, and its training (and validation) file from the
`together/upload-file` step it reads: that dataset is checked, and uploaded as the step would
upload it (same name, deduplicated by checksum, so the run later finds it there and reuses
it), because Together prices a job by a file it holds (`POST /fine-tunes/estimate-price`).
A launch whose parameters are known only at run time (another step's output, `run.id`) is
listed with the reason it has no estimate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from pydantic import ValidationError

from orchestrator.definition.expressions import ExpressionError, Reference, lookup, render
from orchestrator.errors import StepError
from orchestrator.log import get_logger
from orchestrator.protocol.datacheck import check_file
from orchestrator.providers.together.requests import estimate_request, fine_tune_request
from orchestrator.steps.together.launch import LaunchParams
from orchestrator.steps.together.upload import UploadParams, place_file, upload_name

if TYPE_CHECKING:
    from orchestrator.definition.pipeline import Pipeline
    from orchestrator.providers.together.client import TogetherClient

__all__ = ["LAUNCH", "LaunchPrice", "has_launches", "price_launches", "total_usd"]

LAUNCH = "together/launch-fine-tune"
UPLOAD = "together/upload-file"


@dataclasses.dataclass(frozen=True)
class LaunchPrice:
    """One fine-tune a run would launch: its step, its cell of the matrix, and its price."""

    step: str
    cell: Mapping[str, Any]
    usd: float | None = None
    tokens: int | None = None
    unknown: str | None = None
    """Why there is no estimate (None when there is one)."""

    @property
    def label(self) -> str:
        values = ", ".join(f"{k}={v}" for k, v in self.cell.items())
        return f"{self.step} [{values}]" if values else self.step

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "cell": dict(self.cell), "estimated_price_usd": self.usd,
                "estimated_tokens": self.tokens, "unknown": self.unknown}


class _Unknown(Exception):
    """A value the launch needs that only the run will know."""


def has_launches(pipeline: Pipeline) -> bool:
    return any(step.spec.uses == LAUNCH for step in pipeline.steps.values())


def total_usd(prices: list[LaunchPrice]) -> float:
    return sum(price.usd or 0.0 for price in prices)


Uploaded = Callable[[Path, str], Awaitable[None]]
"""Told of each dataset uploaded to price a launch (its path and file id)."""


async def price_launches(pipeline: Pipeline, inputs: Mapping[str, Any], client: TogetherClient,
                         *, uploaded: Uploaded | None = None) -> list[LaunchPrice]:
    """The estimated price of every fine-tune `pipeline` would launch (each cell's, for a
    matrix), in step order."""
    pricer = _Pricer(pipeline, inputs, client, uploaded)
    return [await pricer.price(sid, cell) for cell in pipeline.cells()
            for sid, step in pipeline.steps.items() if step.spec.uses == LAUNCH]


class _Pricer:
    """Prices launches of one pipeline, each dataset checked and placed on the provider once."""

    def __init__(self, pipeline: Pipeline, inputs: Mapping[str, Any], client: TogetherClient,
                 uploaded: Uploaded | None) -> None:
        self.pipeline = pipeline
        self.inputs = inputs
        self.client = client
        self.uploaded = uploaded
        self.files: dict[tuple[Path, str], str] = {}
        self._log = get_logger(component="pricing")

    async def price(self, sid: str, cell: Mapping[str, Any]) -> LaunchPrice:
        try:
            params = await self._params(sid, cell)
            request = await fine_tune_request(self.client, params.model_dump(),
                                              suffix="estimate")
            estimate = await self.client.estimate_price(estimate_request(request))
        except _Unknown as exc:
            return LaunchPrice(sid, cell, unknown=str(exc))
        except StepError as exc:
            return LaunchPrice(sid, cell, unknown=f"the provider gave none: {exc}")
        if estimate.usd is None:
            return LaunchPrice(sid, cell, unknown=estimate.unavailable_reason
                               or "the provider gave none")
        return LaunchPrice(sid, cell, usd=estimate.usd, tokens=estimate.tokens)

    async def _params(self, sid: str, cell: Mapping[str, Any]) -> LaunchParams:
        pending: dict[str, tuple[Path, str]] = {}

        def value(ref: Reference) -> Any:
            if ref.root == "inputs":
                return lookup(self.inputs, ref)
            if ref.root == "matrix":
                return lookup(cell, ref)
            if ref.root == "steps" and ref.path[1:3] == ("outputs", "file_id"):
                upstream = self.pipeline.steps.get(str(ref.path[0]))
                if upstream is not None and upstream.spec.uses == UPLOAD:
                    marker = f"<file {len(pending)}>"
                    pending[marker] = _dataset(self.pipeline, upstream.id, self.inputs, cell)
                    return marker
            raise _Unknown(f"{ref.text} is known only when the run gets there")

        try:
            raw = render(self.pipeline.steps[sid].spec.with_, value)
        except ExpressionError as exc:
            raise _Unknown(str(exc)) from None
        for key in ("training_file", "validation_file"):
            if raw.get(key) in pending:
                place = pending[raw[key]]
                if place not in self.files:
                    self.files[place] = await self._file_on_provider(*place)
                raw[key] = self.files[place]
        try:
            return LaunchParams.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"])) or "with"
            raise _Unknown(f"{where}: {first['msg']}") from None

    async def _file_on_provider(self, path: Path, purpose: str) -> str:
        """The provider's id of this dataset: checked first, as the upload step checks it,
        then found or uploaded as it would be (`place_file`), so the run reuses it."""
        report = await anyio.to_thread.run_sync(lambda: check_file(path, purpose=purpose))
        if not report.ok or report.sha256 is None:
            raise _Unknown(f"{path}: {report.summary()} (orchestrator check-data {path})")
        file, reused = await place_file(self.client, path, purpose=purpose,
                                        name=upload_name(path, report.sha256),
                                        sha=report.sha256, size=report.bytes, log=self._log)
        if not reused and self.uploaded is not None:
            await self.uploaded(path, file.id)
        return file.id


def _dataset(pipeline: Pipeline, sid: str, inputs: Mapping[str, Any],
             cell: Mapping[str, Any]) -> tuple[Path, str]:
    """The file an upload step sends, and its purpose."""

    def value(ref: Reference) -> Any:
        if ref.root == "inputs":
            return lookup(inputs, ref)
        if ref.root == "matrix":
            return lookup(cell, ref)
        raise _Unknown(f"steps.{sid}.with: {ref.text} is known only when the run gets there")

    try:
        params = UploadParams.model_validate(render(pipeline.steps[sid].spec.with_, value))
    except (ExpressionError, ValidationError) as exc:
        raise _Unknown(f"steps.{sid}.with: {exc}") from None
    path = Path(params.path).expanduser()
    return (path if path.is_absolute() else pipeline.base_dir / path), params.purpose

