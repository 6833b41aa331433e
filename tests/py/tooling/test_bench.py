"""`python -m bench --quick` runs end to end and prints every row (no timing assertions)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def test_ratio_text_truncates() -> None:
    from bench.report import ratio_text

    assert ratio_text(0.9479) == "0.94x"  # a miss of 0.95 never prints as 0.95
    assert ratio_text(0.95) == "0.95x"
    assert ratio_text(3.0) == "3.00x"
    assert ratio_text(2.999) == "2.99x"


def _bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(env or os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "plpython"), str(REPO / "loader"), str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


def test_bad_weights_fail_in_one_line_before_any_cluster(tmp_path: Path) -> None:
    """A damaged ONNX file, a state dict of another architecture, an unknown target: exit 2 with one
    line naming the file and the reason, before a cluster is started (no --dsn, so none may be)."""
    from imgfeat.core import zoo

    onnx_file = tmp_path / "r18.ONNX"  # the suffix is matched case-insensitively
    onnx_file.write_bytes(zoo.build_feature_extractor("resnet18", zoo.synthetic_state_dict("resnet18")).SerializeToString()[:100_000])
    alexnet = tmp_path / "alexnet.safetensors"
    zoo.save_state_dict(zoo.synthetic_state_dict("alexnet"), alexnet)
    cases = [
        (["--weights", f"resnet18={onnx_file}"], f"bench: --weights resnet18={onnx_file}: not a valid ONNX model"),
        (["--weights", f"resnet18={alexnet}"], f"bench: --weights resnet18={alexnet}: "),
        (["--weights", f"resnet50={alexnet}"], "a --quick run measures resnet18, not resnet50"),
        (["--only", "P9"], "unknown target(s) P9"),
    ]
    for args, message in cases:
        proc = _bench("--quick", *args)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and "[bench]" not in proc.stdout, proc.stderr  # nothing started


@pytest.mark.slow
def test_quick_bench_prints_every_target(server_dsn: str, cmu_faces: Path, tmp_path: Path) -> None:
    """With ``--weights``: resnet18 built from a state dict file (seed 1), as a user with
    pre-trained weights would run it."""
    if os.environ.get("IMGFEAT_TEST_DSN"):
        pytest.skip("the bench reads the backend's /proc (CPU time, memory): needs the server on this machine")
    from imgfeat.core import zoo

    weights = tmp_path / "resnet18.safetensors"
    zoo.save_state_dict(zoo.synthetic_state_dict("resnet18", seed=1), weights)
    env = dict(os.environ, IMGFEAT_CMU_FACES=str(cmu_faces))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "plpython"), str(REPO / "loader"), str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--dsn", server_dsn, "--weights", f"resnet18={weights}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith("| P")]
    targets = [line.split("|")[1].strip() for line in table]
    for target in ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8"):
        assert target in targets, proc.stdout
    text = "\n".join(table)
    assert "centered cosine median" in text and "resnet18-bf16" in text and "openvino (" in text
    assert "time breakdown" in text and "decode" in text and "inference" in text and "database" in text
    assert "cosine" in text and "accuracy" in text and "yardstick" in text
    assert f"Weights: resnet18 from {weights}" in proc.stdout
    assert "workers launched [2]" in text  # the parallel plan really ran two workers
    assert "VmRSS" in text
    # every ratio and verdict cell is filled where a goal exists
    for line in table:
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if cells[4]:
            assert cells[5] in ("met", "MISSED"), line
