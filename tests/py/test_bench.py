"""`python -m bench --quick` runs end to end and prints every row (no timing assertions)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_bench_prints_every_target(server_dsn: str, cmu_faces: Path) -> None:
    env = dict(os.environ, IMGFEAT_CMU_FACES=str(cmu_faces))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "plpython"), str(REPO / "loader"), str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--dsn", server_dsn],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith("| P")]
    targets = [line.split("|")[1].strip() for line in table]
    for target in ("P1", "P2", "P3", "P4", "P5", "P6"):
        assert target in targets, proc.stdout
    text = "\n".join(table)
    assert "time breakdown" in text and "decode" in text and "inference" in text and "database" in text
    assert "cosine" in text and "accuracy" in text
    assert "workers launched [2]" in text  # the parallel plan really ran two workers
    assert "VmRSS" in text
    # every ratio and verdict cell is filled where a goal exists
    for line in table:
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if cells[4]:
            assert cells[5] in ("met", "MISSED"), line
