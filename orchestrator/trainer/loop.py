"""One job's training: LoRA with peft on a base model, as its Together parameters say.

The batches of an epoch are the training examples in an order drawn from the job's seed and
the epoch; the learning rate of each step is `protocol.schedule`'s (the one the job reports);
gradients are clipped at `max_grad_norm` (0: not clipped). Evaluation loss is the mean over the
validation examples' learnt tokens at the job's evaluation steps.

Durable: the trainable weights, the optimizer and the random state are saved every
`save_every` seconds and at each checkpoint (`resume/`, in a temporary folder renamed into
place), so a trainer killed mid-job continues from there when it starts again: the same step,
the same next batch, the same losses. Checkpoints and the final adapter are peft folders
(`adapter_config.json` naming the base, `adapter_model.safetensors`). Between steps the loop
reads whether the job was cancelled.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from orchestrator.trainer.bases import TINY_BASES, load_base
from orchestrator.trainer.data import IGNORED, Example, read_examples, tokenized
from orchestrator.trainer.spec import TrainSpec
from orchestrator.trainer.store import TrainingStore

__all__ = ["Cancelled", "atomic_folder", "train_job"]

Clock = Callable[[], float]


class Cancelled(Exception):
    """The job was cancelled (or deleted) while it trained."""


def atomic_folder(final: Path, write: Callable[[Path], None]) -> None:
    """Write a folder in a temporary place beside `final`, then rename it into place (a
    folder already there is replaced): never half-written."""
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        write(scratch)
        if final.exists():
            old = final.with_name(f".{final.name}-old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            final.replace(old)
            scratch.replace(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            scratch.replace(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _batches(spec: TrainSpec, epoch: int) -> list[list[int]]:
    order = list(range(spec.n_train))
    random.Random(spec.random_seed * 1_000_003 + epoch).shuffle(order)
    size = spec.batch_size
    return [order[i:i + size] for i in range(0, len(order), size)]


def _tensors(examples: Sequence[Example], pad: int, device: str) -> dict[str, Any]:
    import torch  # noqa: PLC0415

    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORED, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.ids)
        ids[row, :n] = torch.tensor(example.ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device),
            "attention_mask": mask.to(device)}


EPOCH_EVENTS = 10
"""At most about this many `epoch_complete` events a job (and one at each evaluation): a
100-epoch job on a tiny dataset says where it is ten times, not a hundred (its metric points
stay one per step)."""


def _epochs_between_events(n_epochs: int) -> int:
    return max(1, math.ceil(n_epochs / EPOCH_EVENTS))


def _targets(modules: str) -> str | list[str]:
    return "all-linear" if modules == "all-linear" else \
        [m.strip() for m in modules.split(",") if m.strip()]


class _Run:
    """The state of one job's training while it runs."""

    def __init__(self, job_id: str, spec: TrainSpec, store: TrainingStore, *, cache: Path,
                 device: str, clock: Clock, save_every: float) -> None:
        self.job_id, self.spec, self.store = job_id, spec, store
        self.cache, self.device, self.clock, self.save_every = cache, device, clock, save_every
        self.folder = store.job_dir(job_id)
        self.step = 0
        self.tokens = 0
        self.evals_done = 0
        self.last_eval: float | None = None
        self.last_loss: float | None = None

    def event(self, type_: str, message: str, **fields: Any) -> None:
        self.store.event(self.job_id, self.clock(), type_, message, **fields)

    # -- setting up ----------------------------------------------------------------------

    def prepare(self, starts: int) -> None:
        import torch  # noqa: PLC0415
        from peft import LoraConfig, get_peft_model  # noqa: PLC0415

        spec = self.spec
        tiny = spec.base.get("tiny")
        if starts == 0:
            self.event("job_start", "Job started (local trainer)")
            where = (f"the built-in tiny base {tiny} ({TINY_BASES[tiny].parameters():,} "
                     "parameters, random weights: a toy model, trained for real)" if tiny
                     else f"{spec.base_name} from {spec.base['folder']}")
            self.event("model_downloading", f"Loading {where}")
        base, self.tokenizer = load_base(spec.base, self.cache, self.device)
        self.pad = self.tokenizer.pad_token_id
        length = min(spec.max_seq_length,
                     int(getattr(base.config, "max_position_embeddings", spec.max_seq_length)))
        self.train_set = tokenized(list(read_examples(Path(spec.training_file))),
                                   self.tokenizer, train_on_inputs=spec.train_on_inputs,
                                   max_seq_length=length)
        self.eval_set = tokenized(list(read_examples(Path(spec.validation_file))),
                                  self.tokenizer, train_on_inputs=False,
                                  max_seq_length=length) if spec.validation_file else []
        if not self.train_set:
            msg = "the training file holds nothing to learn (every example is empty)"
            raise ValueError(msg)
        torch.manual_seed(spec.random_seed)
        config = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha,
                            lora_dropout=spec.lora_dropout,
                            target_modules=_targets(spec.lora_trainable_modules),
                            task_type="CAUSAL_LM")
        self.model = get_peft_model(base, config)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=spec.learning_rate,
                                           weight_decay=spec.weight_decay)

    def restore(self) -> bool:
        """Continue from the job's resume state, if a trainer saved one; True if so."""
        import torch  # noqa: PLC0415
        from peft import set_peft_model_state_dict  # noqa: PLC0415
        from safetensors.torch import load_file  # noqa: PLC0415

        saved = self.folder / "resume"
        if not (saved / "state.json").exists():
            return False
        state = json.loads((saved / "state.json").read_text())
        set_peft_model_state_dict(self.model, load_file(saved / "adapter.safetensors",
                                                        device=self.device))
        self.optimizer.load_state_dict(torch.load(saved / "optimizer.pt",
                                                  map_location=self.device,
                                                  weights_only=True))
        torch.random.set_rng_state(torch.load(saved / "rng.pt", weights_only=True))
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self.evals_done = int(state["evals"])
        self.last_eval = state.get("last_eval")
        self.store.rewind(self.job_id, self.step)
        return True

    def save_resume(self) -> None:
        import torch  # noqa: PLC0415
        from peft import get_peft_model_state_dict  # noqa: PLC0415
        from safetensors.torch import save_file  # noqa: PLC0415

        def write(folder: Path) -> None:
            weights = {k: v.detach().contiguous().cpu()
                       for k, v in get_peft_model_state_dict(self.model).items()}
            save_file(weights, folder / "adapter.safetensors")
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
            torch.save(torch.random.get_rng_state(), folder / "rng.pt")
            (folder / "state.json").write_text(json.dumps({
                "step": self.step, "tokens": self.tokens, "evals": self.evals_done,
                "last_eval": self.last_eval}))

        atomic_folder(self.folder / "resume", write)

    def save_adapter(self, name: str) -> str:
        """The adapter as it is now, as a peft folder `name` of the job's folder."""
        spec = self.spec

        def write(folder: Path) -> None:
            self.model.save_pretrained(str(folder), safe_serialization=True)
            config = json.loads((folder / "adapter_config.json").read_text())
            config["base_model_name_or_path"] = spec.base.get("tiny") or spec.base["folder"]
            (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
            self.tokenizer.save_pretrained(folder)

        atomic_folder(self.folder / name, write)
        return name

    # -- training ------------------------------------------------------------------------

    def eval_loss(self) -> float:
        import torch  # noqa: PLC0415

        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(self.eval_set), 16):
                batch = self.eval_set[i:i + 16]
                tensors = _tensors(batch, self.pad, self.device)
                logits = self.model(input_ids=tensors["input_ids"],
                                    attention_mask=tensors["attention_mask"]).logits
                shifted = logits[:, :-1].float()
                labels = tensors["labels"][:, 1:]
                losses = torch.nn.functional.cross_entropy(
                    shifted.reshape(-1, shifted.shape[-1]), labels.reshape(-1),
                    ignore_index=IGNORED, reduction="sum")
                total += float(losses)
                count += int((labels != IGNORED).sum())
        self.model.train()
        return total / max(1, count)

    def train_step(self) -> float:
        """One optimizer step on the step's batch; its learning rate."""
        import torch  # noqa: PLC0415

        spec = self.spec
        epoch, index = divmod(self.step, spec.steps_per_epoch)
        indices = _batches(spec, epoch)[index]
        batch = [self.train_set[i % len(self.train_set)] for i in indices]
        tensors = _tensors(batch, self.pad, self.device)
        rate = spec.schedule.at(self.step, spec.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        loss = self.model(**tensors).loss
        loss.backward()
        if spec.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, spec.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += int(tensors["attention_mask"].sum())
        self.last_loss = float(loss.detach())
        if not math.isfinite(self.last_loss):
            msg = (f"the training loss is {self.last_loss} at step {self.step}: it diverged "
                   "(a lower learning_rate, or max_grad_norm, may help)")
            raise ValueError(msg)
        return rate

    def record(self, rate: float) -> None:
        """What the step leaves: its metric points (an evaluation's too), the job's step, an
        epoch's end."""
        spec = self.spec
        now = self.clock()
        epoch = round(self.step / spec.steps_per_epoch, 4)
        points: list[tuple[int, str, float, float | None, float | None, float, int | None]] = [
            (self.step, "train", now, round(self.last_loss or 0.0, 6), rate, epoch,
             self.tokens)]
        evaluated = self.step in spec.eval_steps
        if evaluated:
            self.last_eval = round(self.eval_loss(), 6)
            self.evals_done += 1
            points.append((self.step, "eval", now, self.last_eval, None, epoch, None))
        self.store.advance(self.job_id, now, step=self.step,
                           epochs=self.step // spec.steps_per_epoch, evals=self.evals_done,
                           tokens=self.tokens, metrics=points)
        epoch_done = self.step // spec.steps_per_epoch
        if self.step % spec.steps_per_epoch == 0 and (
                evaluated or epoch_done % _epochs_between_events(spec.n_epochs) == 0
                or epoch_done == spec.n_epochs):
            message = (f"Epoch {self.step // spec.steps_per_epoch}/{spec.n_epochs} completed "
                       f"at step {self.step}/{spec.total_steps}: train loss "
                       f"{self.last_loss:.4f}")
            if evaluated:
                message += f", eval loss {self.last_eval:.4f}"
            self.event("epoch_complete", message, step=self.step)

    def run(self, stopped: Callable[[], bool]) -> None:
        spec = self.spec
        checkpoints = spec.checkpoint_steps
        self.model.train()
        saved_at = time.monotonic()
        while self.step < spec.total_steps:
            if stopped():
                raise Cancelled
            self.record(self.train_step())
            if self.step in checkpoints[:-1]:
                name = self.save_adapter(f"checkpoint-{self.step}")
                self.store.checkpoint(self.job_id, self.clock(), self.step, "Intermediate",
                                      name)
                self.event("checkpoint_save", f"New checkpoint saved at step {self.step}",
                           step=self.step, checkpoint_path=f"{spec.output_name}:{self.step}")
                self.save_resume()
                saved_at = time.monotonic()
            elif time.monotonic() - saved_at >= self.save_every and \
                    self.step < spec.total_steps:
                self.save_resume()
                saved_at = time.monotonic()


def train_job(job_id: str, spec: TrainSpec, store: TrainingStore, *, starts: int, cache: Path,
              device: str, clock: Clock = time.time, save_every: float = 5.0) -> None:
    """Train `job_id` to its end (or its cancellation, or an error), writing its progress,
    events, metric points and files; `starts` counts its earlier starts (a trainer that died
    mid-job: it continues from the last saved state)."""
    run = _Run(job_id, spec, store, cache=cache, device=device, clock=clock,
               save_every=save_every)
    store.start(job_id, clock(), spec.total_steps)

    def stopped() -> bool:
        return store.cancelled_at(job_id) is not None

    try:
        run.prepare(starts)
        if run.restore():
            run.event("job_restarted", f"Training continues from step {run.step} (the "
                                       "trainer stopped; its last saved state is kept)",
                      step=run.step)
        else:
            run.event("training_start", f"Training started: {spec.n_epochs} epochs, "
                                        f"{spec.total_steps} steps, {len(run.train_set)} "
                                        f"examples, on {device}")
        run.run(stopped)
        final = run.save_adapter("final")
        summary = f"final train loss {run.last_loss:.4f}" if run.last_loss is not None else ""
        if run.last_eval is not None:
            summary += f", eval loss {run.last_eval:.4f}"
        run.event("training_complete", f"Training completed: {summary}", step=run.step)
        store.checkpoint(job_id, clock(), run.step, "Final", final)
        run.event("model_upload_complete", "Output model saved", model_path=spec.output_name)
        run.event("job_complete", f"Fine-tuning job completed; model {spec.output_name} is "
                                  "ready", model_path=spec.output_name)
        store.finish(job_id, clock(), "completed")
    except Cancelled:
        run.event("job_stopped", "Job cancelled")
        store.finish(job_id, clock(), "cancelled")
    except Exception as exc:  # noqa: BLE001  (any failure of the job's training is its error)
        message = f"Training failed: {type(exc).__name__}: {exc}"
        run.event("job_error", message[:2000], level="error")
        store.finish(job_id, clock(), "error", message[:2000])
        return
    shutil.rmtree(run.folder / "resume", ignore_errors=True)  # ended: nothing to continue
