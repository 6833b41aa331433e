"""Role fixtures: real login roles with the grants a DBA would give, for security tests.

Each fixture yields an autocommit connection logged in as that role. Roles are cluster-wide
and kept between tests (their grants are re-applied); every test that changes a role's
membership undoes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql


def ensure_role(conn: psycopg.Connection[Any], role: str, *grants: str) -> None:
    """Create the login role ``role`` if missing and grant it ``grants`` (role names)."""
    conn.execute(
        sql.SQL("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN CREATE ROLE {} LOGIN; END IF; END$$")
        .format(sql.Literal(role), sql.Identifier(role))
    )
    for g in grants:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(g), sql.Identifier(role)))


def connect_as(dsn: str, role: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A new autocommit connection to ``dsn``'s database as ``role``."""
    return psycopg.connect(conninfo.make_conninfo(dsn, user=role, **kwargs), autocommit=True)


def parallel_forcing_setting(conn: psycopg.Connection[Any]) -> str:
    """``force_parallel_mode`` (PostgreSQL 15), renamed ``debug_parallel_query`` in 16."""
    version = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
    return "debug_parallel_query" if version >= 160000 else "force_parallel_mode"


def _role(dsn: str, conn: psycopg.Connection[Any], role: str, *grants: str) -> Iterator[psycopg.Connection[Any]]:
    ensure_role(conn, role, *grants)
    with connect_as(dsn, role) as c:
        yield c


@pytest.fixture
def alice(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """An analyst: imgfeat_user only."""
    yield from _role(dsn, conn, "imgfeat_test_alice", "imgfeat_user")


@pytest.fixture
def bob(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """Another analyst: imgfeat_user only."""
    yield from _role(dsn, conn, "imgfeat_test_bob", "imgfeat_user")


@pytest.fixture
def admin(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A model administrator: imgfeat_admin."""
    yield from _role(dsn, conn, "imgfeat_test_admin", "imgfeat_admin")


@pytest.fixture
def stranger(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A role with no imgfeat rights at all (it can log in)."""
    yield from _role(dsn, conn, "imgfeat_test_stranger")
