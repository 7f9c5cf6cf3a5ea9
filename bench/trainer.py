"""The local trainer: its training speed beside a bare peft loop, a job's overhead, its memory.

Everything goes through `orchestrator local-api --trainer peft` over loopback, as a user's
jobs do; the figures are read from the trainer's own rows (each metric point's time).

- tokens/s: the built-in tiny base trained on 64 question/answer pairs written here, by the
  trainer (schedule, clipping, metric rows, durable saves and all) and by a bare loop written
  here on the same model, data, LoRA settings and batch size (peft + transformers + AdamW,
  nothing else), alternately, with the same thread count. Target: ours within 1.25x.
- overhead: from `POST /fine-tunes` to the job's first training step done, with the trainer
  warm (idle, imports done), and cold (a fresh server on a fresh data folder: its trainer
  process starts with the server, imports torch and builds the tiny base). The cold figure is
  given from the server's start, beside `import torch, transformers, peft` timed alone.
  Targets: warm <= 1 s; cold <= the import time + 1 s.
- memory: the trainer process's peak resident size (VmHWM) after all that. Target <= 1 GiB.

    python -m bench.trainer [--repeat 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import httpx

from orchestrator.trainer.store import TrainingStore

KEY = "bench-key"
EPOCHS = 25
BATCH = 16
PAIRS = 64


def _dataset(folder: Path) -> Path:
    """64 arithmetic questions and answers: enough rows for several batches per epoch."""
    path = folder / "sums.jsonl"
    lines = []
    for n in range(PAIRS):
        a, b = 3 + n * 7 % 41, 5 + n * 11 % 37
        lines.append(f'{{"prompt": "Q: What is {a} plus {b}?\\nA:", "completion": " {a + b}"}}')
    path.write_text("\n".join(lines) + "\n")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`orchestrator local-api --trainer peft` on a data folder of its own."""

    def __init__(self, folder: Path, threads: int) -> None:
        self.data_dir = folder / "api-data"
        port = _free_port()
        env = {**os.environ, "ORCH_LOCAL_TRAINER_THREADS": str(threads),
               "ORCH_LOCAL_API_KEY": KEY}
        self.started = time.time()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "local-api", "--trainer", "peft", "--port",
             str(port), "--data-dir", str(self.data_dir)],
            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=60,
                                 headers={"Authorization": f"Bearer {KEY}"})
        self._until(self._answers, "the server answers", 60)

    def _answers(self) -> bool:
        try:
            return self.http.get("/models").status_code == 200
        except httpx.TransportError:
            return False

    @staticmethod
    def _until(ready: Any, what: str, timeout: float) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = ready()
            if found:
                return found
            time.sleep(0.01)
        msg = f"timed out waiting for {what}"
        raise SystemExit(msg)

    def upload(self, path: Path) -> str:
        answer = self.http.post("/files/upload", data={"purpose": "fine-tune"},
                                files={"file": (path.name, path.read_bytes())})
        answer.raise_for_status()
        return str(answer.json()["id"])

    def train(self, file_id: str, epochs: int) -> tuple[str, float]:
        """A job trained to its end: its id, and when it was asked for (the trainer's clock)."""
        asked = time.time()
        answer = self.http.post("/fine-tunes", json={
            "training_file": file_id, "model": "local/tiny-llama", "n_epochs": epochs,
            "batch_size": BATCH, "learning_rate": 0.002, "n_checkpoints": 1})
        answer.raise_for_status()
        job_id = str(answer.json()["id"])
        status = self._until(lambda: (s := self.http.get(f"/fine-tunes/{job_id}").json()[
            "status"]) in ("completed", "error", "cancelled") and s, f"job {job_id}", 600)
        if status != "completed":
            msg = f"job {job_id} ended {status}: see {self.data_dir / 'trainer.log'}"
            raise SystemExit(msg)
        return job_id, asked

    def steps(self, job_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The job's training steps (their metric rows) and the spec it trained by."""
        store = TrainingStore(self.data_dir)
        try:
            return ([m for m in store.metrics(job_id) if m["kind"] == "train"],
                    store.spec(job_id) or {})
        finally:
            store.close()

    def trainer_peak_bytes(self) -> int:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = children.read_text().split()
        for line in Path(f"/proc/{pids[0]}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        self.process.wait(timeout=30)


def _rate(points: list[dict[str, Any]]) -> float:
    """Tokens per second from the second step to the last (the first step warms up)."""
    first, last = points[0], points[-1]
    return (last["tokens"] - first["tokens"]) / (last["at"] - first["at"])


def _bare_rate(data: Path, cache: Path, threads: int, spec: dict[str, Any]) -> float:
    """The floor: the same LoRA training in the plainest loop, tokens per second measured the
    same way (second step to last)."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    from orchestrator.trainer.bases import load_base
    from orchestrator.trainer.data import read_examples, tokenized

    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' deprecations
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, tokenizer = load_base({"tiny": "local/tiny-llama"}, cache, "cpu")
    examples = tokenized(list(read_examples(data)), tokenizer, train_on_inputs=False,
                         max_seq_length=2048)
    model = get_peft_model(model, LoraConfig(
        r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=spec["lora_dropout"],
        target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=0.002)
    stamps: list[tuple[float, int]] = []
    tokens = 0
    for _ in range(EPOCHS):
        for start in range(0, len(examples), BATCH):
            batch = examples[start:start + BATCH]
            width = max(len(e.ids) for e in batch)
            ids = torch.tensor([[*e.ids, *[tokenizer.pad_token_id] * (width - len(e.ids))]
                                for e in batch])
            labels = torch.tensor([[*e.labels, *[-100] * (width - len(e.ids))] for e in batch])
            mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in batch])
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += int(mask.sum())
            stamps.append((time.perf_counter(), tokens))
    (t0, n0), (t1, n1) = stamps[0], stamps[-1]
    return (n1 - n0) / (t1 - t0)


def _import_seconds() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, transformers, peft"], check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"local trainer, tiny base, {PAIRS} examples, batch {BATCH}, {EPOCHS} epochs, "
          f"{args.threads} threads; medians of {args.repeat}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = _dataset(folder)
        cold, from_start, imports = [], [], []
        for n in range(args.repeat):
            imports.append(_import_seconds())
            fresh = folder / f"cold-{n}"
            fresh.mkdir()
            server = Server(fresh, args.threads)
            try:
                job_id, asked = server.train(server.upload(data), 1)
                first = server.steps(job_id)[0][0]["at"]
                cold.append(first - asked)
                from_start.append(first - server.started)
            finally:
                server.stop()
        server = Server(folder, args.threads)
        try:
            file_id = server.upload(data)
            server.train(file_id, 1)  # the trainer is warm from here on
            ours, bare, warm = [], [], []
            for _ in range(args.repeat):
                job_id, asked = server.train(file_id, EPOCHS)
                points, spec = server.steps(job_id)
                ours.append(_rate(points))
                warm.append(points[0]["at"] - asked)
                bare.append(_bare_rate(data, server.data_dir / "bases", args.threads, spec))
            peak = server.trainer_peak_bytes()
        finally:
            server.stop()
    ours_m, bare_m = statistics.median(ours), statistics.median(bare)
    rows = [
        ("trainer: tokens/s, ours", ours_m),
        ("trainer: tokens/s, bare peft loop", bare_m),
        ("trainer: bare / ours (target <= 1.25)", bare_m / ours_m),
        ("trainer: POST -> first step, warm s (target <= 1)", statistics.median(warm)),
        ("trainer: POST -> first step, cold s", statistics.median(cold)),
        ("trainer: server start -> first step, cold s", statistics.median(from_start)),
        ("trainer: import torch, transformers, peft s", statistics.median(imports)),
        ("trainer: cold excess over the import s (target <= 1)",
         statistics.median(from_start) - statistics.median(imports)),
        ("trainer: process peak MiB (target <= 1024)", peak / 2**20),
    ]
    for label, value in rows:
        print(f"  {label:<60} {value:10.3f}")
    print("  each run: ours " + ", ".join(f"{v:.0f}" for v in ours) + "; bare " +
          ", ".join(f"{v:.0f}" for v in bare) + " tokens/s")
    return rows


if __name__ == "__main__":
    main()
