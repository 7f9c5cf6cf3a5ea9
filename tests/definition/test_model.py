"""Pipeline-level semantics: defaults inheritance, YAML 1.2 scalars, edges, durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.durations import format_duration, parse_duration
from orchestrator.steps.builtin import load_pipeline
from tests.conftest import write


def test_retry_and_timeout_inheritance(tmp_path: Path) -> None:
    """Steps inherit defaults, override single fields, or switch retries off with null."""
    pipeline = load_pipeline(write(tmp_path / "p.yaml", """
        name: p
        defaults:
          retry: {max_attempts: 5, initial_delay: 2s}
          timeout: 10m
        steps:
          inherit: {uses: core/echo}
          tweak: {uses: core/echo, retry: {max_attempts: 2}, timeout: 30s}
          off: {uses: core/echo, retry: null, timeout: null}
    """))
    inherit, tweak, off = (pipeline.steps[s] for s in ("inherit", "tweak", "off"))
    assert inherit.retry is not None and inherit.retry.max_attempts == 5
    assert inherit.timeout == 600
    assert tweak.retry is not None
    assert (tweak.retry.max_attempts, tweak.retry.initial_delay) == (2, 2.0)
    assert tweak.timeout == 30
    assert off.retry is None and off.timeout is None


def test_edges_from_needs_and_expressions(tmp_path: Path) -> None:
    """Dependencies are `needs` plus every referenced step; order follows them."""
    pipeline = load_pipeline(write(tmp_path / "p.yaml", """
        name: p
        steps:
          last:
            uses: core/echo
            with: {x: "${{ steps.mid.outputs.x }}"}
          mid:
            uses: core/echo
            with: {x: 1}
            needs: first
          first: {uses: core/echo}
          free: {uses: core/echo}
    """))
    assert pipeline.steps["last"].needs == {"mid"}
    assert pipeline.steps["mid"].needs == {"first"}
    assert list(pipeline.steps) == ["first", "free", "mid", "last"]
    assert pipeline.downstream({"first"}) == {"first", "mid", "last"}


def test_yaml_12_scalars(tmp_path: Path) -> None:
    """`no`, `on` and `1:30` stay strings (YAML 1.2), unlike PyYAML's YAML 1.1 default."""
    pipeline = load_pipeline(write(tmp_path / "p.yaml", """
        name: p
        steps:
          a:
            uses: core/echo
            with: {country: no, switch: on, time: 1:30, yes_bool: true, hex: 0x1F}
    """))
    assert pipeline.steps["a"].with_ == {"country": "no", "switch": "on", "time": "1:30",
                                         "yes_bool": True, "hex": 31}


def test_yaml_12_numbers_and_dates(tmp_path: Path) -> None:
    """`1e-4` is a float (YAML 1.1 wanted a dot), `012` is twelve, `0o17` octal, `1_000` and
    `2024-01-01` are strings (JSON holds no dates), `null`, `~` and nothing are null."""
    pipeline = load_pipeline(write(tmp_path / "p.yaml", """
        name: p
        steps:
          a:
            uses: core/echo
            with: {lr: 1e-4, big: 1.5E+3, half: .5, neg: -2, zero_led: 012, octal: 0o17,
                   underscored: 1_000, day: 2024-01-01, none: null, tilde: ~, empty: ,
                   quoted: "1e-4", tagged: !!str 12, as_float: !!float 3}
    """))
    assert pipeline.steps["a"].with_ == {
        "lr": 0.0001, "big": 1500.0, "half": 0.5, "neg": -2, "zero_led": 12, "octal": 15,
        "underscored": "1_000", "day": "2024-01-01", "none": None, "tilde": None,
        "empty": None, "quoted": "1e-4", "tagged": "12", "as_float": 3.0}
    assert isinstance(pipeline.steps["a"].with_["lr"], float)


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("30s", 30), ("2m", 120), ("1h30m", 5400), ("1d", 86400), (12, 12),
    ("1.5s", 1.5), ("45", 45),
])
def test_durations(text: str | int, seconds: float) -> None:
    """Units ms, s, m, h, d, combined or bare seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


def test_format_duration() -> None:
    """Short, human forms for tables."""
    assert [format_duration(s) for s in (0.25, 12.34, 245, 7800)] == [
        "250ms", "12.3s", "4m05s", "2h10m"]
