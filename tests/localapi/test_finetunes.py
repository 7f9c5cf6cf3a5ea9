"""Fine-tuning jobs: checked creation, progress by the clock, cancel, failure, and the rest."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import pytest

from orchestrator.localapi import LocalAPI
from orchestrator.testing import FakeClock
from tests.localapi.conftest import BASE, create_job, upload


async def test_job_progresses_by_the_clock(client: httpx.AsyncClient, clock: FakeClock) -> None:
    """Status, events, token count and checkpoints follow the planned timeline exactly."""
    file = await upload(client)
    created = await create_job(client, file["id"], n_epochs=2, n_checkpoints=2, suffix="demo",
                               plan={"duration": "100s"})
    assert created.status_code == 200, created.text
    job = created.json()
    assert (job["status"], job["model_output_name"]) == (
        "pending", f"local-user/Meta-Llama-3.1-8B-Instruct-Reference-demo-{job['id'][3:11]}")
    seen: list[tuple[int, str]] = []
    tokens, estimates = [], {}
    for second in range(0, 105, 3):
        now = (await client.get(f"/fine-tunes/{job['id']}")).json()
        if not seen or seen[-1][1] != now["status"]:
            seen.append((second, now["status"]))
        tokens.append(now["token_count"])
        estimates[second] = now["progress"]["seconds_remaining"]
        clock.advance(3)
    assert [status for _, status in seen] == ["pending", "queued", "running", "compressing",
                                              "uploading", "completed"]
    assert [second for second, _ in seen] == [0, 12, 21, 81, 90, 102]
    # The estimate is the time to the next status change, in whole seconds rounded down.
    assert (estimates[0], estimates[9], estimates[12], estimates[78], estimates[102]) == (
        10, 1, 8, 2, 0)
    assert tokens == sorted(tokens) and tokens[-1] > 0
    final = (await client.get(f"/fine-tunes/{job['id']}")).json()
    kinds = [e["type"] for e in final["events"]]
    assert kinds[0] == "job_pending" and kinds[-1] == "job_complete"
    assert kinds.count("epoch_complete") == 2 and "checkpoint_save" in kinds
    assert "simulated" in final["events"][0]["message"]
    checkpoints = (await client.get(f"/fine-tunes/{job['id']}/checkpoints")).json()["data"]
    assert [c["checkpoint_type"] for c in checkpoints] == ["Intermediate", "Final"]
    metrics = (await client.get(f"/fine-tunes/{job['id']}/metrics")).json()["metrics"]
    losses = [m["train/loss"] for m in metrics if "train/loss" in m]
    assert losses[-1] < losses[0]
    steps = [m["train/global_step"] for m in metrics]
    middle = int(steps[len(steps) // 2])
    later = (await client.request("GET", f"/fine-tunes/{job['id']}/metrics",
                                  json={"global_step_from": middle})).json()["metrics"]
    assert len(steps) > 1 and later
    assert [m["train/global_step"] for m in later] == [s for s in steps if s >= middle]
    bad = await client.request("GET", f"/fine-tunes/{job['id']}/metrics",
                               json={"global_step_from": "3"})
    assert bad.status_code == 400 and "global_step_from" in bad.text


async def test_create_accepts_every_field_and_keeps_secrets_out(
        client: httpx.AsyncClient, api: LocalAPI) -> None:
    """Every create field is taken; W&B and HF keys are accepted but never stored or echoed."""
    train = await upload(client)
    instruction_valid = await upload(client, b'{"prompt": "p", "completion": "c"}\n',
                                     name="valid.jsonl")
    response = await create_job(
        client, train["id"], validation_file=instruction_valid["id"], n_epochs=3,
        n_checkpoints=2, n_evals=2, batch_size=16, learning_rate=2e-4, warmup_ratio=0.1,
        max_grad_norm=0.5, weight_decay=0.01, suffix="sweep-1", wandb_key="wandb-secret-1",
        wandb_api_key="wandb-secret-2", wandb_project_name="proj", wandb_name="run",
        hf_api_token="hf-secret-3", random_seed=7,
        lr_scheduler={"lr_scheduler_type": "linear", "lr_scheduler_args": {"min_lr_ratio": 0.1}},
        training_method={"method": "sft", "train_on_inputs": True},
        training_type={"type": "Lora", "lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.05,
                       "lora_trainable_modules": "q_proj,v_proj"})
    assert response.status_code == 200, response.text
    job = (await client.get(f"/fine-tunes/{response.json()['id']}")).json()
    assert {k: job[k] for k in ("n_epochs", "n_checkpoints", "n_evals", "batch_size",
                                "learning_rate", "validation_file", "suffix")} == {
        "n_epochs": 3, "n_checkpoints": 2, "n_evals": 2, "batch_size": 16,
        "learning_rate": 2e-4, "validation_file": instruction_valid["id"], "suffix": "sweep-1"}
    assert job["training_type"] == {"type": "Lora", "lora_r": 32, "lora_alpha": 64,
                                    "lora_dropout": 0.05, "lora_trainable_modules": "q_proj,v_proj"}
    assert job["lr_scheduler"]["lr_scheduler_type"] == "linear"
    text = response.text + str(job)
    db = (api.config.data_dir / "local-api.db").read_bytes()
    for secret in ("wandb-secret-1", "wandb-secret-2", "hf-secret-3"):
        assert secret not in text
        assert secret.encode() not in db


@pytest.mark.parametrize(("fields", "param", "fragment"), [
    pytest.param({"model": "acme/unknown-7b"}, "model", "is not available for fine-tuning",
                 id="unknown-model"),
    pytest.param({"model": None}, "model", "model is required", id="no-model"),
    pytest.param({"training_file": "file-missing"}, "training_file", "not found",
                 id="missing-file"),
    pytest.param({"n_epochs": 0}, "n_epochs", "n_epochs must be in [1, 20], not 0",
                 id="epochs-low"),
    pytest.param({"n_epochs": "three"}, "n_epochs", "n_epochs must be an integer",
                 id="epochs-type"),
    pytest.param({"learning_rate": 3.0}, "learning_rate", "learning_rate must be in",
                 id="lr-high"),
    pytest.param({"n_checkpoints": 50}, "n_checkpoints", "n_checkpoints must be in",
                 id="checkpoints"),
    pytest.param({"n_evals": 2}, "n_evals", "n_evals > 0 needs a validation_file",
                 id="evals-without-validation"),
    pytest.param({"early_stopping_enabled": True}, "early_stopping_enabled",
                 "early stopping needs a validation_file", id="early-stopping-alone"),
    pytest.param({"early_stopping_enabled": "yes"}, "early_stopping_enabled",
                 "must be true or false", id="early-stopping-type"),
    pytest.param({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps",
                 "gradient_accumulation_steps must be in", id="accumulation-zero"),
    pytest.param({"batch_size": 2}, "batch_size", "batch_size must be in [8, 32]",
                 id="batch-small"),
    pytest.param({"warmup_ratio": 1.5}, "warmup_ratio", "warmup_ratio must be in [0, 1]",
                 id="warmup"),
    pytest.param({"max_grad_norm": -1}, "max_grad_norm", "max_grad_norm must be in",
                 id="grad-norm"),
    pytest.param({"suffix": "has spaces"}, "suffix", "suffix must be 1-40", id="suffix"),
    pytest.param({"training_type": {"type": "Lora", "lora_r": 512}}, "lora_r",
                 "lora_r must be in [1, 64]", id="lora-rank"),
    pytest.param({"training_type": {"type": "Lora", "lora_dropout": 1.0}}, "lora_dropout",
                 "lora_dropout must be in [0, 1)", id="lora-dropout"),
    pytest.param({"training_type": {"type": "Qlora"}}, "training_type", "must be 'Lora' or",
                 id="training-type"),
    pytest.param({"model": "meta-llama/Meta-Llama-3.1-70B-Instruct-Reference",
                  "training_type": {"type": "Full"}}, "training_type",
                 "full fine-tuning is not available", id="full-on-70b"),
    pytest.param({"training_method": {"method": "dpo"}}, "training_method",
                 "DPO needs a preference dataset", id="dpo-on-instructions"),
    pytest.param({"lr_scheduler": {"lr_scheduler_type": "step"}}, "lr_scheduler",
                 "lr_scheduler_type must be", id="scheduler"),
])
async def test_bad_create_requests_are_400s(client: httpx.AsyncClient, fields: dict[str, Any],
                                            param: str, fragment: str) -> None:
    file = await upload(client)
    body = {"training_file": file["id"], "model": BASE, **fields}
    response = await client.post("/fine-tunes", json={k: v for k, v in body.items()
                                                      if v is not None})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert fragment in error["message"]
    assert error["type"] == "invalid_request_error"


async def test_dataset_problems_stop_a_create(client: httpx.AsyncClient) -> None:
    """An invalid or wrong-purpose file cannot be trained on."""
    invalid = await upload(client, b'{"oops": 1}\n')
    response = await create_job(client, invalid["id"])
    assert response.status_code == 400
    assert "is not a valid fine-tuning dataset: line 1: no dataset format" in \
        response.json()["error"]["message"]
    evals = await upload(client, b'{"prompt": "a", "completion": "b"}\n', purpose="eval")
    response = await create_job(client, evals["id"])
    assert "was uploaded with purpose 'eval'" in response.json()["error"]["message"]
    not_json = await client.post("/fine-tunes", content=b"{", headers={
        "Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert not_json.json()["error"]["message"] == ("the request body must be a JSON object "
                                                   "(unexpected end of data at line 1, column 2)")


async def test_cancel(client: httpx.AsyncClient, clock: FakeClock) -> None:
    """cancel_requested at once, cancelled shortly after; training stops where it was."""
    file = await upload(client)
    job = (await create_job(client, file["id"], plan={"duration": "100s"})).json()
    clock.advance(50)
    cancelled = await client.post(f"/fine-tunes/{job['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancel_requested"
    tokens = cancelled.json()["token_count"]
    clock.advance(2)
    after = (await client.get(f"/fine-tunes/{job['id']}")).json()
    assert after["status"] == "cancelled"
    assert [e["type"] for e in after["events"]][-2:] == ["cancel_requested", "job_stopped"]
    clock.advance(100)
    later = (await client.get(f"/fine-tunes/{job['id']}")).json()
    assert (later["status"], later["token_count"]) == ("cancelled", tokens)
    again = await client.post(f"/fine-tunes/{job['id']}/cancel")
    assert again.status_code == 400
    assert "already cancelled" in again.json()["error"]["message"]


@pytest.mark.parametrize("outcome", ["error", "user_error"])
async def test_planned_failure(client: httpx.AsyncClient, clock: FakeClock, outcome: str) -> None:
    file = await upload(client)
    job = (await create_job(client, file["id"], plan={"duration": "100s", "outcome": outcome,
                                                      "fail_at": 0.3})).json()
    clock.advance(29)
    assert (await client.get(f"/fine-tunes/{job['id']}")).json()["status"] == "running"
    clock.advance(2)
    failed = (await client.get(f"/fine-tunes/{job['id']}")).json()
    assert failed["status"] == outcome
    assert failed["events"][-1]["type"] == "job_error"
    assert failed["events"][-1]["level"] == "error"
    clock.advance(100)
    assert (await client.get(f"/fine-tunes/{job['id']}")).json()["status"] == outcome


async def test_list_delete_download(client: httpx.AsyncClient, clock: FakeClock) -> None:
    file = await upload(client)
    job = (await create_job(client, file["id"])).json()
    listed = (await client.get("/fine-tunes")).json()["data"]
    assert [j["id"] for j in listed] == [job["id"]] and "events" not in listed[0]
    early = await client.delete(f"/fine-tunes/{job['id']}")
    assert early.status_code == 400 and "cancel it before deleting" in early.text
    not_yet = await client.get("/finetune/download", params={"ft_id": job["id"]})
    assert not_yet.status_code == 400
    clock.advance(101)
    size = await client.get("/finetune/download", params={"ft_id": job["id"]},
                            headers={"Range": "bytes=0-1"})
    assert size.status_code == 206
    total = int(size.headers["content-range"].split("/")[1])
    whole = await client.get("/finetune/download", params={"ft_id": job["id"]})
    assert len(whole.content) == total > 0
    deleted = await client.delete(f"/fine-tunes/{job['id']}")
    assert deleted.json() == {"message": f"fine-tuning job {job['id']} deleted"}
    assert (await client.get(f"/fine-tunes/{job['id']}")).status_code == 404


async def test_limits_supported_and_price(client: httpx.AsyncClient) -> None:
    limits = (await client.get("/fine-tunes/models/limits", params={"model_name": BASE})).json()
    assert limits["model_name"] == BASE and limits["lora_training"]["max_rank"] == 64
    unknown = await client.get("/fine-tunes/models/limits", params={"model_name": "x/y"})
    assert unknown.status_code == 404 and "not available" in unknown.json()["message"]
    supported = (await client.get("/fine-tunes/models/supported")).json()["models"]
    assert BASE in supported
    file = await upload(client)
    price = (await client.post("/fine-tunes/estimate-price", json={
        "training_file": file["id"], "model": BASE, "n_epochs": 2})).json()
    assert price["allowed_to_proceed"] is True
    assert price["estimated_train_token_count"] == file["bytes"] // 4 * 2


async def test_jobs_survive_a_restart(local_config: Any, clock: FakeClock) -> None:
    """A second LocalAPI on the same data directory sees the job where the clock says."""
    from orchestrator.localapi import LocalAPI, local_client

    first = LocalAPI(local_config, clock=clock)
    async with local_client(local_config, api=first) as client:
        file = await upload(client)
        job = (await create_job(client, file["id"], plan={"duration": "100s"})).json()
    clock.advance(150)
    second = LocalAPI(local_config, clock=clock)
    async with local_client(local_config, api=second) as client:
        assert (await client.get(f"/fine-tunes/{job['id']}")).json()["status"] == "completed"
    db = sqlite3.connect(local_config.data_dir / "local-api.db")
    assert db.execute("SELECT count(*) FROM finetunes").fetchone() == (1,)
    db.close()


async def test_the_learning_rate_series_follows_the_jobs_schedule(
        client: httpx.AsyncClient, clock: FakeClock) -> None:
    """The simulated series was a cosine from 1e-5 whatever the job asked: it is now the
    job's own learning_rate, warmup, scheduler and floor (the one a real trainer uses)."""
    file = await upload(client, b"".join(
        b'{"prompt": "q%d", "completion": " a"}\n' % i for i in range(64)))
    created = await create_job(client, file["id"], n_epochs=2, batch_size=8,
                               learning_rate=2e-4, warmup_ratio=0.25,
                               lr_scheduler={"lr_scheduler_type": "linear",
                                             "lr_scheduler_args": {"min_lr_ratio": 0.1}},
                               plan={"duration": "10s"})
    assert created.status_code == 200, created.text
    clock.advance(20)
    metrics = (await client.get(f"/fine-tunes/{created.json()['id']}/metrics")).json()
    series = [(int(m["train/global_step"]), m["train/learning_rate"])
              for m in metrics["metrics"] if "train/learning_rate" in m]
    assert [step for step, _ in series] == list(range(1, 17))  # 2 epochs of 64 / 8
    rates = dict(series)
    assert rates[1] == pytest.approx(2e-4 / 4) and rates[4] == pytest.approx(2e-4)
    assert rates[16] == pytest.approx(2e-5 + 1.8e-4 / 12)  # linear, one step to its floor
    assert rates[5] == rates[4] and all(rates[s] > rates[s + 1] for s in range(5, 16))
    assert min(rates.values()) >= 2e-5


def test_the_schedules_shapes() -> None:
    from orchestrator.protocol.schedule import LRSchedule

    cosine = LRSchedule(1.0, "cosine")
    # As transformers' schedulers: step s of T decays by s / T (the last is not quite 0).
    assert [round(cosine.at(s, 5), 4) for s in range(5)] == [1.0, 0.9045, 0.6545, 0.3455,
                                                             0.0955]
    floor = LRSchedule(1.0, "cosine", min_lr_ratio=0.2)
    assert floor.at(5, 5) == pytest.approx(0.2)
    warm = LRSchedule(1.0, "linear", warmup_ratio=0.5)
    assert [warm.at(s, 4) for s in range(4)] == [0.5, 1.0, 1.0, 0.5]
    assert LRSchedule.of_request({"learning_rate": 3e-4, "warmup_ratio": 0.1, "lr_scheduler": {
        "lr_scheduler_type": "linear", "lr_scheduler_args": {"min_lr_ratio": 0.5}}}) == \
        LRSchedule(3e-4, "linear", 0.1, 0.5)


async def test_a_preview_shows_how_a_file_tokenizes_and_what_is_learnt(
        client: httpx.AsyncClient) -> None:
    """SDK 3.x's `fine_tuning.preview` (a 405 before: `preview` taken for a job id). Without a
    trainer the tokens are the local API's words, and it says so."""
    file_id = (await upload(client))["id"]
    shown = await client.post("/fine-tunes/preview", json={
        "model": BASE, "training_file": file_id, "top_k": 2})
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert (body["dataset_format"], body["simulated"], len(body["rows"])) == (
        "instruction", True, 2)
    row = body["rows"][0]
    assert len(row["input_ids"]) == len(row["labels"]) == len(row["tokens"]) == \
        row["num_tokens"]
    learnt = [i for i, label in enumerate(row["labels"]) if label != -100]
    assert learnt and row["num_trained_tokens"] == len(learnt)
    assert [list(range(b, e)) for b, e in row["trained_spans"]] == [learnt]
    assert learnt[0] > 0  # the prompt is not learnt unless train_on_inputs
    everything = (await client.post("/fine-tunes/preview", json={
        "model": BASE, "training_file": file_id, "top_k": 1,
        "train_on_inputs": True})).json()["rows"][0]
    assert everything["num_trained_tokens"] == everything["num_tokens"]
    refused = await client.post("/fine-tunes/preview", json={"model": BASE,
                                                             "training_file": "file-nope"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "training_file"


async def test_a_jobs_tokenized_dataset_downloads_from_a_signed_url(
        client: httpx.AsyncClient) -> None:
    """`download-tokenized-dataset` answers a URL valid for 100 minutes, as a presigned one
    is: fetched without the key, it gives every training row's ids and labels; a URL whose
    signature is not the server's gets nothing."""
    import gzip
    import json

    file_id = (await upload(client))["id"]
    job = (await create_job(client, file_id)).json()
    where = await client.get(f"/fine-tunes/{job['id']}/download-tokenized-dataset")
    assert where.status_code == 200, where.text
    found = where.json()
    assert found["content_type"] == "application/gzip" and found["size"] > 0
    fetched = await client.get(found["url"], headers={"Authorization": ""})
    assert fetched.status_code == 200
    rows = [json.loads(line) for line in gzip.decompress(fetched.content).splitlines()]
    assert len(rows) == 3 and all(len(r["input_ids"]) == len(r["labels"]) for r in rows)
    forged = found["url"].replace("signature=", "signature=0")
    assert (await client.get(forged)).status_code == 403
    assert (await client.get("/fine-tunes/ft-nope/download-tokenized-dataset")).status_code \
        == 404


async def test_a_job_whose_file_was_deleted_has_no_tokenized_dataset(
        client: httpx.AsyncClient) -> None:
    """Found by the fuzzer: the file deleted after the job was made was a 500."""
    file_id = (await upload(client))["id"]
    job = (await create_job(client, file_id)).json()
    assert (await client.delete(f"/files/{file_id}")).status_code == 200
    gone = await client.get(f"/fine-tunes/{job['id']}/download-tokenized-dataset")
    assert gone.status_code == 404 and "was deleted" in gone.json()["error"]["message"]
