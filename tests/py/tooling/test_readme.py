"""The README's commands work as written: the CLI is reached the one way the README says, the
testing extra installs from a checkout, and the CMU faces are found where it says.
(The walkthrough itself is checked against the demo in test_demo.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imgfeat_loader import __version__

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text(encoding="utf-8")
VENV = Path(sys.executable).parent.parent
ACTIVATE = "source .venv/bin/activate"


def shell_lines() -> list[tuple[int, str]]:
    """(offset in the README, line) of every line of its ```sh blocks."""
    lines = []
    for block in re.finditer(r"```sh\n(.*?)```", README, re.S):
        offset = block.start(1)
        for line in block.group(1).splitlines(keepends=True):
            lines.append((offset, line.strip()))
            offset += len(line)
    return lines


def test_the_cli_is_reached_one_way() -> None:
    """The README says once, before any `imgfeat` command, to activate the virtualenv, and every
    example then runs `imgfeat` and `python` as they are (no `.venv/bin/...` spelled out)."""
    first_activation = README.index(ACTIVATE)
    commands = [(at, line) for at, line in shell_lines() if re.match(r"(imgfeat|python) ", line)]
    assert len(commands) >= 15
    assert all(at > first_activation for at, _ in commands), [c for at, c in commands if at < first_activation]
    assert [line for _, line in shell_lines() if ".venv/bin/" in line and not line.startswith(ACTIVATE)] == []


def test_activating_the_virtualenv_puts_imgfeat_on_path() -> None:
    """What the README says, in a shell: `source .venv/bin/activate`, then `imgfeat` and the
    `python -m ...` commands answer."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # nothing of this test run's environment on it
    script = f"source {VENV}/bin/activate && cd {ROOT} && imgfeat --version && python -m bench --help >/dev/null && echo ok"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["imgfeat", __version__, "ok"]


def test_the_testing_extra_installs_from_a_checkout() -> None:
    """The README's command for the pytest plugin, with the checkout's path, resolves (pip
    --dry-run, offline: everything the extra needs is in this virtualenv), and the extra exists."""
    found = re.search(r"`pip install '(/path/to/imgfeat)\[testing\]'`", README)
    assert found, "the README gives the command that installs the testing extra from a checkout"
    assert "pip install 'imgfeat[testing]'" not in README  # the form that cannot work (no index has it)
    target = f"{ROOT}[testing]"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-index", "--no-build-isolation",
         "--disable-pip-version-check", "--report", "-", target],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "does not provide the extra" not in proc.stderr
    report = json.loads(proc.stdout)
    [item] = [i for i in report["install"] if i["metadata"]["name"] == "imgfeat"]
    assert item["requested_extras"] == ["testing"]
    assert "testing" in item["metadata"]["provides_extra"]
    extra = [r for r in item["metadata"]["requires_dist"] if 'extra == "testing"' in r]
    assert any(r.startswith("testcontainers") for r in extra) and any(r.startswith("pytest") for r in extra)


def test_the_faces_are_found_where_the_readme_says(tmp_path: Path, cmu_faces: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """IMGFEAT_CMU_FACES (the faces directory or one holding it), else ../shared beside the
    project, else the download; a variable naming no faces is an error, never passed over."""
    from imgfeat_loader import datasets
    from imgfeat_loader.load import LoadError

    for text in ("`IMGFEAT_CMU_FACES`", "`../shared/data/cmu-faces/faces` beside the", "UCI download"):
        assert text in README
    holder = tmp_path / "copy"
    holder.mkdir()
    (holder / "faces").symlink_to(cmu_faces)
    monkeypatch.setenv("IMGFEAT_CMU_FACES", str(holder))
    assert datasets.cmu_faces_dir(download=False) == holder / "faces"
    monkeypatch.setenv("IMGFEAT_CMU_FACES", str(tmp_path / "nowhere"))
    with pytest.raises(LoadError, match="IMGFEAT_CMU_FACES=.*nowhere"):
        datasets.cmu_faces_dir()
    monkeypatch.delenv("IMGFEAT_CMU_FACES")
    assert datasets.faces_beside_project() == ROOT.parent / "shared" / "data" / "cmu-faces" / "faces"
    monkeypatch.setattr(datasets, "faces_beside_project", lambda: tmp_path / "no-shared")
    with pytest.raises(LoadError, match="downloading was not allowed"):
        datasets.cmu_faces_dir(download=False)
