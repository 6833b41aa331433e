"""Connections: a DSN, a SQLAlchemy engine or URL, or the libpq environment."""

from __future__ import annotations

import os
import re
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row


def resolve_dsn(dsn: Any = None) -> str:
    """A libpq connection string from ``dsn`` (str, SQLAlchemy URL or Engine), else
    ``IMGFEAT_DSN``, else ``""`` (libpq's PGHOST/PGPORT/PGUSER/PGDATABASE environment)."""
    if dsn is None:
        return os.environ.get("IMGFEAT_DSN", "")
    if isinstance(dsn, str):
        if dsn.startswith(("postgresql+", "postgres+")):
            return _from_sqlalchemy_url(dsn)
        return dsn
    url = getattr(dsn, "url", dsn)  # Engine -> URL
    return _from_sqlalchemy_url(url)


def _from_sqlalchemy_url(url: Any) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url) if isinstance(url, str) else url
    u = u.set(drivername="postgresql")
    return u.render_as_string(hide_password=False)


def connect(dsn: Any = None, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A psycopg 3 connection (autocommit by default: procedures that commit need it)."""
    return psycopg.connect(resolve_dsn(dsn), autocommit=autocommit)


class PsycopgDatabase:
    """:class:`imgfeat.db.catalog.Database` over a psycopg connection, so that the client (the
    Spark driver) reads the catalog and creates features tables with the backend's own code."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    @staticmethod
    def _query(query: str, params: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
        """``$n`` parameters as psycopg's ``%(pn)s`` (and literal ``%`` doubled)."""
        text = re.sub(r"\$(\d+)", r"%(p\1)s", query.replace("%", "%%"))
        return text, {f"p{i}": None if p is None else str(p) for i, p in enumerate(params, 1)}

    def rows(self, query: str, *params: Any) -> list[dict[str, Any]]:
        text, values = self._query(query, params)
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(text, values)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def quote_ident(self, name: str) -> str:
        return sql.Identifier(name).as_string(self.conn)

    def execute(self, statement: str) -> None:
        self.conn.execute(statement)  # type: ignore[arg-type]  # no parameters: sent as it is

    def create(self, ddl: str) -> bool:
        try:
            with self.conn.transaction():
                self.conn.execute(ddl)  # type: ignore[arg-type]
        except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
            return False
        return True

    def parse_ident(self, text: str) -> list[str] | None:
        try:
            with self.conn.transaction():
                return list(self.rows("SELECT pg_catalog.parse_ident($1) AS p", text)[0]["p"])
        except psycopg.errors.InvalidParameterValue:
            return None
