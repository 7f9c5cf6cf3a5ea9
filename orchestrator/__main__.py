"""`python -m orchestrator` is the `orchestrator` command."""

from orchestrator.cli import run

# Guarded: a worker process (anyio's to_process, as multiprocessing's spawn) loads the
# parent's main module under another name, and must not run the command again.
if __name__ == "__main__":
    run()
