"""`python -m orchestrator.trainer`: the trainer process (see `worker`)."""

from orchestrator.trainer.worker import main

main()
