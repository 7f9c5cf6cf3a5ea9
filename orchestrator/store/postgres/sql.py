"""The store's SQL in psycopg's parameter style: the writes both dialects share (`statements`,
formatted once), PostgreSQL's fenced commit, and which runs a worker may claim.
"""

from __future__ import annotations

from orchestrator.store import statements
from orchestrator.store.rows import METRIC_COLUMNS, STEP_COLUMNS
from orchestrator.store.statements import NEEDS_EXECUTOR, format_style
from orchestrator.store.transfer import IMPORTS

CLAIMABLE = (
    f"{NEEDS_EXECUTOR} AND (lease_owner IS NULL OR lease_expires_at <= %s OR "
    "lease_owner = ANY(%s)) AND (finished_at IS NULL OR "
    "finished_at <= cancel_requested_at OR finished_at <= %s)"
)
"""`policy.claimable` in SQL (parameters: now, the dead owners, now - CANCEL_RETRY_AFTER; the
contract suite checks they agree), repeating NEEDS_EXECUTOR's literals so the partial index
serves it."""

# The shared writes (`statements`), in psycopg's parameter style.
INSERT_TEXT = format_style(statements.INSERT_TEXT)
INSERT_RUN = format_style(statements.INSERT_RUN)
INSERT_BATCH = format_style(statements.INSERT_BATCH)
INSERT_EVENT = format_style(statements.INSERT_EVENT)
UPSERT_STEP = format_style(statements.UPSERT_STEP)
TAKE_LEASE = format_style(statements.TAKE_LEASE)
STRAND_RUN = format_style(statements.STRAND_RUN)
UPDATE_RUN = format_style(statements.UPDATE_RUN)
INSERT_SLOT = format_style(statements.INSERT_SLOT)
MOVE_SLOT = format_style(statements.MOVE_SLOT)
UPSERT_SCHEDULE = format_style(statements.UPSERT_SCHEDULE)
UPSERT_MODEL = format_style(statements.UPSERT_MODEL)
MOVE_ALIAS = format_style(statements.MOVE_ALIAS)
CURRENT_ALIASES = statements.CURRENT_ALIASES
ALIAS_HISTORY = format_style(statements.ALIAS_HISTORY)
ALIAS_HISTORY_OF = format_style(statements.ALIAS_HISTORY_OF)
MODEL_NAMED = format_style(statements.MODEL_NAMED)
LOCK_ALIAS = "SELECT pg_advisory_xact_lock(hashtextextended('alias:' || %s, 0))"
"""Two promotions of one alias at once: the second waits, then sees the first's move."""
IMPORT_ROWS = {table: (format_style(statement), columns)
               for table, (statement, columns) in IMPORTS.items()}
"""`state import`'s insert of each table, with the columns it takes."""

# A fenced commit is one statement: the fence (the run's row locked, or updated, while the
# lease holds) and the rows written from it, so nothing is written when it finds no row. One
# statement costs one round trip and, what counts more here, one trip through the driver:
# measured 0.35 ms against 1.1 ms as a transaction of five statements.
FENCE_READ = ("SELECT id FROM runs WHERE id = %s AND lease_owner = %s AND "
              "lease_generation = %s FOR NO KEY UPDATE")
FENCE_UPDATE = f"{UPDATE_RUN} RETURNING id"
STEPS_FROM_FENCE = (
    f"INSERT INTO steps (run_id, {STEP_COLUMNS}) SELECT fence.id, u.* FROM fence, "
    "unnest(%s::text[], %s::text[], %s::int[], %s::text[], %s::text[], %s::text[], "
    "%s::float8[], %s::float8[], %s::float8[], %s::text[], %s::text[]) AS "
    f"u({STEP_COLUMNS}) {statements.STEP_CONFLICT}"
)
EVENTS_FROM_FENCE = (
    "INSERT INTO events (run_id, ts, kind, step_id, attempt, data) SELECT fence.id, %s, "
    "u.kind, u.step_id, u.attempt, u.data FROM fence, unnest(%s::text[], %s::text[], "
    "%s::int[], %s::text[]) WITH ORDINALITY AS u(kind, step_id, attempt, data, n) ORDER BY u.n"
)
METRICS_FROM_FENCE = (
    f"INSERT INTO metric_points ({METRIC_COLUMNS}) SELECT fence.id, u.* FROM fence, "
    "unnest(%s::text[], %s::text[], %s::int[], %s::float8[], %s::float8[], %s::float8[], "
    "%s::float8[], %s::bigint[], %s::float8[]) AS "
    f"u({METRIC_COLUMNS.removeprefix('run_id, ')}) {statements.METRIC_CONFLICT}"
)
