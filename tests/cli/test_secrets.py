"""Secrets never reach the state store, logs or CLI output, even when a step leaks them."""

from __future__ import annotations

from pathlib import Path

from tests.cli.helpers import run_id_from
from tests.conftest import CLI, write

SECRET = "sk-test-4f9a1c2e7b"


def test_secret_is_used_but_never_written(cli: CLI, tmp_path: Path) -> None:
    """A step receives the secret; every place that stores or prints text has it masked."""
    write(tmp_path / "leaky_steps.py", """
        from orchestrator import TransientError

        async def leak(ctx, token: str) -> dict:
            ctx.log.info("calling the API", token=token)
            assert token.startswith("sk-")  # the real value arrived
            await ctx.checkpoint(token=token)
            if ctx.attempt == 1:
                raise TransientError(f"401 for key {token}")
            return {"echo": token, "length": len(token)}
    """)
    write(tmp_path / "leaky.yaml", """
        name: leaky
        steps:
          s:
            uses: python:leaky_steps:leak
            with: {token: "${{ secrets.DEMO_API_KEY }}"}
            retry: {initial_delay: 1ms}
    """)
    run = cli("run", "leaky.yaml", "--log-format", "json", env={"DEMO_API_KEY": SECRET},
              check_code=0)
    run_id = run_id_from(run.stderr)
    show = cli("show", run_id, "--outputs", check_code=0)
    logs = cli("logs", run_id, check_code=0)
    everything = run.stdout + run.stderr + show.stdout + logs.stdout
    assert SECRET not in everything
    assert "***" in show.stdout and "length: 18" in show.stdout
    assert '"token": "***"' in run.stderr
    state_bytes = b"".join(p.read_bytes() for p in (tmp_path / ".orchestrator").iterdir())
    assert SECRET.encode() not in state_bytes


def test_missing_secret_is_bad_input_before_the_run(cli: CLI, tmp_path: Path) -> None:
    write(tmp_path / "needs_secret.yaml", """
        name: needs-secret
        steps:
          s: {uses: core/echo, with: {key: "${{ secrets.NOT_SET_ANYWHERE }}"}}
    """)
    result = cli("run", "needs_secret.yaml", check_code=2)
    assert result.stderr.strip() == (
        "error: the pipeline uses secrets.NOT_SET_ANYWHERE but NOT_SET_ANYWHERE is not set; "
        "export NOT_SET_ANYWHERE=... or put it in .env")
    assert "no runs yet" in cli("runs", check_code=0).stdout


def test_secret_from_dotenv(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DEMO_API_KEY={SECRET}\n")
    write(tmp_path / "p.yaml", """
        name: p
        steps:
          s: {uses: core/echo, with: {n: 1, key: "${{ secrets.DEMO_API_KEY }}"}}
    """)
    result = cli("run", "p.yaml", check_code=0)
    assert "s.key: ***" in result.stdout
