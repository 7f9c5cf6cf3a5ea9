"""Driving the orchestrator from scripts: --version, -o json, filters, wait, logs, metrics,
completion, the pipeline schema, init, and tables that fold instead of cutting."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.helpers import run_id_from
from tests.conftest import CLI, REPO, write

LORA = str(REPO / "pipelines" / "lora-finetune.yaml")
FAST = {"ORCH_LOCAL_JOB_DURATION": "1s"}
FAST_POLL = ("-i", "poll_interval=100ms")


def _pipeline(tmp_path: Path, name: str = "p", *, fail: bool = False) -> str:
    step = ("uses: core/fail\n    with: {transient: false}\n    retry: null" if fail
            else "uses: core/echo\n    with: {x: 1}")
    write(tmp_path / f"{name}.yaml", f"name: {name}\nsteps:\n  a:\n    {step}\n")
    return f"{name}.yaml"


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def test_version(cli: CLI) -> None:
    result = cli("--version", check_code=0)
    assert re.fullmatch(r"orchestrator \d+\.\d+\.\d+\S*\n", result.stdout)


def test_runs_as_json_with_filters(cli: CLI, tmp_path: Path) -> None:
    """runs -o json lists whole records in a stable shape; --status, --pipeline and --since
    narrow it; a bad filter is one line and exit 2."""
    ok = run_id_from(cli("run", _pipeline(tmp_path, "good"), check_code=0).stderr)
    bad = run_id_from(cli("run", _pipeline(tmp_path, "bad", fail=True), check_code=1).stderr)
    runs = _json(cli("runs", "-o", "json", check_code=0))
    assert isinstance(runs, list)
    assert [r["id"] for r in runs] == [bad, ok]
    assert set(runs[0]) >= {"id", "pipeline", "status", "provider", "created_at", "started_at",
                            "finished_at", "duration", "error", "inputs", "batch_id",
                            "executor_gone"}
    assert (runs[0]["status"], runs[1]["status"]) == ("failed", "succeeded")
    assert "planned failure" in runs[0]["error"]
    failed = _json(cli("runs", "-o", "json", "--status", "failed,cancelled", check_code=0))
    assert [r["id"] for r in failed] == [bad]
    named = _json(cli("runs", "-o", "json", "--pipeline", "good", check_code=0))
    assert [r["id"] for r in named] == [ok]
    assert _json(cli("runs", "-o", "json", "--since", "2099-01-01", check_code=0)) == []
    assert len(_json(cli("runs", "-o", "json", "--since", "1h", check_code=0))) == 2
    assert "no runs match" in cli("runs", "--status", "stranded", check_code=0).stdout
    refused = cli("runs", "--status", "sideways", check_code=2)
    assert refused.stderr.strip().count("\n") == 0 and "not a run status" in refused.stderr
    refused = cli("runs", "--since", "last tuesday", check_code=2)
    assert "--since 'last tuesday'" in refused.stderr and "Traceback" not in refused.stderr


def test_show_models_and_metrics_of_a_fine_tune(cli: CLI) -> None:
    """A LoRA run: show -o json has the run, its steps in order and its final losses; metrics
    prints the series as JSON and CSV with training steps in order; show prints the losses;
    models -o json names the model whole, with its lineage; the run's folder has the loss
    curves."""
    run = cli("run", LORA, *FAST_POLL, env=FAST, check_code=0)
    run_id = run_id_from(run.stderr)
    shown = _json(cli("show", run_id, "-o", "json", check_code=0))
    assert isinstance(shown, dict)
    assert shown["run"]["id"] == run_id and shown["run"]["status"] == "succeeded"
    assert [s["id"] for s in shown["steps"]] == ["upload", "upload_validation", "launch", "wait",
                                                 "smoke", "register"]
    assert shown["metrics"]["points"] > 0 and shown["metrics"]["train_loss"] > 0
    series = _json(cli("metrics", run_id, "--json", check_code=0))
    assert isinstance(series, dict)
    steps = [p["train_step"] for p in series["points"]]
    assert steps and steps == sorted(steps) and len(set(steps)) == len(steps)
    assert all(p["train_loss"] is not None for p in series["points"])
    assert series["train_loss"] == shown["metrics"]["train_loss"]
    rows = list(csv.DictReader(io.StringIO(cli("metrics", run_id, "--csv",
                                               check_code=0).stdout)))
    assert [int(r["train_step"]) for r in rows] == steps
    text = cli("show", run_id, check_code=0).stdout
    assert f"losses    train {series['train_loss']:.4f}" in text
    table = cli("metrics", run_id, check_code=0).stdout
    assert "TRAIN LOSS" in table and "final train loss" in table
    models = _json(cli("models", "-o", "json", check_code=0))
    assert isinstance(models, list) and len(models) == 1
    model = models[0]
    assert model["name"] == shown["steps"][3]["outputs"]["model_name"]
    assert (model["run_id"], model["tags"]["smoke_test"]) == (run_id, "passed")
    assert model["metrics"]["smoke_latency"] is not None
    folder = Path(".orchestrator/artifacts") / run_id
    svg = (folder / "loss-wait.svg").read_text()
    assert svg.count('class="point train-loss"') == len(steps)
    assert (folder / "loss-wait.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_batches_and_schedules_as_json(cli: CLI, tmp_path: Path) -> None:
    write(tmp_path / "sweep.yaml", """\
        name: sweep
        matrix: {lr: [1, 2, 3]}
        schedule: {cron: "0 2 * * *", timezone: Europe/Paris}
        steps:
          a:
            uses: core/echo
            with: {lr: "${{ matrix.lr }}"}
    """)
    cli("run", "sweep.yaml", check_code=0)
    batches = _json(cli("batches", "-o", "json", check_code=0))
    assert isinstance(batches, list) and len(batches) == 1
    batch = batches[0]
    assert (batch["size"], batch["status"], batch["counts"]) == (3, "succeeded",
                                                                 {"succeeded": 3})
    shown = _json(cli("show", batch["id"], "-o", "json", check_code=0))
    assert isinstance(shown, dict)
    assert [c["matrix"] for c in shown["cells"]] == [{"lr": 1}, {"lr": 2}, {"lr": 3}]
    schedules = _json(cli("schedules", "sweep.yaml", "-o", "json", check_code=0))
    assert isinstance(schedules, list)
    assert (schedules[0]["cron"], schedules[0]["timezone"]) == ("0 2 * * *", "Europe/Paris")
    assert schedules[0]["next_fire"] > 0 and schedules[0]["last_run"] is None


def test_wait_returns_the_runs_outcome(cli: CLI, tmp_path: Path) -> None:
    """wait: 0 for a succeeded run, 1 for a failed one, 2 for an unknown id, 75 when the
    timeout comes first (a queued run no worker takes)."""
    ok = run_id_from(cli("run", _pipeline(tmp_path, "good"), check_code=0).stderr)
    bad = run_id_from(cli("run", _pipeline(tmp_path, "bad", fail=True), check_code=1).stderr)
    assert "succeeded" in cli("wait", ok, check_code=0).stderr
    assert "failed" in cli("wait", bad, check_code=1).stderr
    assert "no run with id" in cli("wait", "r-nope", check_code=2).stderr
    queued = cli("run", "good.yaml", "--detach", check_code=0).stdout.strip()
    late = cli("wait", queued, "--timeout", "0.3", check_code=75)
    assert "still going after 0.3s" in late.stderr


def test_logs_filter_and_follow_exit_codes(cli: CLI, tmp_path: Path) -> None:
    write(tmp_path / "talk.yaml", """\
        name: talk
        steps:
          speak:
            uses: {python: "talky:speak"}
          fail:
            uses: core/fail
            with: {times: 1}
            needs: [speak]
            retry: {max_attempts: 2, initial_delay: 10ms}
    """)
    write(tmp_path / "talky.py", """\
        async def speak(ctx) -> dict:
            ctx.log.info("hello from the step", n=3)
            ctx.log.debug("not kept")
            ctx.log.warning("careful", reason={"deep": [1, 2]})
            return {}
    """)
    run_id = run_id_from(cli("run", "talk.yaml", check_code=0).stderr)
    lines = cli("logs", run_id, "--step", "speak", check_code=0).stdout.splitlines()
    assert any("info" in line and "hello from the step n=3" in line for line in lines)
    assert any("warning" in line and 'careful reason={"deep": [1, 2]}' in line
               for line in lines)
    assert not any("not kept" in line for line in lines)
    assert all(" speak#1 " in line for line in lines)
    events = [json.loads(line) for line in
              cli("logs", run_id, "--json", "--step", "fail", "--attempt", "2",
                  check_code=0).stdout.splitlines()]
    assert events and {(e["step"], e["attempt"]) for e in events} == {("fail", 2)}
    assert cli("logs", run_id, "--follow", check_code=0).stdout
    bad = run_id_from(cli("run", _pipeline(tmp_path, "bad", fail=True), check_code=1).stderr)
    cli("logs", bad, "--follow", check_code=1)


def test_a_step_that_logs_too_much_keeps_a_bounded_log(cli: CLI, tmp_path: Path) -> None:
    from orchestrator.engine.steplog import MAX_LINES, MAX_VALUE

    write(tmp_path / "loud.yaml", "name: loud\nsteps:\n  a:\n    uses: {python: \"loud:go\"}\n")
    write(tmp_path / "loud.py", f"""\
        async def go(ctx) -> dict:
            for i in range({MAX_LINES + 500}):
                ctx.log.info("line", i=i, big="x" * {MAX_VALUE * 3})
            return {{}}
    """)
    run_id = run_id_from(cli("run", "loud.yaml", check_code=0).stderr)
    events = [json.loads(line) for line in cli("logs", run_id, "--json", "--step", "a",
                                               check_code=0).stdout.splitlines()]
    kept = [e for e in events if e["kind"] == "log"]
    assert len(kept) == MAX_LINES
    assert "later ones are printed, not kept" in kept[-1]["data"]["message"]
    assert len(kept[0]["data"]["fields"]["big"]) == MAX_VALUE + 3


def test_completion_scripts(tmp_path: Path, cli: CLI) -> None:
    """The bash script completes commands, flags and their choices when bash runs it; zsh
    and fish scripts name every command."""
    script = cli("completion", "bash", check_code=0).stdout
    (tmp_path / "c.bash").write_text(script)

    def complete(line: str) -> set[str]:
        words = line.split(" ")
        program = (f"source {tmp_path / 'c.bash'}; COMP_WORDS=({' '.join(map(repr, words))});"
                   f" COMP_CWORD={len(words) - 1}; _orchestrator_complete; "
                   'printf "%s\\n" "${COMPREPLY[@]}"')
        done = subprocess.run(["bash", "-c", program], capture_output=True, text=True,
                              check=True, cwd=tmp_path)
        return set(done.stdout.split())

    assert complete("orchestrator ru") == {"run", "runs"}
    assert {"--status", "--state-url", "--since"} <= complete("orchestrator runs --s")
    assert complete("orchestrator runs -o ") == {"table", "json"}
    assert complete("orchestrator metrics r-1 -o ") == {"table", "json", "csv"}
    assert complete("orchestrator completion ") == {"bash", "zsh", "fish"}
    (tmp_path / "pipe.yaml").write_text("")
    assert "pipe.yaml" in complete("orchestrator validate pi")
    zsh = cli("completion", "zsh", check_code=0).stdout
    fish = cli("completion", "fish", check_code=0).stdout
    assert "bashcompinit" in zsh
    for command in ("run", "resume", "metrics", "wait", "init", "schema"):
        assert f"-a {command} " in fish
    assert "-l status" in fish and "-x -a 'table json csv'" in fish
    cli("completion", "tcsh", check_code=2)


def test_the_schema_accepts_the_shipped_pipelines_and_flags_mistakes(cli: CLI) -> None:
    import jsonschema

    schema = json.loads(cli("schema", check_code=0).stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted((REPO / "pipelines").glob("*.yaml")):
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, (path.name, [e.message for e in errors])
    bad = yaml.safe_load(Path(LORA).read_text())
    bad["steps"]["launch"]["with"]["n_epochz"] = 3
    bad["steps"]["wait"]["with"]["poll_interval"] = "soon"
    bad["steps"]["smoke"]["uses"] = "together/smoke-tset"
    bad["on_failure"] = {"tell": {"uses": "core/http", "with": {"url": "ftp://x"}}}
    paths = sorted(".".join(map(str, e.path)) for e in validator.iter_errors(bad))
    assert paths == ["on_failure.tell.with.url", "steps.launch.with", "steps.smoke.uses",
                     "steps.wait.with.poll_interval"]
    step_types = schema["$defs"]["Step"]["properties"]["uses"]["anyOf"][0]["enum"]
    assert {"core/http", "together/wait-fine-tune", "registry/record-model"} <= set(step_types)


def test_init_writes_a_folder_that_validates_and_runs(cli: CLI, tmp_path: Path) -> None:
    cli("init", "starter", check_code=0)
    folder = tmp_path / "starter"
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == {
        "pipeline.yaml", "data/train.jsonl", "data/validation.jsonl",
        "config/orchestrator.toml", "pipeline.schema.json", ".gitignore"}
    assert (folder / ".gitignore").read_text() == ".orchestrator/\n.env\n"
    (folder / ".gitignore").write_text("build/\n.env")  # the user's own, kept
    cli("init", "starter", "--force", check_code=0)
    assert (folder / ".gitignore").read_text() == "build/\n.env\n.orchestrator/\n"
    again = cli("init", "starter", check_code=2)
    assert "already exists" in again.stderr and "nothing was written" in again.stderr
    cli("init", "starter", "--force", check_code=0)
    import os

    os.chdir(folder)  # the starter's config is found where it was written
    cli("validate", "pipeline.yaml", check_code=0)
    run = cli("run", "pipeline.yaml", env=FAST, check_code=0)
    assert "provider: local" in run.stderr and "register.model:" in run.stdout


def test_tables_fold_long_values_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model name wider than the terminal is folded onto the next lines, never cut."""
    from orchestrator.cli import render
    from orchestrator.cli.screen import Screen
    from orchestrator.store.records import ModelEntry

    name = "local-user/Meta-Llama-3.1-8B-Instruct-Reference-capitals-o499914d31-cbbddfdd-abc"
    out = io.StringIO()
    monkeypatch.setattr(render, "screen", lambda: Screen(out, width=80))
    render.models_table([ModelEntry(name, "r-1", "register", "p", base_model="base-" * 5,
                                    job_id="ft-" + "0" * 36, metrics={"train_loss": 0.5},
                                    recorded_at=0.0)])
    lines = out.getvalue().splitlines()
    assert max(map(len, lines)) <= 80
    assert "..." not in out.getvalue() and "…" not in out.getvalue()
    joined = "".join(line.split()[0] for line in lines[1:] if line.strip())
    assert name in joined


def test_loss_curves_that_cannot_be_written_never_fail_a_fine_tune(cli: CLI,
                                                                   tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")
    run = cli("run", LORA, *FAST_POLL, check_code=0,
              env={**FAST, "ORCH_ARTIFACTS_DIR": str(tmp_path / "not-a-folder")})
    logs = cli("logs", run_id_from(run.stderr), "--step", "wait", check_code=0).stdout
    assert "the loss curves could not be written" in logs


def test_bad_arguments_to_the_new_commands_are_one_line(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    for args, message in ((("init", "taken"), "taken exists and is not a folder"),
                          (("init", "taken/sub"), "cannot write taken/sub/pipeline.yaml"),
                          (("wait", "r-1", "--timeout", "-1"), "bad duration '-1'"),
                          (("metrics", "r-nope"), "no run with id 'r-nope'"),
                          (("logs", "r-1", "--attempt", "x"), "is not a whole number")):
        result = cli(*args, check_code=2)
        assert message in result.stderr and "Traceback" not in result.stderr, args
