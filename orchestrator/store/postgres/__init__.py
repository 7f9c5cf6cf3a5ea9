"""The state store on PostgreSQL: `store` (the statements), `connection` (the pool, the
transactions), `schema` (the migrations), `notify` (LISTEN/NOTIFY), `sql`, `rows`."""

from orchestrator.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
