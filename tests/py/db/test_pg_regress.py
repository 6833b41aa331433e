"""Runs the pg_regress suite (tests/sql, tests/expected) via `make installcheck` against the test server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from psycopg import conninfo

ROOT = Path(__file__).resolve().parents[3]


def test_pg_regress(server_dsn: str) -> None:
    params = conninfo.conninfo_to_dict(server_dsn)
    env = dict(os.environ)
    env.update(
        PGHOST=str(params.get("host", "")),
        PGPORT=str(params.get("port", "5432")),
        PGUSER=str(params.get("user", "postgres")),
    )
    outdir = ROOT / "build" / "regress"
    outdir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chmod(outdir, 0o777)
    proc = subprocess.run(
        ["make", "--no-print-directory", "installcheck"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    diffs = outdir / "regression.diffs"
    detail = diffs.read_text()[-6000:] if diffs.exists() else ""
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}\n{detail}"
    assert "tests passed" in proc.stdout or "ok" in proc.stdout
