"""Fine-tuning jobs the local trainer trains for real (`local_trainer = "peft"`).

The create request is checked as for a simulated job, then for what the trainer can honour
(LoRA SFT on a base it has weights for: a 400 naming the parameter otherwise, never a
parameter silently ignored), and queued for the trainer process (`trainer.store`). Every read
of the job is then what the trainer wrote: its status, step, events, metric points and
checkpoints, in the shapes the simulated jobs have (`JobView`), and its files are real peft
folders, downloaded as tar.gz archives.
"""

from __future__ import annotations

import json
import math
import os
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.inputfiles import UnreadableFile, read_regular
from orchestrator.localapi.errors import APIError, bad_request, not_found
from orchestrator.localapi.timeline import Event, JobPlan, JobView
from orchestrator.protocol.types import TERMINAL_JOB_STATUSES
from orchestrator.trainer.bases import TINY_BASES
from orchestrator.trainer.client import TrainerError
from orchestrator.trainer.spec import TrainSpec

if TYPE_CHECKING:
    from orchestrator.localapi.app import LocalAPI
    from orchestrator.localapi.finetune_requests import NewJob

__all__ = ["TINY_PREFIX", "archive", "base_of", "cancel", "forget", "is_trained", "queue",
           "refusal", "refuse", "view", "weights_of"]

TINY_PREFIX = "local/"
"""Built-in tiny bases are named `local/...` (the trainer makes them; no files needed)."""

_STATUS = {"queued": "queued", "running": "running", "completed": "completed",
           "error": "error", "cancelled": "cancelled"}


def is_trained(row: dict[str, Any]) -> bool:
    """Whether a job's row is one the local trainer trains (not a simulated one)."""
    return bool(row["request"].get("local_trainer") == "peft")


def base_of(api: LocalAPI, model: str) -> dict[str, str]:
    """What the trainer loads for `model`: a built-in tiny base, or the folder the setting
    local_base_models maps it to; a 400 naming the setting otherwise."""
    if model in TINY_BASES:
        return {"tiny": model}
    folder = api.config.base_models.get(model)
    if folder is not None:
        path = Path(folder).expanduser()
        if not (path / "config.json").is_file():
            raise bad_request(f"model {model!r} maps to {path} (setting local_base_models), "
                              "which holds no config.json: not a model folder", "model")
        return {"folder": str(path.resolve())}
    raise bad_request(f"model {model!r}: the local trainer has no weights for it and downloads "
                      "nothing; map it to a model folder on disk with the setting "
                      "local_base_models, or train the built-in local/tiny-llama", "model")


def refusal(request: dict[str, Any]) -> tuple[str, str] | None:
    """The first parameter of a checked request the trainer cannot honour: (param, why)."""
    if request["training_type"]["type"] != "Lora":
        return "training_type", "the local trainer trains LoRA adapters only, not full models"
    if request["training_method"]["method"] != "sft":
        return "training_method", "the local trainer does supervised fine-tuning (sft) only"
    if request.get("from_checkpoint"):
        return "from_checkpoint", "the local trainer starts every job from its base model"
    if request.get("wandb_configured") or request.get("wandb_project_name"):
        return "wandb_api_key", "the local trainer logs to no Weights & Biases project"
    if request.get("early_stopping_enabled"):
        return "early_stopping_enabled", "the local trainer trains every epoch asked for"
    if request.get("gradient_accumulation_steps", 1) > 1:
        return "gradient_accumulation_steps", "the local trainer steps the optimizer every " \
                                              "batch (raise batch_size instead)"
    if request.get("from_hf_model") or request.get("hf_output_repo_name"):
        return "from_hf_model", "the local trainer neither downloads from nor uploads to " \
                                "Hugging Face"
    return None


def queue(api: LocalAPI, job: NewJob, base: dict[str, str]) -> None:
    """Queue a checked job for the trainer process."""
    request = job.request
    lora = request["training_type"]
    scheduler = request["lr_scheduler"]
    validation = request.get("validation_file")
    spec = TrainSpec(
        output_name=job.output_name, base=base, base_name=job.model,
        training_file=str(api.state.file_path(job.training_file)),
        validation_file=str(api.state.file_path(validation)) if validation else None,
        n_train=max(1, int(request.get("trainingfile_numlines") or 1)),
        n_epochs=int(request["n_epochs"]), batch_size=int(request["batch_size"]),
        learning_rate=float(request["learning_rate"]),
        lr_scheduler=scheduler["lr_scheduler_type"],
        warmup_ratio=float(request["warmup_ratio"]),
        min_lr_ratio=float(scheduler["lr_scheduler_args"]["min_lr_ratio"]),
        num_cycles=float(scheduler["lr_scheduler_args"].get("num_cycles", 0.5)),
        max_grad_norm=float(request["max_grad_norm"]),
        weight_decay=float(request["weight_decay"]), lora_r=int(lora["lora_r"]),
        lora_alpha=int(lora["lora_alpha"]), lora_dropout=float(lora["lora_dropout"]),
        lora_trainable_modules=str(lora["lora_trainable_modules"]),
        random_seed=int(request.get("random_seed") or 42),
        n_checkpoints=int(request["n_checkpoints"]), n_evals=int(request["n_evals"]),
        max_seq_length=int(request.get("max_seq_length") or 2048),
        train_on_inputs=request["training_method"].get("train_on_inputs") is True)
    api.training.queue(job.id, spec.to_json(), api.clock())
    api.trainer().wake()


def view(api: LocalAPI, row: dict[str, Any], plan: JobPlan) -> JobView:
    """The job as the trainer left it, in the simulated jobs' shape."""
    progress = api.training.progress(row["id"])
    created = row["created_at"]
    if progress is None:  # queued by a server that died before writing it: it never trains
        return JobView("error", [Event(0.0, "job_error", "The job was never queued for "
                                                         "training", level="error")],
                       None, created, 0, 0, 0, [], 0, 0, plan, recorded_metrics=[])
    status = _STATUS[progress.status]
    if row["cancelled_at"] is not None and status not in TERMINAL_JOB_STATUSES:
        status = "cancel_requested"
    if status not in TERMINAL_JOB_STATUSES:
        api.trainer()  # a server that restarted: its trainer continues the job
    events = [Event(0.0, "job_pending", f"Fine-tuning job created for {row['model']}: the "
                                        "local trainer trains it (LoRA, peft)")]
    if status == "queued":
        ahead = api.training.queue_position(row["id"])
        events.append(Event(0.0, "job_pending", f"Queued for the trainer: {ahead} job"
                                                f"{'s' * (ahead != 1)} ahead"))
    for event in api.training.events(row["id"]):
        events.append(Event(max(0.0, event["at"] - created), event["type"], event["message"],
                            level=event["level"], step=event["step"],
                            checkpoint_path=event["checkpoint_path"],
                            model_path=event["model_path"]))
    checkpoints = [(c["step"], max(0.0, c["at"] - created), c["kind"])
                   for c in api.training.checkpoints(row["id"])]
    remaining = 0
    if progress.status == "running" and progress.started_at and progress.step:
        rate = (progress.updated_at - progress.started_at) / progress.step
        remaining = math.floor(rate * max(0, progress.total_steps - progress.step))
    return JobView(
        status=status, events=events, started_at=progress.started_at,
        updated_at=progress.updated_at, current_step=progress.step,
        token_count=progress.tokens, epochs_completed=progress.epochs_completed,
        checkpoints=checkpoints, evals_completed=progress.evals_completed,
        seconds_remaining=remaining, plan=plan,
        recorded_metrics=_metrics(api.training.metrics(row["id"])))


def _metrics(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    found: list[dict[str, float]] = []
    for row in rows:
        point = {"train/global_step": float(row["step"])}
        if row["kind"] == "eval":
            point["eval/loss"] = row["loss"]
        else:
            point.update({"train/loss": row["loss"], "train/learning_rate": row["learning_rate"],
                          "train/epoch": row["epoch"]})
            if row["tokens"] is not None:
                point["train/tokens"] = float(row["tokens"])
        found.append(point)
    return found


def cancel(api: LocalAPI, row: dict[str, Any]) -> None:
    """A queued job is cancelled at once; a running one when the trainer next looks (between
    two steps)."""
    api.training.cancel_queued(row["id"], api.clock())
    api.trainer().wake()


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
"""What an imported adapter folder is made of: safetensors only (a pickled `.bin` can run code
when loaded, so it is refused), nothing else in the folder is read."""

MAX_ADAPTER_BYTES = 4 << 30
"""The largest adapter imported from a folder (a rank-64 adapter of a 70B model is ~1.6 GB)."""


def adapter_base(folder: Path, param: str) -> str:
    """The base model an adapter folder's `adapter_config.json` names (a 400 naming `param`
    when it names none or cannot be read)."""
    try:
        config = json.loads(read_regular(folder / "adapter_config.json", max_bytes=1 << 20))
    except (UnreadableFile, ValueError) as exc:
        raise bad_request(f"{param} {folder}: adapter_config.json cannot be read ({exc}): "
                          "give base_model", param) from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not isinstance(base, str) or not base:
        raise bad_request(f"{param} {folder}: its adapter_config.json names no "
                          "base_model_name_or_path: give base_model", param)
    return base


async def keep_adapter(api: LocalAPI, folder: Path, key: str, param: str) -> str:
    """Where a copy of an imported adapter's files is kept in the data folder (the original
    may go), made off the event loop; a 400 naming `param` for a folder that is not one."""
    return await keep_adapter_files(api, [folder / name for name in ADAPTER_FILES], key, param,
                                    where=str(folder))


async def keep_adapter_files(api: LocalAPI, sources: list[Path], key: str, param: str, *,
                             where: str) -> str:
    """Where a copy of `sources` (an adapter's files, in ADAPTER_FILES's order, from
    `where`) is kept in the data folder, made off the event loop."""
    import anyio.to_thread  # noqa: PLC0415

    return str(await anyio.to_thread.run_sync(
        _copy_adapter, sources, api.config.data_dir.resolve() / "imports" / key, param, where))


def _copy_adapter(sources: list[Path], kept: Path, param: str, where: str) -> Path:
    """Only the two files an adapter is made of, bounded in size, never following a link."""
    import shutil  # noqa: PLC0415

    for source, name in zip(sources, ADAPTER_FILES, strict=True):
        if source.is_symlink() or not source.is_file():
            raise bad_request(f"{param} {where} holds no regular file {name}: a peft "
                              "adapter folder has adapter_config.json and "
                              "adapter_model.safetensors", param)
    size = sum(source.stat().st_size for source in sources)
    if size > MAX_ADAPTER_BYTES:
        raise bad_request(f"{param} {where} holds {size} bytes of adapter, over the "
                          f"{MAX_ADAPTER_BYTES} the local API imports", param)
    kept.mkdir(parents=True)
    for source, name in zip(sources, ADAPTER_FILES, strict=True):
        shutil.copyfile(source, kept / name, follow_symlinks=False)
    return kept


def forget(api: LocalAPI, row: dict[str, Any]) -> None:
    """A deleted job's rows and files go with it."""
    import shutil  # noqa: PLC0415

    api.training.forget(row["id"])
    shutil.rmtree(api.training.job_dir(row["id"]), ignore_errors=True)


def _folder(api: LocalAPI, row: dict[str, Any], step: int | None) -> Path:
    """The adapter folder of the job's checkpoint at `step` (None: its final adapter)."""
    saved = api.training.checkpoints(row["id"])
    chosen = [c for c in saved if (c["kind"] == "Final" if step is None else c["step"] == step)]
    if not chosen:
        raise not_found(f"job {row['id']} has no checkpoint at step {step}" if step is not None
                        else f"job {row['id']} has no final adapter", "checkpoint_step")
    return Path(api.training.job_dir(row["id"]) / str(chosen[-1]["folder"]))


def weights_of(api: LocalAPI, row: dict[str, Any]) -> dict[str, Any]:
    """What answers for a completed job's model: its base and final adapter."""
    spec = api.training.spec(row["id"])
    assert spec is not None
    return {"base": spec["base"], "adapter": str(_folder(api, row, None))}


async def archive(api: LocalAPI, row: dict[str, Any], kind: str, step: int | None) -> Path:
    """The job's adapter (or, `merged`, base and adapter as one model) as a tar.gz archive,
    made once and kept beside the job's folders (a merged model can be many GB: the archive
    is written to disk as it is packed and served from there, never held in memory)."""
    import anyio.to_thread  # noqa: PLC0415

    folder = _folder(api, row, step)
    if kind == "merged":
        spec = api.training.spec(row["id"])
        assert spec is not None
        target = folder.with_name(f"merged-{folder.name}")
        await ask_trainer(api, "merge", {"base": spec["base"], "adapter": str(folder),
                                         "target": str(target)}, timeout=MERGE_TIMEOUT)
        folder = target
    made = folder.with_name(f"{folder.name}.tar.gz")
    if not made.exists():
        await anyio.to_thread.run_sync(_write_archive, folder, made)
    return made


def _write_archive(folder: Path, made: Path) -> None:
    """Packed into a temporary file beside `made`, then renamed: never half-written."""
    handle, name = tempfile.mkstemp(dir=made.parent, prefix=f".{made.name}-")
    try:
        with os.fdopen(handle, "wb") as scratch, \
                tarfile.open(fileobj=scratch, mode="w:gz") as packed:
            for path in sorted(folder.iterdir()):
                packed.add(path, arcname=path.name)
        Path(name).replace(made)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


MERGE_TIMEOUT = 3600.0
"""Seconds merging a base and its adapter may take (a big base, loaded cold)."""


async def ask_trainer(api: LocalAPI, op: str, payload: dict[str, Any], *,
                      timeout: float) -> dict[str, Any]:
    """The trainer process's answer to one request, asked off the event loop; a 503 saying
    why when it cannot answer (it died, or took longer than `timeout`)."""
    import anyio.to_thread  # noqa: PLC0415

    try:
        return await anyio.to_thread.run_sync(
            lambda: api.trainer().ask(op, payload, timeout=timeout))
    except TrainerError as exc:
        raise APIError(503, f"the local trainer could not answer: {exc}",
                       type_="service_unavailable") from None


def refuse(param: str, why: str) -> APIError:
    return bad_request(f"{param}: {why}", param)
