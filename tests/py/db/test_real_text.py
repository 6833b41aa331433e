"""Features are written as '%.9g' texts (imgfeat.core.real_text): PostgreSQL's float4in reads
back exactly the same float32."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg

from imgfeat.core.real_text import real_array_rows, real_elements


def test_real_elements_round_trip_exactly(conn: psycopg.Connection[Any]) -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([
        rng.standard_normal(200).astype(np.float32),
        np.array([0.0, -0.0, 1e-45, 3.4028235e38, -1.1754944e-38, 0.1, 1 / 3], dtype=np.float32),
        (rng.standard_normal(50) * 1e-30).astype(np.float32),
    ])
    texts = real_elements(values)
    assert len(texts) == len(values)
    back = conn.execute("SELECT %s::text[]::real[]", (texts,)).fetchone()[0]  # type: ignore[index]
    np.testing.assert_array_equal(np.asarray(back, dtype=np.float32), values)
    special = conn.execute("SELECT %s::text[]::real[]", (real_elements(np.array([np.nan, np.inf, -np.inf], np.float32)),)).fetchone()[0]  # type: ignore[index]
    assert np.isnan(special[0]) and special[1:] == [np.inf, -np.inf]


def test_real_array_rows(conn: psycopg.Connection[Any]) -> None:
    rows = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    literals = real_array_rows(rows)
    assert len(literals) == 2 and literals[0].startswith("{") and literals[0].endswith("}")
    back = [conn.execute("SELECT %s::real[]", (lit,)).fetchone()[0] for lit in literals]  # type: ignore[index]
    np.testing.assert_array_equal(np.asarray(back, dtype=np.float32), rows)
    assert real_array_rows(np.zeros((2, 0), np.float32)) == ["{}", "{}"]
    assert real_elements(np.zeros(0, np.float32)) == []
