"""The local trainer trains for real, on the user's path: `orchestrator local-api --trainer
peft` over loopback, driven by the orchestrator (provider `together`), by HTTP, by Together's
SDK 3.x. The tiny base (random weights) answers the smoke prompt wrong; the fine-tuned model
right, and recalls its training set; evaluation loss falls; a learning-rate sweep's losses
follow the learning rate; the same seed gives the same losses; a kill -9 mid-training loses no
progress; a cancel stops training within 2 s.

Downloads are real peft folders (and a merged model); one is imported back and answers.

One scenario shares one server (one trainer process: torch is imported once, and the trainer
trains one job at a time anyway), each part of it a function of its own; the kill -9 test has
a server of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.helpers import run_id_from, wait_for
from tests.conftest import CLI, REPO, write
from tests.localapi.test_server import KEY, free_port, start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

SDK3 = REPO / ".venv" / "together3"
TRAIN = REPO / "pipelines" / "data" / "train.jsonl"
VALIDATION = REPO / "pipelines" / "data" / "validation.jsonl"
SMOKE = "Q: The capital of France is?\nA:"
TINY = ["-i", "base_model=local/tiny-llama", "-i", "epochs=100", "-i", "learning_rate=0.005",
        "-i", "poll_interval=200ms"]
HEADERS = {"Authorization": f"Bearer {KEY}"}
MAPPED = "my/llama-on-disk"
"""A name the server maps (local_base_models) to a model folder: the tiny base, saved."""


class Server:
    """`orchestrator local-api --trainer peft` over loopback, its data in `folder`."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/v1"
        self.process = self.start()
        self.http = httpx.Client(base_url=self.base, headers=HEADERS, timeout=120)

    def start(self) -> subprocess.Popen[str]:
        mapped = json.dumps({MAPPED: str(self.folder / "mapped-base")})
        return start_server(self.folder, self.port, local_trainer="peft",
                            local_trainer_save_every="300ms", local_trainer_threads="1",
                            local_base_models=mapped)

    def kill(self) -> None:
        """kill -9: the server, and with it (its stdin gone) its trainer."""
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=10)

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.communicate(timeout=10)

    def upload(self, path: Path) -> str:
        answer = self.http.post("/files/upload", data={"purpose": "fine-tune"},
                                files={"file": (path.name, path.read_bytes())})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["id"])

    def create(self, **fields: Any) -> httpx.Response:
        body = {"model": "local/tiny-llama", "batch_size": 8, "learning_rate": 0.005,
                "warmup_ratio": 0.1, **fields}
        return self.http.post("/fine-tunes", json=body)

    def job(self, job_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.http.get(f"/fine-tunes/{job_id}").json()
        return found

    def finished(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(lambda: (job := self.job(job_id))["status"] in (
            "completed", "error", "cancelled") and job, f"job {job_id} ended", timeout=timeout)

    def metrics(self, job_id: str) -> list[dict[str, float]]:
        found: list[dict[str, float]] = self.http.get(
            f"/fine-tunes/{job_id}/metrics").json()["metrics"]
        return found

    def answer(self, model: str, prompt: str) -> str:
        reply = self.http.post("/completions", json={"model": model, "prompt": prompt,
                                                     "max_tokens": 10, "temperature": 0})
        assert reply.status_code == 200, reply.text
        return str(reply.json()["choices"][0]["text"])


def examples() -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in TRAIN.read_text().splitlines() if line.strip()]
    return [(row["prompt"], row["completion"]) for row in rows]


def together_env(server: Server) -> dict[str, str]:
    return {"TOGETHER_BASE_URL": server.base, "TOGETHER_API_KEY": KEY}


def the_shipped_pipeline_learns_on_provider_together(cli: CLI, server: Server) -> None:
    """`pipelines/lora-finetune.yaml`, unchanged, on provider together: the smoke test passes
    on the fine-tuned model's real answer; the base answered wrong."""
    root = server.http.get(server.base.removesuffix("/v1") + "/").json()
    assert root["simulated"] is False and "Fine-tuning is real" in root["notice"]
    assert "Paris" not in server.answer("local/tiny-llama", SMOKE)  # random weights
    run = cli("run", str(REPO / "pipelines" / "lora-finetune.yaml"), "--provider", "together",
              *TINY, env=together_env(server), check_code=0)
    run_id = run_id_from(run.stderr)
    shown = json.loads(cli("show", run_id, "-o", "json", check_code=0).stdout)
    outputs = {step["id"]: step["outputs"] for step in shown["steps"]}
    model = outputs["wait"]["model_name"]
    assert "tiny-llama" in model  # a toy model says so in its name
    assert outputs["smoke"]["text"].strip() == "Paris"
    recalled = sum(server.answer(model, prompt) == answer for prompt, answer in examples())
    assert recalled / len(examples()) >= 0.95
    evals = [point["eval/loss"] for point in server.metrics(outputs["launch"]["job_id"])
             if "eval/loss" in point]
    assert len(evals) == 3 and evals[-1] < evals[0]
    events = " ".join(e["message"] for e in server.http.get(
        f"/fine-tunes/{outputs['launch']['job_id']}/events").json()["data"])
    assert "built-in tiny base local/tiny-llama" in events and "random weights" in events
    downloads_are_real_model_folders(server, outputs["launch"]["job_id"])


def a_sweep_over_learning_rates_is_ranked_by_them(cli: CLI, server: Server,
                                                  tmp_path: Path) -> None:
    """Three cells, one learning rate each: the higher the rate, the lower the final loss
    after the same few steps."""
    shutil.copytree(REPO / "pipelines" / "data", tmp_path / "data")
    os.chdir(tmp_path)
    write(tmp_path / "sweep.yaml", """
        name: lr-sweep
        matrix:
          learning_rate: [0.0003, 0.001, 0.004]
        steps:
          upload: {uses: together/upload-file, with: {path: data/train.jsonl}}
          launch:
            uses: together/launch-fine-tune
            with:
              training_file: "${{ steps.upload.outputs.file_id }}"
              model: local/tiny-llama
              n_epochs: 30
              batch_size: 8
              learning_rate: "${{ matrix.learning_rate }}"
              random_seed: 3
          wait:
            uses: together/wait-fine-tune
            with: {job_id: "${{ steps.launch.outputs.job_id }}", poll_interval: 200ms}
    """)
    cli("run", "sweep.yaml", "--provider", "together", env=together_env(server), check_code=0)
    batch = json.loads(cli("batches", "-o", "json", check_code=0).stdout)[0]["id"]
    cells = json.loads(cli("metrics", batch, "-o", "json", check_code=0).stdout)["cells"]
    final = {cell["matrix"]["learning_rate"]: cell["train_loss"] for cell in cells}
    assert final[0.004] < final[0.001] < final[0.0003], final


def the_same_seed_trains_the_same_losses(server: Server) -> None:
    file = server.upload(TRAIN)
    jobs = [server.create(training_file=file, n_epochs=12, random_seed=seed).json()["id"]
            for seed in (11, 11, 12)]
    losses = [[p["train/loss"] for p in server.metrics(server.finished(job)["id"])
               if "train/loss" in p] for job in jobs]
    assert len(losses[0]) == 12
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]


REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({"model": "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"}, "model",
     "setting local_base_models"),
    ({"wandb_api_key": "k"}, "wandb_api_key", "logs to no Weights & Biases"),
    ({"training_type": {"type": "Full"}}, "training_type", "full fine-tuning is not available"),
    ({"gradient_accumulation_steps": 4}, "gradient_accumulation_steps", "raise batch_size"),
]


def what_the_trainer_cannot_honour_is_a_400_naming_it(server: Server) -> None:
    file = server.upload(TRAIN)
    for fields, param, message in REFUSED:
        refused = server.create(training_file=file, **fields)
        assert refused.status_code == 400, fields
        error = refused.json()["error"]
        assert error["param"] == param and message in error["message"], error


def a_preview_tokenizes_as_training_does(server: Server) -> None:
    """`POST /fine-tunes/preview` on the real trainer: the base's own byte-level tokenizer,
    the prompt's tokens not learnt, the answer's and the end of sequence learnt."""
    body = server.http.post("/fine-tunes/preview", json={
        "model": "local/tiny-llama", "training_file": server.upload(TRAIN), "top_k": 1}).json()
    assert body["simulated"] is False, body
    row = body["rows"][0]
    assert row["input_ids"][0] == 256  # <s>: the tiny tokenizer's ids are bytes, then these
    learnt = [token for token, label in zip(row["tokens"], row["labels"], strict=True)
              if label != -100]
    assert "".join(learnt).replace("\u0120", " ") == " Paris</s>"
    assert row["num_trained_tokens"] == len(" Paris") + 1


def a_model_folder_on_disk_is_a_base(server: Server) -> None:
    """A name mapped to a model folder (here the tiny base's, as transformers saved it)
    trains and answers like the built-in one; its events name the folder."""
    folder = server.folder / "mapped-base"
    missing = server.create(training_file=server.upload(TRAIN), model=MAPPED, n_epochs=2)
    assert missing.status_code == 400 and "holds no config.json" in \
        missing.json()["error"]["message"]
    shutil.copytree(server.folder / "api-data" / "bases" / "local--tiny-llama", folder)
    job = server.create(training_file=server.upload(TRAIN), model=MAPPED, n_epochs=2).json()
    assert server.finished(job["id"])["status"] == "completed"
    events = " ".join(e["message"] for e in server.http.get(
        f"/fine-tunes/{job['id']}/events").json()["data"])
    assert f"{MAPPED} from {folder}" in events
    assert server.answer(MAPPED, SMOKE) == server.answer("local/tiny-llama", SMOKE)


def a_cancel_stops_training_within_two_seconds(server: Server) -> None:
    file = server.upload(TRAIN)
    long = server.create(training_file=file, n_epochs=1000).json()["id"]
    after = server.create(training_file=file, n_epochs=2).json()["id"]
    wait_for(lambda: server.job(long)["status"] == "running" and
             server.job(long).get("steps_completed", 0) > 0, "the long job trains")
    assert server.job(after)["status"] == "queued"  # one job at a time
    asked = time.monotonic()
    assert server.http.post(f"/fine-tunes/{long}/cancel").status_code == 200
    wait_for(lambda: server.job(long)["status"] == "cancelled", "the cancel")
    assert time.monotonic() - asked < 2.0
    steps = server.job(long)["steps_completed"]
    assert server.finished(after)["status"] == "completed"  # the device is free again
    assert server.job(long)["steps_completed"] == steps  # and it trained no further


def the_official_sdk_trains_follows_and_downloads_a_real_adapter(server: Server,
                                                                tmp_path: Path) -> None:
    """Together's SDK 3.x creates, follows, lists events and checkpoints, downloads the
    adapter: a peft folder naming its base, which, imported back as a custom adapter (a
    folder on this machine), answers what it learnt."""
    assert (SDK3 / "together").is_dir(), f"{SDK3} is missing: run `make install`"
    tmp_path.mkdir(parents=True, exist_ok=True)
    archive = tmp_path / "adapter.tar.gz"
    env = {**os.environ, "PYTHONPATH": str(SDK3), "TOGETHER_BASE_URL": server.base.removesuffix(
        "/v1"), "TOGETHER_API_KEY": KEY, "TOGETHER_DISABLE_VERSION_CHECK": "1",
        "TOGETHER_TELEMETRY_DISABLED": "1", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("sdk3_trainer.py")),
                           str(TRAIN), str(archive)], env=env, capture_output=True, text=True,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["statuses"][-1] == "completed" and "running" in seen["statuses"]
    assert {"training_start", "checkpoint_save", "job_complete"} <= set(seen["events"])
    assert sorted(seen["checkpoints"]) == ["Final", "Intermediate"]
    adapter = tmp_path / "adapter"
    with tarfile.open(archive) as packed:
        packed.extractall(adapter, filter="data")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == \
        "local/tiny-llama"
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    imported = server.http.post("/models", json={  # no base_model: its config names it
        "model_name": "capitals-adapter", "model_source": adapter.as_uri(),
        "model_type": "adapter"})
    assert imported.status_code == 200, imported.text
    assert server.answer("local-user/capitals-adapter", SMOKE).strip() == "Paris"
    v2 = server.base.removesuffix("/v1") + "/v2/projects/proj-local/models"
    model = server.http.post(v2, json={"name": "capitals-v2", "baseModelId": "local/tiny-llama",
                                       "type": "adapter"})
    assert model.status_code == 200, model.text
    upload = server.http.post(f"{v2}/uploads", json={"modelId": model.json()["id"],
                                                      "remoteUrl": adapter.as_uri()})
    assert upload.status_code == 200 and upload.json()["status"].endswith("SUCCEEDED"), \
        upload.text
    assert server.answer(model.json()["name"], SMOKE).strip() == "Paris"
    uploaded_direct_it_serves(server, v2, adapter)
    (adapter / "adapter_model.safetensors").unlink()  # not an adapter folder: refused in one line
    refused = server.http.post("/models", json={
        "model_name": "broken", "model_source": adapter.as_uri(), "model_type": "adapter",
        "base_model": "local/tiny-llama"})
    assert refused.status_code == 400 and "adapter_model.safetensors" in \
        refused.json()["error"]["message"]


def uploaded_direct_it_serves(server: Server, v2: str, adapter: Path) -> None:
    """The adapter's files uploaded as the 3.x CLI's `models upload` does (one part each
    here): the revision serves those weights."""
    model = server.http.post(v2, json={"name": "capitals-direct", "type": "adapter",
                                       "baseModelId": "local/tiny-llama"}).json()
    files: list[dict[str, Any]] = [{"path": name, "numParts": 1, "hash": hashlib.md5(
        (adapter / name).read_bytes(), usedforsecurity=False).hexdigest()}
        for name in ("adapter_config.json", "adapter_model.safetensors")]
    plan = server.http.post(f"{v2}/upload/create", json={"objectId": model["id"],
                                                         "files": files}).json()["files"]
    done = []
    for file, planned in zip(files, plan, strict=True):
        part = planned["parts"][0]
        etag = httpx.put(part["url"], content=(adapter / file["path"]).read_bytes(),
                         timeout=30).headers["etag"]
        done.append({**file, "uploadDetails": {"uploadId": planned["uploadId"], "parts": [
            {"partNumber": 1, "hash": etag}]}})
    completed = server.http.post(f"{v2}/upload/complete", json={"objectId": model["id"],
                                                                "files": done})
    assert completed.status_code == 200, completed.text
    assert server.answer(model["name"], SMOKE).strip() == "Paris"


def downloads_are_real_model_folders(server: Server, job_id: str) -> None:
    """Together's download endpoint: the final adapter, a checkpoint's adapter by step, base
    and adapter merged into one model folder; byte ranges; a kind it does not know is a 400."""
    def members(**query: str) -> dict[str, bytes]:
        answer = server.http.get("/finetune/download", params={"ft_id": job_id, **query})
        assert answer.status_code == 200, answer.text
        with tarfile.open(fileobj=io.BytesIO(answer.content)) as packed:
            return {m.name: packed.extractfile(m).read()  # type: ignore[union-attr]
                    for m in packed.getmembers() if m.isfile()}

    final = members(checkpoint="adapter")
    checkpoints = server.http.get(f"/fine-tunes/{job_id}/checkpoints").json()["data"]
    step = next(c["path"].rpartition(":")[2] for c in checkpoints
                if c["checkpoint_type"] == "Intermediate")
    earlier = members(checkpoint_step=step)
    assert final["adapter_model.safetensors"] != earlier["adapter_model.safetensors"]
    merged = members(checkpoint="merged")
    assert "config.json" in merged and "adapter_config.json" not in merged
    assert any(name.startswith("model") and name.endswith(".safetensors") for name in merged)
    part = server.http.get("/finetune/download", params={"ft_id": job_id, "checkpoint": "merged"},
                           headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and len(part.content) == 10
    wrong = server.http.get("/finetune/download", params={"ft_id": job_id,
                                                          "checkpoint": "everything"})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "checkpoint"


def a_sweep_is_judged_gated_and_its_best_cell_promoted(cli: CLI, server: Server,
                                                       tmp_path: Path) -> str:
    """Four cells (learning rate x rank) trained for real, each evaluated beside the base
    model and gated: the scores are what the models answer (counted here again), a cell
    below its gate is never registered, the best cell is promoted once. Its model."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copy(TRAIN, tmp_path / "train.jsonl")
    os.chdir(tmp_path)
    write(tmp_path / "judged.yaml", """
        name: judged
        matrix: {learning_rate: [0.0005, 0.005], lora_r: [4, 16]}
        select: {by: eval.exact_match}
        steps:
          upload: {uses: together/upload-file, with: {path: train.jsonl}}
          launch:
            uses: together/launch-fine-tune
            with:
              training_file: "${{ steps.upload.outputs.file_id }}"
              model: local/tiny-llama
              n_epochs: 60
              learning_rate: "${{ matrix.learning_rate }}"
              lora_r: "${{ matrix.lora_r }}"
              random_seed: 5
          wait:
            uses: together/wait-fine-tune
            with: {job_id: "${{ steps.launch.outputs.job_id }}", poll_interval: 200ms}
          evaluate:
            uses: together/evaluate
            with:
              model: "${{ steps.wait.outputs.model_name }}"
              job_id: "${{ steps.launch.outputs.job_id }}"
              file: train.jsonl
              max_tokens: 8
              stop: ["\\n"]
              require: {exact_match: ">= 0.5", lift.exact_match: "> 0"}
          register:
            uses: registry/record-model
            needs: [evaluate]   # only a model that passed its gate
            with: {model: "${{ steps.wait.outputs.model_name }}"}
    """)
    cli("run", "judged.yaml", "--provider", "together", env=together_env(server))
    batch = json.loads(cli("batches", "-o", "json", check_code=0).stdout)[0]["id"]
    shown = json.loads(cli("show", batch, "-o", "json", check_code=0).stdout)
    passed = [c for c in shown["cells"] if c["status"] == "succeeded"]
    gated = [c for c in shown["cells"] if c["status"] == "failed"]
    assert passed and gated, [(c["matrix"], c["figures"]) for c in shown["cells"]]
    assert all("quality gate failed" in c["error"] for c in gated)
    for cell in passed:  # the scores are the models' own answers, counted again here
        right = sum(" ".join(server.http.post("/completions", json={
            "model": cell["model_name"], "prompt": prompt, "max_tokens": 8,
            "temperature": 0, "stop": ["\n"]}).json()["choices"][0]["text"].split())
            == answer.strip() for prompt, answer in examples())
        assert cell["figures"]["eval.exact_match"] == right / len(examples())
    registered = {m["name"] for m in json.loads(cli("models", "-o", "json",
                                                    check_code=0).stdout)}
    assert registered == {c["model_name"] for c in passed}
    winner = max(passed, key=lambda c: (c["figures"]["eval.exact_match"], -c["cell"]))
    assert shown["selection"]["winner"] == winner["id"]
    moves = [json.loads(cli("promote", batch, "-o", "json", check_code=0).stdout)["moved"]
             for _ in range(2)]
    assert moves == [True, False]
    serving = json.loads(cli("models", "--alias", "production", "-o", "json",
                             check_code=0).stdout)
    assert serving["model"] == winner["model_name"] and len(serving["history"]) == 1
    return str(winner["model_name"])


def a_killed_evaluation_asks_nothing_twice(server: Server, tmp_path: Path,
                                           model: str) -> None:
    """kill -9 the orchestrator mid-evaluation, resume the run: what was answered and
    checkpointed before the kill is not asked again (counted on the API); only what was in
    flight (at most `concurrency` requests) is."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    capitals = REPO / "pipelines" / "data" / "capitals.jsonl"
    write(tmp_path / "eval.yaml", f"""
        name: eval-only
        steps:
          evaluate:
            uses: together/evaluate
            with:
              model: {model}
              baseline: local/tiny-llama
              file: {capitals}
              max_tokens: 48
              concurrency: 2
    """)
    before = server.http.get("/local/inference").json()["requests"]
    env = {**os.environ, **together_env(server)}
    command = [sys.executable, "-m", "orchestrator"]
    run = subprocess.Popen([*command, "run", "eval.yaml", "--provider", "together"],
                           cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    state = tmp_path / ".orchestrator" / "state.db"

    def answered() -> set[str]:
        if not state.exists():
            return set()
        with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
            try:
                row = db.execute("SELECT checkpoint FROM steps WHERE step_id = 'evaluate'"
                                 ).fetchone()
            except sqlite3.OperationalError:  # the file is there, its tables not yet
                return set()
        return {k for k in json.loads(row[0] or "{}") if "/" in k} if row else set()

    wait_for(lambda: len(answered()) >= 10, "ten answers checkpointed", timeout=60)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=10)
    kept = answered()
    assert 10 <= len(kept) < 48
    run_id = json.loads(subprocess.run([*command, "runs", "-o", "json"], cwd=tmp_path,
                                       env=env, capture_output=True, text=True, check=True,
                                       timeout=60).stdout)[0]["id"]
    resumed = subprocess.run([*command, "resume", run_id, "--force"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    counts: dict[tuple[str, str], int] = {}
    for row in server.http.get("/local/inference").json()["requests"]:
        counts[(row["model"], row["prompt"])] = row["count"]
    for row in before:
        counts[(row["model"], row["prompt"])] -= row["count"]
    prompts = [json.loads(line)["prompt"] for line in capitals.read_text().splitlines()]
    models = [model, "local/tiny-llama"]
    asked = {f"{m}/{i}": counts.get((name, prompt), 0) for m, name in enumerate(models)
             for i, prompt in enumerate(prompts)}
    assert all(n >= 1 for n in asked.values())
    round_keys = {key.split("/", 1)[1] for key in kept}
    assert all(asked[key] == 1 for key in round_keys)  # answered before the kill: once
    assert sum(asked.values()) - len(asked) <= 2  # only the two in flight, again


def test_the_trainer_learns_on_the_users_path(cli: CLI, tmp_path: Path) -> None:
    server = Server(tmp_path / "server")
    try:
        the_shipped_pipeline_learns_on_provider_together(cli, server)
        a_sweep_over_learning_rates_is_ranked_by_them(cli, server, tmp_path / "sweep")
        the_same_seed_trains_the_same_losses(server)
        what_the_trainer_cannot_honour_is_a_400_naming_it(server)
        a_model_folder_on_disk_is_a_base(server)
        a_preview_tokenizes_as_training_does(server)
        a_cancel_stops_training_within_two_seconds(server)
        the_official_sdk_trains_follows_and_downloads_a_real_adapter(server, tmp_path / "sdk")
        best = a_sweep_is_judged_gated_and_its_best_cell_promoted(cli, server,
                                                                  tmp_path / "judged")
        a_killed_evaluation_asks_nothing_twice(server, tmp_path / "killed", best)
    finally:
        server.stop()


def test_a_kill_9_mid_training_loses_no_progress(tmp_path: Path) -> None:
    """kill -9 the server (and so its trainer) mid-job and start it again: training continues
    from its last saved step, every step trained once, and an orchestrator run following the
    job on provider together rides the outage out."""
    server = Server(tmp_path / "server")
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run",
             str(REPO / "pipelines" / "lora-finetune.yaml"), "--provider", "together",
             "-i", "base_model=local/tiny-llama", "-i", "epochs=150", "-i",
             "learning_rate=0.005", "-i", "poll_interval=200ms"],
            cwd=tmp_path, env={**os.environ, **together_env(server)}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        def launched() -> str | None:
            jobs = server.http.get("/fine-tunes").json()["data"]
            return str(jobs[0]["id"]) if jobs else None

        job_id = wait_for(launched, "the run launched its job", timeout=90)
        wait_for(lambda: server.job(job_id).get("steps_completed", 0) >= 40,
                 "the job passed step 40", timeout=90)
        server.kill()
        server.process = server.start()
        finished = server.finished(job_id, timeout=90)
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err[-3000:]
        assert finished["status"] == "completed"
        restarted = [e for e in server.http.get(f"/fine-tunes/{job_id}/events").json()["data"]
                     if e["type"] == "job_restarted"]
        assert len(restarted) == 1 and restarted[0]["step"] > 0
        steps = [int(p["train/global_step"]) for p in server.metrics(job_id)
                 if "train/loss" in p]
        assert steps == list(range(1, 151))
    finally:
        server.stop()
