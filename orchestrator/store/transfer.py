"""A state database's history as a file: how a team that started embedded moves to PostgreSQL.

`orchestrator state export FILE` writes JSON lines: a header, then one line per row of the
history tables (`HISTORY`), from one consistent snapshot. `state import FILE` adds them to
another database, SQLite or PostgreSQL, in one transaction: all or nothing, and an id already
there refuses the whole import. Both backends keep the same columns with the same encodings
(`rows`), so a row crosses unchanged; event numbers are given anew (their order is kept).

The file is input like any other: each line is bounded, and a line that is not a row of a
known table with exactly its columns is one error naming the file and line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from orchestrator.definition.limits import MAX_PIPELINE_BYTES
from orchestrator.errors import StateStoreInvalid
from orchestrator.inputfiles import format_size
from orchestrator.store.records import text_hash
from orchestrator.store.rowcheck import RowChecker
from orchestrator.store.rows import (
    ALIAS_COLUMNS,
    BATCH_COLUMNS,
    EVENT_COLUMNS,
    MAX_JSON_VALUE,
    METRIC_COLUMNS,
    MODEL_COLUMNS,
    RUN_COLUMNS,
    SCHEDULE_COLUMNS,
    STEP_COLUMNS,
)

__all__ = ["FORMAT", "HISTORY", "IMPORTS", "MAX_LINE", "Exporter", "HistoryRow",
           "read_history", "row_name"]

FORMAT = "orchestrator-state"
VERSION = 3
"""Version 2 added schedules' `paused_at` (a version 1 history is read as unpaused); version 3
the registry's alias moves (an older history has none)."""
ADDED: dict[int, dict[str, dict[str, Any]]] = {1: {"schedules": {"paused_at": None}}, 2: {}}
"""What a history of an older version lacks, by version: the columns added since, with the
value its rows read as."""
MAX_LINE = 2 * max(MAX_PIPELINE_BYTES, 2 * MAX_JSON_VALUE) + 2**20
"""The longest line read: the largest row the store holds (a pipeline text of the largest
size allowed, or a step's outputs and checkpoint of the largest), each character escaped
as JSON at worst, with room for the rest of the row. A longer line is refused as soon as
this much of it was read, never loaded whole."""


def _columns(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(","))


HISTORY: dict[str, tuple[str, ...]] = {
    "pipeline_texts": ("hash", "text"),
    "batches": _columns(BATCH_COLUMNS),
    "runs": _columns(RUN_COLUMNS),
    "steps": ("run_id", *_columns(STEP_COLUMNS)),
    "events": _columns(EVENT_COLUMNS),
    "metric_points": _columns(METRIC_COLUMNS),
    "schedules": _columns(SCHEDULE_COLUMNS),
    "models": _columns(MODEL_COLUMNS),
    "alias_moves": _columns(ALIAS_COLUMNS),
}
"""The tables a history holds, in the order they are written and read back, with their
columns. Slots and leases are not history: they belong to the processes of the old database."""

IMPORTS: dict[str, tuple[str, tuple[str, ...]]] = {}
"""Per table, the statement that adds an imported row (SQLite's `?` parameters) and the
columns it takes, in order: every column but an event's number, which the target gives anew;
a pipeline text already there is the same text (its hash names it)."""
for _table, _table_columns in HISTORY.items():
    _taken = tuple(c for c in _table_columns
                   if not (_table in ("events", "alias_moves") and c == "seq"))
    IMPORTS[_table] = (f"INSERT INTO {_table} ({', '.join(_taken)}) VALUES "
                       f"({','.join('?' * len(_taken))})"
                       + (" ON CONFLICT DO NOTHING" if _table == "pipeline_texts" else ""),
                       _taken)

HistoryRow = tuple[int, str, dict[str, Any]]
"""(line number, table, row by column name)."""


class Exporter:
    """Writes rows a store passes it (`StateStore.export_history`) as lines of `out`, in one
    shape whichever backend they come from: texts stored inline by old SQLite versions are
    shared like the others, flags are booleans. Counts the rows of each table."""

    def __init__(self, out: IO[bytes]) -> None:
        import orjson  # noqa: PLC0415  (only `state export` needs it: start-up)

        self._dumps = orjson.dumps
        self._out = out
        self._texts: set[str] = set()
        self.counts: dict[str, int] = dict.fromkeys(HISTORY, 0)
        out.write(self._dumps({"format": FORMAT, "version": VERSION}) + b"\n")

    def __call__(self, table: str, row: dict[str, Any]) -> None:
        if table == "pipeline_texts":
            if row["hash"] in self._texts:
                return
            self._texts.add(row["hash"])
        elif table in ("runs", "batches") and row["pipeline_hash"] is None:
            key = text_hash(row["pipeline_text"])
            self("pipeline_texts", {"hash": key, "text": row["pipeline_text"]})
            row = {**row, "pipeline_hash": key, "pipeline_text": ""}
        if table == "batches":
            row = {**row, "fail_fast": bool(row["fail_fast"])}
        self._out.write(self._dumps({"table": table, "row": row}) + b"\n")
        self.counts[table] += 1


def read_history(path: Path, stream: IO[bytes]) -> Iterator[HistoryRow]:
    """The rows of an exported history, one line at a time; raises StateStoreInvalid naming
    `path` and the line for anything else."""
    import orjson  # noqa: PLC0415  (only `state import` needs it: start-up)

    first = stream.readline(MAX_LINE + 1)
    try:
        head = orjson.loads(first)
    except orjson.JSONDecodeError:
        head = None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        msg = f"{path}:1: not a history written by `orchestrator state export`"
        raise StateStoreInvalid(msg)
    version = head.get("version")
    if version != VERSION and version not in ADDED:
        msg = (f"{path}:1: history format version {version!r}; this orchestrator reads "
               f"versions 1 to {VERSION}")
        raise StateStoreInvalid(msg)
    added = ADDED.get(version, {})
    line = 1
    checker = RowChecker()
    while raw := stream.readline(MAX_LINE + 1):
        line += 1
        if len(raw) > MAX_LINE:
            msg = (f"{path}:{line}: line longer than {format_size(MAX_LINE)}, the largest "
                   "row a state database holds")
            raise StateStoreInvalid(msg)
        table, row = _parse(path, line, raw, added)
        problem = checker.problem(table, row)
        if problem is not None:
            msg = f"{path}:{line}: {problem}; nothing was imported"
            raise StateStoreInvalid(msg)
        yield line, table, row


def _parse(path: Path, line: int, raw: bytes,
           added: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    import orjson  # noqa: PLC0415

    where = f"{path}:{line}"
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        msg = f"{where}: not JSON ({exc})"
        raise StateStoreInvalid(msg) from None
    if not isinstance(item, dict) or set(item) != {"table", "row"}:
        msg = f'{where}: expected {{"table": ..., "row": {{...}}}}'
        raise StateStoreInvalid(msg)
    table, row = item["table"], item["row"]
    if isinstance(row, dict) and table in added:
        row = {**added[table], **row}
    if table not in HISTORY:
        msg = f"{where}: unknown table {str(table)[:40]!r} (expected one of {', '.join(HISTORY)})"
        raise StateStoreInvalid(msg)
    if not isinstance(row, dict) or set(row) != set(HISTORY[table]):
        keys = sorted(row) if isinstance(row, dict) else type(row).__name__
        msg = f"{where}: a {table} row has the columns {', '.join(HISTORY[table])}, not {keys}"
        raise StateStoreInvalid(msg[:400])
    for column, value in row.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            msg = f"{where}: {table}.{column} is a {type(value).__name__}, not a plain value"
            raise StateStoreInvalid(msg)
    return table, row


def row_name(table: str, row: Mapping[str, Any]) -> str:
    """A row an import found already there, as a person names it."""
    if table == "steps":
        return f"step {row['step_id']!r} of run {row['run_id']!r}"
    if table == "events":
        return f"an event of run {row['run_id']!r}"
    if table == "metric_points":
        return (f"metric point {row['train_step']!r} of job {row['job_id']!r} in run "
                f"{row['run_id']!r}")
    key = "name" if table == "models" else "id"
    singular = {"runs": "run", "batches": "batch", "schedules": "schedule", "models": "model"}
    return f"{singular.get(table, table)} {row.get(key)!r}"
