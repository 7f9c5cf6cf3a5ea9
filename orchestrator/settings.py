"""Settings, read with pydantic-settings.

Precedence, highest first: command-line flags, environment (`ORCH_*`), a `.env` file in the
current directory, then the TOML config file (`config/orchestrator.toml`, or `ORCH_CONFIG`).
`config/orchestrator.toml` documents every setting; a test keeps the two in step.

(Over 400 lines: every setting is declared here once, with its bounds and its description,
which the config file's documentation is checked against.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_origin

import orjson
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from orchestrator.definition.fields import Duration
from orchestrator.definition.limits import DEFAULT_LIMITS, MAX_PIPELINE_BYTES, PipelineLimits
from orchestrator.errors import SettingsInvalid, shorten
from orchestrator.inputfiles import UnreadableFile, read_regular, utf8_text
from orchestrator.settings_read import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    DOTENV,
    ENV_PREFIX,
    SECRET_HOMES,
    check_config_file,
    config_path,
    origin,
    text_of,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "ENV_PREFIX",
    "FAULT_KINDS",
    "LocalJobOutcome",
    "Settings",
    "load_settings",
    "parse_faults",
]

LocalJobOutcome = Literal["completed", "error", "user_error"]
"""How a simulated fine-tuning job of the local API ends."""

FAULT_KINDS = ("429", "500", "503", "drop")
"""429 and 503 carry Retry-After; 500 is a bare server error; `drop` handles the request, then
drops the connection before the response arrives (the client cannot know it succeeded)."""


def parse_faults(text: str) -> dict[str, float]:
    """`"429=0.05,500=0.02,drop=0.01"` to shares per fault kind; raises ValueError."""
    shares: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, share = item.partition("=")
        kind = kind.strip()
        if not sep or kind not in FAULT_KINDS:
            msg = (f"bad fault {item!r}: use kind=share with kinds {', '.join(FAULT_KINDS)}, "
                   "e.g. 429=0.05,drop=0.01")
            raise ValueError(msg)
        try:
            value = float(share)
        except ValueError:
            msg = f"bad fault share {share!r} for {kind}: use a number between 0 and 1"
            raise ValueError(msg) from None
        if not 0 <= value <= 1:
            msg = f"fault share for {kind} must be between 0 and 1, not {value}"
            raise ValueError(msg)
        shares[kind] = value
    if sum(shares.values()) > 1:
        msg = f"fault shares add up to {sum(shares.values()):g}; at most 1"
        raise ValueError(msg)
    return shares


class Settings(BaseSettings):
    """Everything that configures the orchestrator rather than one pipeline."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    provider: Literal["local", "together"] = Field(
        default="local", description="where fine-tuning steps send their requests")
    together_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TOGETHER_API_KEY", "together_api_key"),
        description="Together's API key (from the environment or .env; never the config file)")
    together_base_url: str = Field(
        default="https://api.together.xyz/v1",
        validation_alias=AliasChoices("TOGETHER_BASE_URL", "together_base_url"),
        description="where provider 'together' sends requests")
    together_project_id: str | None = Field(
        default=None, validation_alias=AliasChoices("TOGETHER_PROJECT_ID", "together_project_id"),
        description="the project of Together's v2 model API (register-adapter with api: v2); "
                    "by default the one the key belongs to (GET /v3/whoami)")
    request_timeout: Duration = Field(
        default=60.0, gt=0, description="how long one request to the provider may take")
    upload_multipart_threshold: int = Field(
        default=5 * 2**30, ge=1024, le=51 * 2**30,
        description="files larger than this (bytes) are uploaded in parts; Together's limit "
                    "for one request")
    upload_part_size: int = Field(
        default=250 * 2**20, ge=64 * 1024, le=5 * 2**30,
        description="the size of each part of a multipart upload (bytes; at most 250 parts, "
                    "so larger files get larger parts)")
    upload_part_concurrency: int = Field(
        default=4, ge=1, le=16, description="how many parts of one upload are sent at once")
    state_url: str = Field(
        default="sqlite:///.orchestrator/state.db",
        description="the state database: sqlite:///relative/path, sqlite:////absolute/path, "
                    "or postgresql://user@host:5432/db[?schema=NAME] (a fleet of workers)")
    artifacts_dir: str = Field(
        default=".orchestrator/artifacts",
        description="where runs keep their files (a fine-tune's loss curves), a folder per "
                    "run; relative to the current directory")
    durability: Literal["process", "machine", "none"] = Field(
        default="process",
        description="what a committed step survives: process (a killed process), machine "
                    "(also an OS crash or power cut; slower), none (benchmarks only)")
    busy_timeout: Duration = Field(
        default=10.0, description="how long to wait for another process holding the state "
                                  "database's write lock")
    max_parallel_steps: int = Field(
        default=8, ge=1, le=10_000, description="steps of one run that execute at once")
    lease_ttl: Duration = Field(
        default=30.0, ge=1.0,
        description="how long a run's lease outlives its executor's last heartbeat")
    max_recoveries: int = Field(
        default=3, ge=0,
        description="crashed executors a run is recovered from before it is parked as stranded")
    slot_poll_interval: Duration = Field(
        default=1.0, gt=0, le=3600,
        description="how often a run waiting for a concurrency slot asks the state database "
                    "for slots other processes gave back")
    cancel_poll_interval: Duration = Field(
        default=1.0, gt=0, le=3600,
        description="how often an executing process asks the state database whether one of "
                    "its runs was asked to cancel")
    worker_max_runs: int = Field(
        default=100, ge=1, le=100_000,
        description="runs one worker (or serve) process executes at once")
    worker_poll_interval: Duration = Field(
        default=1.0, gt=0, description="how often an idle worker looks for queued runs and "
                                       "crashed executors' runs (five times less often on "
                                       "PostgreSQL, which announces queued runs)")
    schedule_paths: list[str] = Field(
        default_factory=lambda: ["pipelines"],
        description="pipeline files, or folders of them, whose schedules the scheduler fires")
    schedule_grace: Duration = Field(
        default=300.0, gt=0,
        description="a fire time at most this old still fires; older ones are missed and "
                    "follow the schedule's catch_up")
    log_format: Literal["auto", "console", "json"] = Field(
        default="auto", description="auto: console on a terminal, JSON lines otherwise")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="the least severe log lines shown")

    # -- bounds on what people hand the orchestrator ------------------------------------------
    max_pipeline_bytes: int = Field(
        default=DEFAULT_LIMITS.max_bytes, ge=1024, le=MAX_PIPELINE_BYTES,
        description="the largest pipeline file read")
    max_yaml_nodes: int = Field(
        default=DEFAULT_LIMITS.max_nodes, ge=100, le=10**8,
        description="how many nodes (keys, values, items; aliases expanded) a pipeline may hold")
    max_yaml_depth: int = Field(
        default=DEFAULT_LIMITS.max_depth, ge=4, le=200,
        description="how deeply a pipeline file's mappings and lists may nest")
    max_yaml_alias_nodes: int = Field(
        default=DEFAULT_LIMITS.max_alias_nodes, ge=0, le=10**8,
        description="how many nodes YAML aliases (*name) may add to a pipeline, in all")
    max_matrix_cells: int = Field(
        default=DEFAULT_LIMITS.max_cells, ge=1, le=10**6,
        description="how many runs one matrix may make")

    ui_token: SecretStr | None = Field(
        default=None, description="the token a browser must give the web view served off "
                                  "loopback (ui --allow-remote); from the environment "
                                  "(ORCH_UI_TOKEN) or .env, never the config file")
    ui_token_file: str | None = Field(
        default=None, description="a file holding the web view's token (its text, spaces "
                                  "around it dropped), read when ORCH_UI_TOKEN is not set: "
                                  "a secret mounted as a file")

    # -- the local Together-compatible API (provider "local", and `orchestrator local-api`) ---
    local_api_key: SecretStr = Field(
        default=SecretStr("local-key"), description="the key the local API expects")
    local_data_dir: str = Field(
        default=".orchestrator/local-api", description="where the local API keeps files, "
                                                       "jobs and models")
    local_job_duration: Duration = Field(
        default=10.0, gt=0, description="how long a simulated fine-tuning job takes")
    local_upload_duration: Duration = Field(
        default=3.0, gt=0, description="how long a simulated model or adapter import takes")
    local_upload_url_ttl: Duration = Field(
        default=3600.0, gt=0, description="how long a file upload's URL stays valid; until "
                                          "then its bytes count as on their way (409)")
    local_job_outcome: LocalJobOutcome = Field(
        default="completed", description="how every simulated job ends (for tests)")
    local_faults: str = Field(
        default="", description="shares of requests answered with a fault, e.g. "
                                "429=0.05,500=0.02,503=0.02,drop=0.01")
    local_latency: Duration = Field(default=0.0, description="added to every request")
    local_retry_after: Duration = Field(
        default=1.0, description="Retry-After the local API sends with 429 and 503")
    local_fault_seed: int | None = Field(
        default=None, description="seed for which requests get a fault (repeatable tests)")
    local_max_request_bytes: int = Field(
        default=32 * 2**20, ge=1024, le=2**31,
        description="the largest request body the local API reads, file uploads aside (413)")
    local_max_upload_bytes: int = Field(
        default=5 * 2**30, ge=1024, le=51 * 2**30,
        description="the largest file the local API takes in one upload (413)")
    local_request_timeout: Duration = Field(
        default=30.0, gt=0, description="how long a client may take to send a request's "
                                        "headers or body, or pause an upload (408)")
    local_trainer: Literal["simulated", "peft"] = Field(
        default="simulated",
        description="simulated: jobs progress by the clock, no model is trained; peft: a "
                    "trainer process trains LoRA adapters for real (the train extra)")
    local_base_models: dict[str, str] = Field(
        default_factory=dict,
        description="for the peft trainer: model names to Hugging Face model folders on disk "
                    "(nothing is downloaded); built in: local/tiny-llama")
    local_trainer_threads: int = Field(
        default=0, ge=0, le=1024,
        description="CPU threads the trainer uses (0: one per core)")
    local_trainer_save_every: Duration = Field(
        default=5.0, gt=0, le=3600,
        description="how often a training job's state is saved, besides its checkpoints: a "
                    "restarted trainer continues from the last save")

    def ui_secret(self) -> SecretStr | None:
        """The web view's token: ORCH_UI_TOKEN (environment or .env), else the text of the
        file `ui_token_file` names (SettingsInvalid, naming the file and never its text,
        when it cannot be read), else None. Never the config file: see `load_settings`."""
        if self.ui_token is not None or self.ui_token_file is None:
            return self.ui_token
        where = f"ui_token_file {self.ui_token_file}"
        try:
            text = utf8_text(read_regular(Path(self.ui_token_file), max_bytes=4096)).strip()
        except UnreadableFile as exc:
            msg = f"{where}: {exc}"
            raise SettingsInvalid(msg) from None
        if not text:
            msg = f"{where}: the file is empty; it should hold the web view's token"
            raise SettingsInvalid(msg)
        return SecretStr(text)

    @property
    def pipeline_limits(self) -> PipelineLimits:
        """The bounds every load of a pipeline file observes."""
        return PipelineLimits(max_bytes=self.max_pipeline_bytes, max_nodes=self.max_yaml_nodes,
                              max_depth=self.max_yaml_depth,
                              max_alias_nodes=self.max_yaml_alias_nodes,
                              max_cells=self.max_matrix_cells)

    @field_validator("local_api_key")
    @classmethod
    def _some_key(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            msg = "must not be empty: clients authenticate with it (the default is local-key)"
            raise ValueError(msg)
        return value

    @field_validator("local_faults")
    @classmethod
    def _fault_shares(cls, value: str) -> str:
        parse_faults(value)
        return value

    @field_validator("state_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgres://", "postgresql://")):
            msg = "expected sqlite:///path/to/state.db or postgresql://user@host:5432/db"
            raise ValueError(msg)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings,
                TomlConfigSettingsSource(settings_cls, toml_file=config_path()))


_SECRET_FIELDS = frozenset(name for name, field in Settings.model_fields.items()
                           if "SecretStr" in str(field.annotation))
"""Settings whose values never appear in a message, not even a bad one, and which are never
read from the config file."""
assert set(SECRET_HOMES) == _SECRET_FIELDS, "every secret setting says where it is given"


def _check_structured_values(given: dict[str, Any]) -> None:
    """List settings come from the environment and .env as JSON: parsed here first (orjson,
    bounded nesting) so a bad one is a line naming it, not pydantic-settings' traceback."""
    dotenv: dict[str, str | None] | None = None
    for name, field in Settings.model_fields.items():
        if name in given or get_origin(field.annotation) not in (list, dict):
            continue
        env_name = f"{ENV_PREFIX}{name.upper()}"
        raw = os.environ.get(env_name)
        origin = env_name
        if raw is None and DOTENV.is_file():
            if dotenv is None:
                from dotenv import dotenv_values  # noqa: PLC0415

                dotenv = dotenv_values(DOTENV)
            raw, origin = dotenv.get(env_name), f"{env_name} in .env"
        if raw is None:
            continue
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            msg = (f"bad setting {name} = {shorten(raw)!r} (from {origin}): not valid JSON "
                   f"({exc.msg}); a list is written [\"a\", \"b\"]")
            raise SettingsInvalid(msg) from None


def load_settings(**flags: Any) -> Settings:
    """Settings from every source, with `flags` (from the command line) winning.

    Raises SettingsInvalid with one line per bad setting, naming where the value came from.
    """
    given = {k: v for k, v in flags.items() if v is not None}
    check_config_file(config_path())
    text_of(DOTENV, ".env")
    _check_structured_values(given)
    try:
        return Settings(**given)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            field = str(error["loc"][0]) if error["loc"] else "?"
            message = shorten(str(error["msg"]).removeprefix("Value error, "), 300)
            shown = "'***'" if field in _SECRET_FIELDS else shorten(repr(error.get("input")))
            lines.append(f"bad setting {field} = {shown} (from {origin(field, given)}): "
                         f"{message[0].lower()}{message[1:]}")
        raise SettingsInvalid("\n".join(lines)) from None
