"""The extension's own test suite against PostgreSQL 17 with PL/Python on Python 3.13: the
Docker image built on the Debian trixie stand-in (:mod:`dockerimages`), started on the host's
network, and this suite run again against it (``IMGFEAT_TEST_DSN``).

The run covers the tests that talk to a database (``tests/py/db`` and ``tests/py/tooling``;
the pure library's ``tests/py/unit`` do not involve the server). Left out of it, because they
test this machine's own PostgreSQL rather than a server given by a DSN: test_dockerfile.py
(runs the image's recipe against a local cluster) and test_testing_plugin.py (the plugin's
local backend); and the Docker tests themselves. The
image root is a directory of this machine mounted at the same path in the container
(``IMGFEAT_TEST_IMAGE_ROOT``). Loopback is trusted in that container, as in the local test
cluster: the suite's analyst role logs in without a password. Tests that need the server's
processes on this machine skip with that reason; the run fails on any other skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

import dockerimages
from fix_docker import host_container

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
NOT_HERE = ("tooling/test_dockerfile.py", "tooling/test_testing_plugin.py")
ALLOWED_SKIPS = {
    "db/test_large_model.py": {"reads the backend's /proc status: needs the server on this machine"},
    "db/test_reliability.py": {"SIGKILL needs the server on this machine (IMGFEAT_TEST_DSN points elsewhere)"},
    "tooling/test_bench.py": {"the bench reads the backend's /proc (CPU time, memory): needs the server on this machine"},
    "db/test_security_round2_images.py": {"reads the backend's peak memory from /proc: needs the server on this machine"},
    # the client's CPU decides which of these runs (the server's is the same machine's)
    "db/test_precision.py": {
        "this CPU has bf16 instructions",
        "this CPU has neither amx_bf16 nor avx512_bf16: test_bf16_is_refused_without_bf16_instructions runs instead",
    },
    "db/test_precision_attacks.py": {"the attack featurizes with a bf16 model, which this CPU cannot run"},
    "db/test_security_attacks.py": {
        "plants a file in the server's data directory and looks for its marker: needs the server on this machine",
        "reads the backend's /proc status: needs the server on this machine",
    },
}


def test_extension_suite_passes_on_postgresql_17(imgfeat_image: Callable[[str], dockerimages.BuiltImage]) -> None:
    image = imgfeat_image("17")
    root = Path(tempfile.mkdtemp(prefix="imgfeat-pg17-images-"))
    root.chmod(0o755)
    container = host_container(image.tag, username="postgres", dbname="postgres", password="pg17-suite")
    container.with_env("POSTGRES_INITDB_ARGS", "--auth-host=trust")
    container.with_env("IMGFEAT_IMAGE_ROOT", str(root)).with_volume_mapping(str(root), str(root), "ro")
    container.with_command(["postgres", "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=60"])
    try:
        with container:
            env = {
                **os.environ,
                "IMGFEAT_TEST_DSN": container.dsn(),
                "IMGFEAT_TEST_IMAGE_ROOT": str(root),
                # The client side of this nested run computes with one BLAS thread: once here,
                # scipy's OpenBLAS spun for ever in exec_blas (test_training's first gradient,
                # no database involved) in this nested process. The server is what runs on 17.
                "OPENBLAS_NUM_THREADS": "1",
                "OMP_NUM_THREADS": "1",
            }
            args = [sys.executable, "-m", "pytest", "tests/py/db", "tests/py/tooling", "-q", "-rs", "-p", "no:cacheprovider",
                    "-m", "not docker", *[f"--ignore=tests/py/{name}" for name in NOT_HERE]]
            proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3000)
            version = container.exec(["postgres", "--version"]).output.decode().strip()
            server_log = b"".join(container.get_logs()).decode(errors="replace")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = proc.stdout + proc.stderr
    summary = out.strip().splitlines()[-1] if out.strip() else ""
    dockerimages.note(f"{image.tag}: the extension's suite on {version}: {summary.strip('= ')}")
    errors = [line for line in server_log.splitlines() if re.search(r"\b(FATAL|PANIC):", line)]
    assert proc.returncode == 0, out[-12000:] + "\nserver log, FATAL and PANIC lines:\n" + "\n".join(errors[-40:])
    counts = dict((kind, int(n)) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary))
    assert counts.get("passed", 0) > 150 and "failed" not in counts, summary
    skipped = re.findall(r"^SKIPPED \[(\d+)\] tests/py/([^:]+):\d+: (.*)$", out, re.M)  # [n]: n tests, one reason
    assert sum(int(n) for n, _, _ in skipped) == counts.get("skipped", 0), out[-6000:]
    for _, file, reason in skipped:
        assert reason in ALLOWED_SKIPS.get(file, set()), f"unexpected skip in {file}: {reason}"
