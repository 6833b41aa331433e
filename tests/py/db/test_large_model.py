"""A 228 MB model (AlexNet fp32) registers and loads without the backend holding more than
about 3x its size at once (large-object upload in chunks, chunked storage, streamed loading)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import pytest

from imgfeat.core import zoo
from imgfeat_loader import models


def _vm(conn: psycopg.Connection[Any], field: str) -> int:
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not found")


@pytest.mark.slow
def test_alexnet_registers_and_loads_within_3x(dsn: str, server_dsn: str, face_bytes: bytes) -> None:
    if os.environ.get("IMGFEAT_TEST_DSN"):
        pytest.skip("reads the backend's /proc status: needs the server on this machine")
    data = zoo.build_feature_extractor("alexnet", zoo.synthetic_state_dict("alexnet")).SerializeToString()
    size = len(data)
    assert size > 200e6
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT imgfeat.python_info()")  # libraries imported: the baseline
        base = _vm(conn, "VmHWM")
        row = models.add_onnx(conn, "alexnet-big", data, architecture="alexnet", weights_origin="synthetic", replace=True)
        register_peak = _vm(conn, "VmHWM") - base
    assert row["feature_dim"] == 4096
    del data
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT imgfeat.python_info()")
        base = _vm(conn, "VmHWM")
        features = conn.execute("SELECT imgfeat.featurize_image(%s, 'alexnet-big')", (face_bytes,)).fetchone()[0]  # type: ignore[index]
        load_peak = _vm(conn, "VmHWM") - base
        conn.execute("SELECT imgfeat.drop_model('alexnet-big')")
    assert len(features) == 4096
    print(f"alexnet {size / 1e6:.0f} MB: register peak +{register_peak / 1e6:.0f} MB ({register_peak / size:.2f}x), "
          f"load peak +{load_peak / 1e6:.0f} MB ({load_peak / size:.2f}x)")
    assert register_peak <= 3.2 * size
    assert load_peak <= 3.2 * size
