# Two commands set everything up on a fresh machine (see README):
#   make demo   installs into .venv and runs a real pipeline on the embedded defaults
#   make test   installs into .venv and runs lint, type checks and the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Together's current SDK (3.x) beside the pinned 2.x one: its own folder, used by the tests
# that run it as a separate program (one environment cannot hold both).
SDK3   := $(VENV)/together3

.PHONY: install demo test bench clean postgres chromium

# torch first, pinned: these machines hold a CPU build of torch 2.13.0 that pip takes for
# this pin, where the train extra's bare range would pull the multi-GB CUDA build.
TORCH ?= torch==2.13.0

$(STAMP): pyproject.toml tests/together3.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q '$(TORCH)'
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --upgrade --target $(SDK3) -r tests/together3.txt
	touch $(STAMP)

# Byte-compile our own modules: these machines set PYTHONDONTWRITEBYTECODE, which would
# otherwise make every command compile the package from source (~25 ms of startup).
install: $(STAMP)
	@$(BIN)/python -m compileall -q orchestrator

# The shipped LoRA pipeline, trained for real by the local trainer on the built-in tiny base
# (a toy model with random weights: 1.4 M parameters), on this machine's CPU.
demo: install
	ORCH_LOCAL_TRAINER=peft $(BIN)/orchestrator run pipelines/lora-finetune.yaml \
		-i base_model=local/tiny-llama -i epochs=100 -i learning_rate=0.005 -i poll_interval=1s

# The suite runs the store's contract and the fleet tests on the machine's PostgreSQL too
# (127.0.0.1:5432, trust auth, database test): start it when it is down.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || \
		pg_ctlcluster --skip-systemctl-redirect "$$(ls /etc/postgresql)" main start

# The web view's tests drive Debian's Chromium (Playwright, no browser download): install it
# when it is missing (CI runs as root); without it those tests are skipped, and say so.
chromium:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -q chromium >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) || \
		echo "no Chromium (apt-get install chromium failed): the browser tests will be skipped"

test: install postgres chromium
	$(BIN)/ruff check orchestrator tests bench
	$(BIN)/mypy
	$(BIN)/pytest

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .orchestrator .pytest_cache .mypy_cache .ruff_cache
