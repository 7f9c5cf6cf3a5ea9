"""The embedded state store on one SQLite file: `store` (the statements), `connection`,
`schema` (the migrations), `rows`."""

from orchestrator.store.sqlite.connection import sqlite_path
from orchestrator.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore", "sqlite_path"]
