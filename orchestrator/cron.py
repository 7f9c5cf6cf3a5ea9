"""Cron expressions in a time zone: when a schedule fires (croniter does the calendar).

Daylight-saving changes follow the rule of the classic cron daemons, which is what people who
write cron lines expect:

- clocks go forward: a time that does not exist that day (02:30 in the skipped hour) fires once,
  at the moment the clocks jump;
- clocks go back: a line with a fixed hour (`30 2 * * *`) fires once, at the first 02:30; a line
  whose hour is a wildcard (`0 * * * *`, `*/15 * * * *`) fires at every real occurrence, since
  each of those is a different hour.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from orchestrator.errors import shorten
from orchestrator.process import hold

__all__ = ["CronSchedule", "check_cron", "check_timezone"]

_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def check_timezone(name: str) -> ZoneInfo:
    """The zone called `name` (an IANA name like Europe/Berlin); raises ValueError."""
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder, like "Europe"
        msg = (f"unknown time zone {shorten(repr(name))} (use an IANA name like UTC or "
               "Europe/Berlin)")
        raise ValueError(msg) from None


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


hold(_zone, name="time zones", why="a schedule's zone is read from disk once")


def check_cron(expression: str) -> None:
    """Raise ValueError saying what is wrong with a five-field cron line (or @daily etc.)."""
    from croniter import CroniterBadDateError, croniter  # noqa: PLC0415  (only for schedules)

    text = expression.strip()
    if not text.startswith("@") and len(text.split()) != 5:
        msg = (f"cron {expression!r} must have five fields (minute hour day-of-month month "
               "day-of-week), e.g. '0 2 * * *', or be one of " + ", ".join(_ALIASES))
        raise ValueError(msg)
    if text.startswith("@") and text not in _ALIASES:
        msg = f"cron {expression!r}: unknown alias (known: {', '.join(_ALIASES)})"
        raise ValueError(msg)
    if not croniter.is_valid(text):
        msg = f"cron {expression!r} is not a valid cron expression"
        raise ValueError(msg)
    try:
        croniter(text, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:
        msg = f"cron {expression!r} never fires (no such date)"
        raise ValueError(msg) from None


class CronSchedule:
    """Fire times of one cron line in one time zone, as epoch seconds."""

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        check_cron(expression)
        self.expression = expression.strip()
        self.zone = check_timezone(timezone)
        fields = self.expression.split()
        # `@hourly` is `0 * * * *`: its hour is a wildcard too.
        self._hour_wildcard = self.expression == "@hourly" or (
            len(fields) == 5 and fields[1].startswith("*"))

    def _repeated(self, moment: datetime) -> bool:
        """True for the second occurrence of a wall-clock time when clocks went back."""
        wall = moment.replace(tzinfo=None)
        return wall.replace(tzinfo=self.zone, fold=0).utcoffset() != moment.utcoffset()

    def fires_after(self, after: float) -> Iterator[float]:
        """Every fire time strictly after `after`, in order (an endless iterator)."""
        from croniter import croniter  # noqa: PLC0415

        start = datetime.fromtimestamp(after, self.zone)
        times = croniter(self.expression, start)
        last = after
        while True:
            moment: datetime = times.get_next(datetime)
            fire = moment.timestamp()
            if fire <= last:
                continue
            if not self._hour_wildcard and self._repeated(moment):
                continue
            last = fire
            yield fire

    def next_after(self, after: float) -> float:
        """The first fire time strictly after `after`."""
        return next(self.fires_after(after))

    def fires_between(self, after: float, until: float, *, limit: int | None = None
                      ) -> list[float]:
        """Fire times in `(after, until]`, oldest first; at most `limit` of the newest."""
        found: list[float] = []
        for fire in self.fires_after(after):
            if fire > until:
                break
            found.append(fire)
            if limit is not None and len(found) > limit:
                found.pop(0)
        return found
