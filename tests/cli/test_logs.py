"""What `logs` and `metrics` show of a run and of a batch, and how a log line names where it
comes from."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from tests.cli.test_finetune_pipelines import FAST, LORA
from tests.conftest import CLI, REPO, write

SWEEP = """\
name: lr-sweep
matrix: {learning_rate: [0.0001, 0.001]}
steps:
  upload: {uses: together/upload-file, with: {path: data/train.jsonl}}
  launch:
    uses: together/launch-fine-tune
    with:
      training_file: "${{ steps.upload.outputs.file_id }}"
      model: meta-llama/Meta-Llama-3.1-8B-Instruct-Reference
      learning_rate: "${{ matrix.learning_rate }}"
  wait:
    uses: together/wait-fine-tune
    with: {job_id: "${{ steps.launch.outputs.job_id }}", poll_interval: 100ms}
"""


def test_a_job_events_training_step_keeps_the_pipeline_step(cli: CLI, tmp_path: Path) -> None:
    """`"step": "wait"` in every JSON line and stored line of the wait step; the job's own
    step is `train_step` (it overwrote `step` before); checkpoint lines are left out of
    `logs` unless `--all`, and `-o json` is `--json`."""
    ran = cli("run", LORA, "-i", "poll_interval=100ms", "--log-format", "json", env=FAST,
              check_code=0)
    lines = [json.loads(line) for line in ran.stderr.splitlines() if line.startswith("{")]
    assert re.search(r"^register\.recorded_at: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", ran.stdout,
                     re.MULTILINE), ran.stdout  # a time, not seconds since the epoch
    job_events = [line for line in lines if line["event"] == "job event"]
    assert job_events and {line["step"] for line in job_events} == {"wait"}
    assert any("train_step" in line for line in job_events)
    run_id = lines[0]["run_id"]
    stored = [json.loads(line) for line in cli("logs", run_id, "-o", "json",
                                               check_code=0).stdout.splitlines()]
    assert stored == [json.loads(line) for line in cli("logs", run_id, "--json",
                                                       check_code=0).stdout.splitlines()]
    kept = [e for e in stored if e["kind"] == "log" and e["data"]["message"] == "job event"]
    assert kept and {e["step"] for e in kept} == {"wait"}
    assert "step" not in {k for e in kept for k in e["data"].get("fields", {})}
    assert not [e for e in stored if e["kind"] == "checkpoint"]
    every = cli("logs", run_id, "--all", "--json", check_code=0).stdout.splitlines()
    assert any(json.loads(line)["kind"] == "checkpoint" for line in every)
    assert {e["run_id"] for e in stored} == {run_id}


def test_console_lines_name_the_run_only_where_the_header_did_not(
        cli: CLI, tmp_path: Path) -> None:
    ran = cli("run", str(REPO / "pipelines" / "hello.yaml"), "--log-format", "console",
              check_code=0)
    assert "run_id=" not in ran.stderr
    assert re.search(r"greet#1\s+step started", ran.stderr)


def test_logs_and_metrics_of_a_batch_cover_every_cell(cli: CLI, tmp_path: Path) -> None:
    write(tmp_path / "data" / "train.jsonl",
          (REPO / "pipelines" / "data" / "train.jsonl").read_text())
    write(tmp_path / "sweep.yaml", SWEEP)
    cli("run", "sweep.yaml", env=FAST, check_code=0)
    batch = json.loads(cli("batches", "-o", "json", check_code=0).stdout)[0]["id"]
    logs = cli("logs", batch, check_code=0).stdout.splitlines()
    assert {line.split()[2] for line in logs if "step_started" in line} == {"#0", "#1"}
    seqs = [json.loads(line)["seq"] for line in cli("logs", batch, "--json",
                                                    check_code=0).stdout.splitlines()]
    assert seqs == sorted(seqs) and len(seqs) == len(logs)
    table = cli("metrics", batch, check_code=0).stdout
    assert f"{batch}.0" in table and f"{batch}.1" in table and "learning_rate=0.001" in table
    rows = list(csv.DictReader(io.StringIO(cli("metrics", batch, "--csv",
                                               check_code=0).stdout)))
    assert [row["matrix.learning_rate"] for row in rows] == ["0.0001", "0.001"]
    assert [row["run_id"] for row in rows] == [f"{batch}.0", f"{batch}.1"]
    assert all(float(row["train_loss"]) > 0 and int(row["points"]) > 0 for row in rows)
    document = json.loads(cli("metrics", batch, "-o", "json", check_code=0).stdout)
    assert [cell["matrix"] for cell in document["cells"]] == [{"learning_rate": 0.0001},
                                                             {"learning_rate": 0.001}]
    assert all(cell["points"] for cell in document["cells"])
    followed = cli("logs", batch, "--follow", check_code=0)
    assert followed.stdout.splitlines() == logs
