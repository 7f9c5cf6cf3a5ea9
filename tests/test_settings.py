"""Settings: precedence of the sources, the documented config file, one-line errors."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import SecretStr

from orchestrator.durations import parse_duration
from orchestrator.errors import SettingsInvalid
from orchestrator.settings import Settings, load_settings
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
    documented = dict(re.findall(r"^# (\w+) = (.+?)(?:[ \t]+#.*)?$", text, re.MULTILINE))
    assert set(documented) == set(Settings.model_fields)
    defaults = Settings()
    for name, shown in documented.items():
        value = getattr(defaults, name)
        written = tomllib.loads(f"v = {shown}")["v"]
        if value is None or isinstance(value, SecretStr):
            continue  # unset by default, or a secret (never read from it): an example
        if isinstance(value, float) and isinstance(written, str):
            written = parse_duration(written)
        assert written == value, name


# -- hostile settings: each one line naming where it came from --------------------------------

def test_a_misspelt_setting_in_the_config_file_is_an_error_with_a_suggestion(
        tmp_path: Path) -> None:
    """Unknown keys were silently ignored: `log_fromat` did nothing. Each is named with its
    line and the setting it most resembles."""
    write(tmp_path / "config" / "orchestrator.toml",
          'provider = "local"\nlog_fromat = "json"\n[extras]\nx = 1\n')
    with pytest.raises(SettingsInvalid) as caught:
        load_settings()
    assert str(caught.value).splitlines() == [
        "config/orchestrator.toml:2: unknown setting 'log_fromat' (did you mean 'log_format'?)",
        "config/orchestrator.toml:3: unknown setting 'extras'"]
    write(tmp_path / "config" / "orchestrator.toml", 'TOGETHER_BASE_ULR = "http://x/v1"\n')
    with pytest.raises(SettingsInvalid, match="unknown setting 'TOGETHER_BASE_ULR' "
                                              r"\(did you mean 'together_base_url'\?\)"):
        load_settings()
    write(tmp_path / "config" / "orchestrator.toml", 'TOGETHER_BASE_URL = "http://x/v1"\n')
    assert load_settings().together_base_url == "http://x/v1"  # keys are not case-sensitive


def test_secrets_are_never_read_from_the_config_file(tmp_path: Path) -> None:
    """`ui_token` was read from the config file although the README said it never is: each
    secret setting there is one line saying where it belongs, its value never shown."""
    write(tmp_path / "config" / "orchestrator.toml",
          'provider = "local"\nui_token = "committed-secret-123456"\n'
          'TOGETHER_API_KEY = "committed-key-abc"\nlocal_api_key = "committed-local"\n')
    with pytest.raises(SettingsInvalid) as caught:
        load_settings()
    lines = str(caught.value).splitlines()
    assert lines == [
        "config/orchestrator.toml:2: ui_token is a secret, never read from this file (which "
        "is often committed): set ORCH_UI_TOKEN in the environment or .env, or name a file "
        "holding it with the setting ui_token_file",
        "config/orchestrator.toml:3: TOGETHER_API_KEY is a secret, never read from this file "
        "(which is often committed): set TOGETHER_API_KEY in the environment or .env",
        "config/orchestrator.toml:4: local_api_key is a secret, never read from this file "
        "(which is often committed): set ORCH_LOCAL_API_KEY in the environment or .env"]
    assert "committed" not in str(caught.value).replace("often committed", "")


def test_the_ui_token_comes_from_the_environment_or_a_named_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ORCH_UI_TOKEN first; else the text of the file ui_token_file names (which may be set
    in the config file: it is a path, not a secret); a file that cannot be read is one line
    naming it, never its text."""
    from orchestrator.cli.web import web_token

    assert web_token(load_settings()) is None
    write(tmp_path / "token", "  file-token-0123456789\n")
    write(tmp_path / "config" / "orchestrator.toml", f'ui_token_file = "{tmp_path / "token"}"\n')
    assert web_token(load_settings()) == "file-token-0123456789"
    monkeypatch.setenv("ORCH_UI_TOKEN", "env-token-0123456789")
    assert web_token(load_settings()) == "env-token-0123456789"
    monkeypatch.delenv("ORCH_UI_TOKEN")
    for content, expected in (("", "the file is empty"), (None, "no such file")):
        if content is None:
            (tmp_path / "token").unlink()
        else:
            write(tmp_path / "token", content)
        with pytest.raises(SettingsInvalid, match=f"^ui_token_file {tmp_path / 'token'}: "
                                                  f".*{expected}"):
            web_token(load_settings())
    (tmp_path / "token").mkdir()
    with pytest.raises(SettingsInvalid, match="not a regular file"):
        web_token(load_settings())


@pytest.mark.parametrize(("name", "data", "expected"), [
    pytest.param("config/orchestrator.toml", b'provider = "loc\xe9al"\n',
                 "config/orchestrator.toml: not UTF-8 text: byte 0xe9 at line 1, column 16",
                 id="config-not-utf8"),
    pytest.param(".env", b"ORCH_PROVIDER=local\nNOTE=caf\xe9\n",
                 ".env: not UTF-8 text: byte 0xe9 at line 2, column 9", id="dotenv-not-utf8"),
    pytest.param("config/orchestrator.toml", b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n",
                 "config/orchestrator.toml: not valid TOML: values nested too deeply",
                 id="config-nested-3000-deep"),
])
def test_settings_files_that_cannot_be_read_are_one_line(tmp_path: Path, name: str,
                                                         data: bytes, expected: str) -> None:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(data)
    with pytest.raises(SettingsInvalid) as caught:
        load_settings()
    assert str(caught.value) == expected


def test_a_config_file_that_is_not_a_file_is_refused_unread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    os.mkfifo(tmp_path / "pipe.toml")
    for path, kind in (("/dev/zero", "a character device"), ("pipe.toml", "a FIFO")):
        monkeypatch.setenv("ORCH_CONFIG", path)
        with pytest.raises(SettingsInvalid) as caught:
            load_settings()
        assert str(caught.value) == f"{path}: is {kind}, not a regular file"


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param('["a",', "bad setting schedule_paths = '[\"a\",' (from ORCH_SCHEDULE_PATHS): "
                 "not valid JSON (unexpected end of data); a list is written [\"a\", \"b\"]",
                 id="truncated-json"),
    pytest.param("[" * 5000, f"bad setting schedule_paths = '{'[' * 60}... (5,000 characters)' "
                 "(from ORCH_SCHEDULE_PATHS): not valid JSON (depth limit exceeded); a list is "
                 "written [\"a\", \"b\"]", id="nested-5000-deep"),
])
def test_environment_values_that_do_not_parse_are_one_line(
        monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv("ORCH_SCHEDULE_PATHS", value)
    with pytest.raises(SettingsInvalid) as caught:
        load_settings()
    assert str(caught.value) == expected


def test_a_huge_value_is_quoted_short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_MAX_PARALLEL_STEPS", "9" * 5000)
    with pytest.raises(SettingsInvalid) as caught:
        load_settings()
    assert len(str(caught.value)) < 300 and "(5,002 characters)" in str(caught.value)


# -- the reader without pydantic agrees with this one ------------------------------------

def test_the_light_reader_knows_every_setting_and_its_aliases() -> None:
    from pydantic import AliasChoices

    from orchestrator.settings_read import SECRET_HOMES, SETTING_NAMES, StoreSettings

    expected = {}
    for name, field in Settings.model_fields.items():
        aliases = field.validation_alias
        expected[name] = tuple(a for a in aliases.choices if a != name) \
            if isinstance(aliases, AliasChoices) else ()
    assert expected == SETTING_NAMES
    assert set(SECRET_HOMES) <= set(expected)
    defaults = Settings.model_construct()
    for name in StoreSettings.__dataclass_fields__:
        assert getattr(StoreSettings(), name) == getattr(defaults, name), name


AGREEMENT = [
    pytest.param({}, {}, "", {}, id="defaults"),
    pytest.param({"ORCH_DURABILITY": "machine", "ORCH_BUSY_TIMEOUT": "2m"}, {}, "", {},
                 id="environment"),
    pytest.param({"orch_log_level": "debug"}, {}, "", {}, id="lower-case-name"),
    pytest.param({}, {"ORCH_STATE_URL": "sqlite:///x/state.db"}, "", {}, id="dotenv"),
    pytest.param({}, {}, 'busy_timeout = 3\nlog_format = "json"\n', {}, id="config-file"),
    pytest.param({"ORCH_LOG_LEVEL": "error"}, {"ORCH_LOG_LEVEL": "warning"},
                 'log_level = "debug"\n', {"log_level": "info"}, id="flag-wins"),
    pytest.param({"ORCH_LOG_LEVEL": "error"}, {"ORCH_LOG_LEVEL": "warning"},
                 'log_level = "debug"\n', {}, id="environment-beats-dotenv"),
    pytest.param({}, {"ORCH_LOG_LEVEL": "warning"}, 'log_level = "debug"\n', {},
                 id="dotenv-beats-file"),
    pytest.param({"ORCH_DURABILITY": "sometimes"}, {}, "", {}, id="bad-choice"),
    pytest.param({"ORCH_BUSY_TIMEOUT": "soon"}, {}, "", {}, id="bad-duration"),
    pytest.param({"ORCH_STATE_URL": "mysql://db"}, {}, "", {}, id="bad-url"),
    pytest.param({}, {}, "state_url = 5\n", {}, id="url-not-text"),
    pytest.param({}, {}, "durability = 1\nlog_level = true\n", {}, id="two-bad-in-file"),
    pytest.param({}, {}, "log_fromat = 'json'\n", {}, id="misspelt-key"),
    pytest.param({}, {}, "together_api_key = 'k'\n", {}, id="secret-in-file"),
    pytest.param({}, {"ORCH_BUSY_TIMEOUT": "-1"}, "", {}, id="negative-from-dotenv"),
    pytest.param({}, {}, "", {"log_format": "xml"}, id="bad-flag"),
]


Sources = tuple[dict[str, str], dict[str, str], str, dict[str, str]]
"""The environment, .env, the config file and the flags of one case."""


@pytest.mark.parametrize("sources", [pytest.param((p.values), id=p.id) for p in AGREEMENT])
def test_the_light_reader_agrees_with_pydantic_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources: Sources) -> None:
    """A read-only command's settings are the ones `Settings` reads, from the same sources in
    the same order; a bad one is refused with the same line."""
    from orchestrator.settings_read import StoreSettings, load_store_settings

    env, dotenv, toml, flags = sources
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if dotenv:
        write(tmp_path / ".env", "".join(f"{k}={v}\n" for k, v in dotenv.items()))
    if toml:
        write(tmp_path / "config" / "orchestrator.toml", toml)
    try:
        full = load_settings(**flags)
    except SettingsInvalid as exc:
        with pytest.raises(SettingsInvalid) as light:
            load_store_settings(**flags)
        assert str(light.value) == str(exc)
        return
    light_settings = load_store_settings(**flags)
    for name in StoreSettings.__dataclass_fields__:
        assert getattr(light_settings, name) == getattr(full, name), name
