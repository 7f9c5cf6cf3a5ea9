"""Settings without pydantic: where each value comes from, and the few a read-only command needs.

Precedence, highest first: command-line flags, the environment (`ORCH_*`; names are not
case-sensitive), a `.env` file in the current directory, then the TOML config file
(`config/orchestrator.toml`, or `ORCH_CONFIG`). `settings.Settings` reads every setting
through pydantic-settings, whose import took 190 of the 400 ms `orchestrator runs` took
(measured). A command that only reads the state store (`runs`, `show`, `logs`, `metrics`,
`models`, `wait`, `batches`) reads the five settings it needs here instead (`StoreSettings`):
from the same sources in the same order, after the same check of the config file's keys, and
refusing a bad value with the same line. `tests/test_settings.py` holds the two readers in
agreement, and this module's table of setting names to `Settings`' fields.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.durations import parse_duration
from orchestrator.errors import SettingsInvalid, shorten
from orchestrator.inputfiles import UnreadableFile, read_regular, utf8_text

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "DOTENV",
    "ENV_PREFIX",
    "SECRET_HOMES",
    "SETTING_NAMES",
    "StoreSettings",
    "check_config_file",
    "config_path",
    "load_store_settings",
    "origin",
    "text_of",
]

ENV_PREFIX = "ORCH_"
CONFIG_ENV = "ORCH_CONFIG"
DEFAULT_CONFIG = Path("config/orchestrator.toml")
DOTENV = Path(".env")
MAX_FILE_BYTES = 2**20
"""The largest config file or .env read (they hold a few dozen lines)."""

SETTING_NAMES: dict[str, tuple[str, ...]] = dict.fromkeys((
    "provider", "request_timeout", "upload_multipart_threshold", "upload_part_size",
    "upload_part_concurrency", "state_url", "artifacts_dir", "durability", "busy_timeout",
    "max_parallel_steps", "lease_ttl", "max_recoveries", "slot_poll_interval",
    "cancel_poll_interval", "worker_max_runs", "worker_poll_interval", "schedule_paths",
    "schedule_grace", "log_format", "log_level", "max_pipeline_bytes", "max_yaml_nodes",
    "max_yaml_depth", "max_yaml_alias_nodes", "max_matrix_cells", "ui_token", "ui_token_file",
    "local_api_key", "local_data_dir", "local_job_duration", "local_upload_duration",
    "local_upload_url_ttl", "local_job_outcome", "local_faults", "local_latency",
    "local_retry_after", "local_fault_seed", "local_max_request_bytes",
    "local_max_upload_bytes", "local_request_timeout", "local_trainer", "local_base_models",
    "local_trainer_threads", "local_trainer_save_every"), ()) | {
    "together_api_key": ("TOGETHER_API_KEY",),
    "together_base_url": ("TOGETHER_BASE_URL",),
    "together_project_id": ("TOGETHER_PROJECT_ID",),
}
"""Every setting, with the other names it may be given by (`Settings`' fields and aliases:
a test keeps the two in step)."""

SECRET_HOMES = {
    "together_api_key": "set TOGETHER_API_KEY in the environment or .env",
    "local_api_key": "set ORCH_LOCAL_API_KEY in the environment or .env",
    "ui_token": "set ORCH_UI_TOKEN in the environment or .env, or name a file holding it "
                "with the setting ui_token_file",
}
"""The secret settings, and where each is given instead of the config file (which is often
committed): their values never appear in a message, not even a bad one."""


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def text_of(path: Path, what: str) -> str | None:
    """A settings file's text, or None when there is none; one line when it cannot be read,
    is not a regular file, is too large or is not UTF-8."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        return utf8_text(read_regular(path, max_bytes=MAX_FILE_BYTES))
    except UnreadableFile as exc:
        msg = f"{what}: {exc}"
        raise SettingsInvalid(msg) from None


def _known_keys() -> dict[str, str]:
    """Each name a setting may be given by in the config file (in lower case: keys are not
    case-sensitive), to the setting's name."""
    keys = {}
    for name, aliases in SETTING_NAMES.items():
        keys[name] = name
        keys.update({alias.lower(): name for alias in aliases})
    return keys


def _read_toml(path: Path, text: str) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415  (start-up: only with a config file)

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: not valid TOML: {exc}"
        raise SettingsInvalid(msg) from None
    except RecursionError:
        msg = f"{path}: not valid TOML: values nested too deeply"
        raise SettingsInvalid(msg) from None


def check_config_file(path: Path) -> dict[str, Any]:
    """The config file's settings (none when there is no file): TOML whose every key is a
    setting (a misspelt one would be silently ignored otherwise) and no secret."""
    text = text_of(path, str(path))
    if text is None:
        if os.environ.get(CONFIG_ENV):
            msg = f"{CONFIG_ENV}={path}: no such file"
            raise SettingsInvalid(msg)
        return {}
    data = _read_toml(path, text)
    known = _known_keys()
    problems = []
    for key in data:
        found = re.search(rf"^\s*\[*\s*[\"']?{re.escape(key)}[\"']?\s*[=.\]]", text,
                          re.MULTILINE)
        line = f":{text.count(chr(10), 0, found.start()) + 1}" if found else ""
        name = known.get(key.lower())
        if name in SECRET_HOMES:
            problems.append(f"{path}{line}: {key} is a secret, never read from this file "
                            f"(which is often committed): {SECRET_HOMES[name]}")
            continue
        if name is not None:
            continue
        import difflib  # noqa: PLC0415

        close = difflib.get_close_matches(key.lower(), list(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        problems.append(f"{path}{line}: unknown setting '{shorten(key)}'{hint}")
    if problems:
        raise SettingsInvalid("\n".join(problems))
    return data


def origin(field: str, flags: Mapping[str, Any]) -> str:
    """Where a setting's value came from, for a message."""
    env_name = f"{ENV_PREFIX}{field.upper()}"
    if field in flags:
        return f"--{field.replace('_', '-')}"
    if env_name in os.environ:
        return env_name
    dotenv = text_of(DOTENV, ".env") or ""
    if any(line.strip().startswith(f"{env_name}=") for line in dotenv.splitlines()):
        return f"{env_name} in .env"
    return f"{field} in {config_path()}"


# -- the settings of a command that only reads the state store ----------------------------

@dataclasses.dataclass(frozen=True)
class StoreSettings:
    """What a read-only command needs: where the state database is, how to open it, how to
    log. `Settings` has the same attributes, so either opens a store-only runtime."""

    state_url: str = "sqlite:///.orchestrator/state.db"
    busy_timeout: float = 10.0
    durability: str = "process"
    log_format: str = "auto"
    log_level: str = "info"


def _text(value: object) -> str:
    if not isinstance(value, str):
        msg = "Input should be a valid string"
        raise ValueError(msg)  # noqa: TRY004  (a bad setting, said as pydantic says it)
    return value


def _state_url(value: object) -> str:
    url = _text(value)
    if not url.startswith(("sqlite:///", "postgres://", "postgresql://")):
        msg = "expected sqlite:///path/to/state.db or postgresql://user@host:5432/db"
        raise ValueError(msg)
    return url


def _one_of(*choices: str) -> Callable[[object], str]:
    said = ", ".join(f"'{c}'" for c in choices[:-1]) + f" or '{choices[-1]}'"

    def check(value: object) -> str:
        if value not in choices:
            msg = f"Input should be {said}"
            raise ValueError(msg)
        return str(value)

    return check


_CHECKS: dict[str, Callable[[object], Any]] = {
    "state_url": _state_url,
    "durability": _one_of("process", "machine", "none"),
    "busy_timeout": parse_duration,
    "log_format": _one_of("auto", "console", "json"),
    "log_level": _one_of("debug", "info", "warning", "error"),
}
"""StoreSettings' fields in `Settings`' order, each checked as `Settings` checks it."""


def _environment() -> dict[str, str]:
    """The environment's ORCH_* variables by lower-case name (names are not case-sensitive;
    of two spellings, the later wins, as for pydantic-settings)."""
    return {key.lower(): value for key, value in os.environ.items()
            if key.lower().startswith(ENV_PREFIX.lower())}


def _dotenv() -> dict[str, str]:
    if text_of(DOTENV, ".env") is None:
        return {}
    from dotenv import dotenv_values  # noqa: PLC0415  (only when there is a .env)

    return {key.lower(): value for key, value in dotenv_values(DOTENV).items()
            if value is not None and key.lower().startswith(ENV_PREFIX.lower())}


def load_store_settings(**flags: Any) -> StoreSettings:
    """The store's and the log's settings from every source, `flags` (from the command line)
    winning; the config file's keys checked first. Raises SettingsInvalid with one line per
    bad setting, naming where its value came from, as `load_settings` does."""
    given = {k: v for k, v in flags.items() if v is not None}
    configured = check_config_file(config_path())
    environment, dotenv = _environment(), _dotenv()
    values: dict[str, Any] = {}
    lines = []
    for field, check in _CHECKS.items():
        key = f"{ENV_PREFIX}{field}".lower()
        for source in (given, environment, dotenv, configured):
            name = field if source is given or source is configured else key
            if name in source:
                raw = source[name]
                break
        else:
            continue
        try:
            values[field] = check(raw)
        except ValueError as exc:
            message = shorten(str(exc), 300)
            lines.append(f"bad setting {field} = {shorten(repr(raw))} (from "
                         f"{origin(field, given)}): {message[0].lower()}{message[1:]}")
    if lines:
        raise SettingsInvalid("\n".join(lines))
    return StoreSettings(**values)
