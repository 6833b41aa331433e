"""Connections: a DSN, a SQLAlchemy engine or URL, or the libpq environment."""

from __future__ import annotations

import os
from typing import Any

import psycopg


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
