"""Settings: precedence of the sources, the documented config file, one-line errors."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import SecretStr

from orchestrator.errors import SettingsInvalid
from orchestrator.settings import Settings, load_settings
from orchestrator.spec.durations import parse_duration
from tests.conftest import REPO, write


def test_defaults() -> None:
    settings = load_settings()
    assert (settings.provider, settings.state_url, settings.durability) == (
        "local", "sqlite:///.orchestrator/state.db", "process")


def test_precedence_flag_over_env_over_dotenv_over_toml(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI flags beat the environment, which beats .env, which beats the config file."""
    write(tmp_path / "config" / "orchestrator.toml",
          'max_parallel_steps = 2\nlog_level = "debug"\nlease_ttl = "5m"\nmax_recoveries = 7\n')
    write(tmp_path / ".env", "ORCH_MAX_PARALLEL_STEPS=3\nORCH_LOG_LEVEL=warning\n"
                             "ORCH_LEASE_TTL=90s\n")
    monkeypatch.setenv("ORCH_MAX_PARALLEL_STEPS", "4")
    monkeypatch.setenv("ORCH_LOG_LEVEL", "error")
    settings = load_settings(max_parallel_steps=5)
    assert settings.max_parallel_steps == 5  # flag
    assert settings.log_level == "error"  # environment
    assert settings.lease_ttl == 90  # .env
    assert settings.max_recoveries == 7  # config file


def test_orch_config_points_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "other.toml", 'provider = "together"\n')
    monkeypatch.setenv("ORCH_CONFIG", str(tmp_path / "other.toml"))
    assert load_settings().provider == "together"
    monkeypatch.setenv("ORCH_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsInvalid, match=r"missing\.toml: no such file"):
        load_settings()


def test_bad_values_name_their_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "config" / "orchestrator.toml", 'durability = "forever"\n')
    monkeypatch.setenv("ORCH_LEASE_TTL", "soon")
    with pytest.raises(SettingsInvalid) as caught:
        load_settings()
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("bad setting durability = 'forever' (from durability in "
                               "config/orchestrator.toml): input should be 'process', 'machine'")
    assert lines[1].startswith("bad setting lease_ttl = 'soon' (from ORCH_LEASE_TTL): bad "
                               "duration 'soon'")


def test_broken_toml_is_one_line(tmp_path: Path) -> None:
    write(tmp_path / "config" / "orchestrator.toml", "provider = \n")
    with pytest.raises(SettingsInvalid,
                       match=r"config/orchestrator\.toml: not valid TOML: .*line 1"):
        load_settings()


def test_config_file_documents_every_setting() -> None:
    """config/orchestrator.toml names every setting with its default value."""
    text = (REPO / "config" / "orchestrator.toml").read_text()
    documented = dict(re.findall(r"^# (\w+) = (.+?)(?:\s+#.*)?$", text, re.MULTILINE))
    assert set(documented) == set(Settings.model_fields)
    defaults = Settings()
    for name, shown in documented.items():
        value = getattr(defaults, name)
        written = tomllib.loads(f"v = {shown}")["v"]
        if value is None:
            continue  # unset by default: the file shows an example value
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, float) and isinstance(written, str):
            written = parse_duration(written)
        assert written == value, name
