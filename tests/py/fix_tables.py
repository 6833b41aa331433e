"""Table fixtures: the CMU faces loaded into the test database, and their features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from fix_db import ANALYST


def load_faces(conn: psycopg.Connection[Any], table: str, files: list[Path]) -> None:
    """CREATE ``table`` (id bigint primary key, path, image bytea, label) and COPY the files in (ids from 1)."""
    conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, path text, image bytea, label text)")
    with conn.cursor().copy(f"COPY {table} (id, path, image, label) FROM STDIN") as copy:
        for i, p in enumerate(files, start=1):
            copy.write_row((i, str(p), p.read_bytes(), p.stem.split("_")[1]))
    conn.execute(f"GRANT SELECT ON {table} TO {ANALYST}")


@pytest.fixture(scope="session")
def faces_table(dsn: str, face_files: list[Path]) -> str:
    """``public.faces``: the 312 full-resolution left/right faces as bytea, ids 1..312 in path order."""
    with psycopg.connect(dsn, autocommit=True) as c:
        load_faces(c, "public.faces", face_files)
    return "public.faces"


@pytest.fixture(scope="session")
def faces_features(faces_table: str, resnet18: str, analyst_dsn: str) -> dict[int, np.ndarray]:
    """``CALL imgfeat.featurize`` once as the analyst into ``faces_r18``; returns id -> float32 features."""
    with psycopg.connect(analyst_dsn, autocommit=True) as a:
        a.execute("CALL imgfeat.featurize('public.faces', 'faces_r18', %s, batch_size => 16)", (resnet18,))
        rows = a.execute("SELECT id, features FROM faces_r18 WHERE model_name = %s ORDER BY id", (resnet18,)).fetchall()
    return {i: np.asarray(f, dtype=np.float32) for i, f in rows}
