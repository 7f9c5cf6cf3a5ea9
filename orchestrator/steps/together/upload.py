"""together/upload-file: the training data, uploaded once per content (see the package docstring).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.to_thread
from pydantic import Field, StrictBool

from orchestrator.errors import PermanentError
from orchestrator.faults import fault_point
from orchestrator.inputfiles import UnreadableFile, file_sha256, open_regular
from orchestrator.protocol.datacheck import DataReport, check_file
from orchestrator.steps.context import StepContext, StepLogger
from orchestrator.steps.together.common import (
    TYPES,
    Params,
    together_client,
)

if TYPE_CHECKING:
    from orchestrator.protocol.types import FileObject
    from orchestrator.providers.together.client import PartsCallback, TogetherClient

__all__ = ["UploadParams", "place_file", "upload_file", "upload_name"]


def upload_name(path: Path, sha: str) -> str:
    """The name a dataset is uploaded under: its own, with the start of its SHA-256, so that
    the same bytes are found again by name (on a provider that does not dedupe by checksum)."""
    return f"{path.stem}-{sha[:12]}{path.suffix}"


def _report_problems(path: Any, report: DataReport, limit: int = 10) -> str:
    lines = [f"{path}: {report.summary()}"]
    lines += [f"  {problem}" for problem in report.problems[:limit]]
    if len(report.problems) > limit:
        lines.append(f"  ... and {len(report.problems) - limit} more "
                     f"(orchestrator check-data {path})")
    return "\n".join(lines)


class UploadParams(Params):
    path: str = Field(description="the dataset (relative to the pipeline file)")
    purpose: Literal["fine-tune", "eval"] = "fine-tune"
    check: StrictBool = Field(default=True, description="check the data before uploading")


@TYPES.step("together/upload-file", params=UploadParams,
               outputs=frozenset({"file_id", "filename", "bytes", "lines", "sha256", "reused"}))
async def upload_file(ctx: StepContext, params: UploadParams) -> dict[str, Any]:
    """Checks a dataset, then uploads it once: identical bytes already there are reused."""
    client = together_client(ctx)
    path = ctx.resolve_path(params.path)
    try:  # a FIFO or a device would block the reads below, or never end
        open_regular(path).close()
    except UnreadableFile as exc:
        raise PermanentError(f"{path}: {exc}") from None
    lines = 0
    sha = None
    if params.check and params.purpose == "fine-tune":
        report = await anyio.to_thread.run_sync(check_file, path)  # streamed, hashed too
        if not report.ok:
            raise PermanentError(_report_problems(path, report))
        lines, sha = report.lines, report.sha256
    if sha is None:
        sha = await anyio.to_thread.run_sync(file_sha256, path)
    size = (await anyio.Path(path).stat()).st_size
    name = upload_name(path, sha)
    # Runs uploading the same bytes at once, in any process sharing the state store, take
    # turns: the first uploads, the others find its file and reuse it.
    async with ctx.exclusive(f"upload:{client.base_url}:{params.purpose}:{sha}"):
        file, reused = await _upload_once(ctx, client, path, purpose=params.purpose, name=name,
                                          sha=sha, size=size)
    fault_point("after_remote_create", ctx.step_id)
    if file.processing_status == "INVALID_FORMAT":
        report_text = (file.validation_report or {}).get("error") or "invalid dataset"
        raise PermanentError(f"the provider rejected {path}: {report_text}")
    ctx.log.info("file ready", file_id=file.id, reused=reused, bytes=size)
    return {"file_id": file.id, "filename": name, "bytes": size,
            "lines": lines or file.line_count, "sha256": sha, "reused": reused}


async def _upload_once(ctx: StepContext, client: TogetherClient, path: Any, *, purpose: str,
                       name: str, sha: str, size: int) -> tuple[FileObject, bool]:
    """`place_file`, recorded in the step's checkpoint: the file an upload announces (so an
    attempt that dies before sending its bytes is recognised as its own) and the parts a
    multipart upload has sent (so the next attempt sends only the others)."""
    await _drop_own_abandoned_upload(ctx, client)

    async def announced(file_id: str) -> None:
        await ctx.checkpoint(announced=file_id)
        fault_point("after_upload_announced", ctx.step_id)

    async def parts_sent(fields: dict[str, Any], sent: int) -> None:
        await ctx.checkpoint(**fields)
        if sent:
            fault_point("after_upload_part", ctx.step_id)

    return await place_file(client, path, purpose=purpose, name=name, sha=sha, size=size,
                            log=ctx.log, announced=announced, resume=ctx.last_checkpoint,
                            parts_sent=parts_sent)


async def place_file(client: TogetherClient, path: Any, *, purpose: str, name: str, sha: str,
                     size: int, log: StepLogger,
                     announced: Callable[[str], Awaitable[None]] | None = None,
                     resume: Mapping[str, Any] | None = None,
                     parts_sent: PartsCallback | None = None) -> tuple[FileObject, bool]:
    """The provider's file with these bytes, processed: found by name and size, or uploaded
    now (and whether it was found). Also what prices a launch before its run (`pricing`).

    Bytes another client is still sending (the provider answers 409 with a file that has no
    bytes yet) are waited for, not sent again; if that upload is abandoned (the file
    disappears), they are uploaded here after all.
    """
    while True:
        existing = next((f for f in await client.list_files() if f.filename == name
                         and f.bytes == size and f.purpose == purpose), None)
        if existing is not None:
            file, reused = existing, True
        else:
            file, reused = await client.upload_file(
                path, purpose=purpose, name=name, checksum=sha, on_announced=announced,
                resume=resume, on_parts=parts_sent)
        if file.processed:
            return file, reused
        if file.bytes:
            # A reused file whose upload was cut short (a crash before preprocess): finish it.
            return await client.preprocess_file(file.id), reused
        arrived = await _bytes_arriving(client, file.id, log)
        if arrived is not None:
            return arrived, True


async def _drop_own_abandoned_upload(ctx: StepContext, client: TogetherClient) -> None:
    """An earlier attempt that died between announcing its file and sending the bytes left
    the file waiting for them; the provider would answer the next announce with it (409),
    and nobody would ever send them. Such a file of our own is deleted first."""
    from orchestrator.providers.together.errors import NotFound  # noqa: PLC0415

    file_id = ctx.last_checkpoint.get("announced")
    if not file_id:
        return
    try:
        file = await client.retrieve_file(str(file_id))
    except NotFound:
        file = None
    if file is not None and not file.bytes and not file.processed:
        ctx.log.info("deleting the file an interrupted upload left without its bytes",
                     file_id=file_id)
        with suppress(PermanentError):  # a provider that keeps it: it expires by itself
            await client.delete_file(str(file_id))
    await ctx.checkpoint(announced=None)


async def _bytes_arriving(client: TogetherClient, file_id: str,
                          log: StepLogger) -> FileObject | None:
    """Wait for another client's upload of `file_id` to finish: the processed file, or None if
    the provider forgot it (its upload URL expired unused)."""
    from orchestrator.providers.together.errors import NotFound  # noqa: PLC0415

    log.info("the same bytes are being uploaded by someone else; waiting for them",
             file_id=file_id)
    delay = 0.2
    while True:
        await anyio.sleep(delay)
        delay = min(delay * 2, 5.0)
        try:
            file = await client.retrieve_file(file_id)
        except NotFound:
            return None
        if file.processed:
            return file
        if file.bytes:
            return await client.preprocess_file(file.id)
