"""Database fixtures.

The server comes from ``IMGFEAT_TEST_DSN`` when set (a superuser connection to a server with
imgfeat installed); otherwise a throwaway cluster is started for the session
(:class:`imgfeat_loader.cluster.LocalCluster`) with ``imgfeat.image_root`` configured.
Each test session creates a fresh database with the extension; analyst-facing tests connect
as a non-superuser role.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from imgfeat_loader.cluster import LocalCluster

ANALYST = "imgfeat_test_analyst"


@pytest.fixture(scope="session")
def image_root() -> Iterator[Path]:
    """A directory configured as ``imgfeat.image_root`` (readable by the server).

    With ``IMGFEAT_TEST_DSN``, ``IMGFEAT_TEST_IMAGE_ROOT`` names it: a directory this process
    writes that the server reads at the same path and has as its ``imgfeat.image_root``.
    """
    shared = os.environ.get("IMGFEAT_TEST_IMAGE_ROOT") if os.environ.get("IMGFEAT_TEST_DSN") else None
    if shared:
        yield Path(shared)
        return
    root = Path(tempfile.mkdtemp(prefix="imgfeat-images-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def server_dsn(image_root: Path) -> Iterator[str]:
    """A superuser DSN to the maintenance database of the server under test."""
    dsn = os.environ.get("IMGFEAT_TEST_DSN")
    if dsn:
        yield dsn
        return
    cluster = LocalCluster(settings={"imgfeat.image_root": str(image_root)})
    cluster.start()
    try:
        yield cluster.dsn()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def dsn(server_dsn: str) -> Iterator[str]:
    """Superuser DSN to a fresh database with ``CREATE EXTENSION imgfeat CASCADE`` done."""
    dbname = f"imgfeat_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
        conn.execute(
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ANALYST}') "
            f"THEN CREATE ROLE {ANALYST} LOGIN; END IF; END$$"
        )
    db_dsn = conninfo.make_conninfo(server_dsn, dbname=dbname)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION imgfeat CASCADE")
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {ANALYST}")
        conn.execute(f"GRANT imgfeat_user TO {ANALYST}")
    yield db_dsn
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@pytest.fixture(scope="session")
def analyst_dsn(dsn: str) -> str:
    """DSN for the same database as a non-superuser role."""
    return conninfo.make_conninfo(dsn, user=ANALYST)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A fresh superuser connection (autocommit)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture
def analyst(analyst_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A fresh non-superuser connection (autocommit): how analysts use imgfeat."""
    with psycopg.connect(analyst_dsn, autocommit=True) as c:
        yield c


@pytest.fixture(scope="session")
def resnet18(dsn: str) -> str:
    """The name of a registered synthetic resnet18 (registered once per test session, through the CLI)."""
    from imgfeat_loader.cli import main

    with psycopg.connect(dsn, autocommit=True) as c:
        if c.execute("SELECT 1 FROM imgfeat.models WHERE name = 'resnet18'").fetchone():
            return "resnet18"
    assert main(["--dsn", dsn, "models", "add", "resnet18", "--synthetic", "resnet18"]) == 0
    return "resnet18"
