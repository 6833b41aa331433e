"""The executors' Python for Spark: a packed virtual environment built from the driver's own.

Spark ships Python to executors as an archive: ``--archives imgfeat-env-<key>.tar.gz#env`` (or
``spark.archives``) unpacks it as ``./env`` in every executor's working directory, and
``spark.pyspark.python=./env/bin/python`` runs the Python workers from it. That is how
Spark's documentation does it (with ``venv-pack``) on YARN, Kubernetes and standalone
clusters, and it is what :func:`executor_archive` builds:

* **what**: a new virtual environment holding exactly what an executor imports — the
  ``imgfeat`` and ``imgfeat_loader`` packages as the driver imports them, and the installed
  distributions :data:`EXECUTOR_REQUIREMENTS` need (numpy, onnxruntime, Pillow, psycopg,
  psutil and their dependencies, resolved from the installed metadata), their files
  copied from the driver's ``site-packages`` as listed in each distribution's ``RECORD``.
  Nothing is downloaded and nothing a caller names is packed: the archive holds the very
  files the driver runs. Not pyspark (the cluster's Spark puts its own ``pyspark.zip`` on
  the workers' path) and not the test or training dependencies (torch, scikit-learn).
* **how**: ``venv.EnvBuilder`` creates the environment, `venv-pack
  <https://jcrist.github.io/venv-pack/>`_ packs it (``tar.gz``). Like every packed venv, its
  ``bin/python`` is a link to the driver's base interpreter (``sys._base_executable``, e.g.
  ``/usr/bin/python3.11``): every executor host needs the same Python at the same path
  (the same OS image). The archive is about 60 MB.
* **cache**: the file name carries a sha256 over the Python version and platform, each
  distribution's name, version and ``RECORD`` (which lists its files' sha256), and the
  imgfeat packages' file contents. An archive of that name is reused; a change to any of
  those builds a new one. The cache directory (``$XDG_CACHE_HOME/imgfeat/spark-env``, else
  ``~/.cache/imgfeat/spark-env``) must belong to the current user and be writable by no one
  else, since whatever archive lies there runs on the executors.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import stat
import sys
import tempfile
import venv
from importlib import metadata
from pathlib import Path

from imgfeat.core.errors import ConfigurationError

EXECUTOR_REQUIREMENTS = ("numpy", "onnxruntime", "pillow", "psycopg[binary]", "psutil")
"""What the executors' Python workers import (besides imgfeat itself): decoding (Pillow,
numpy), inference (onnxruntime), writing to PostgreSQL (psycopg), CPU accounting (psutil)."""

PACKAGES = ("imgfeat", "imgfeat_loader")
"""The project's packages, copied from where the driver imports them."""

FORMAT = "1"
"""Bumped when the archive's layout changes, so that older cached archives are not reused."""


def cache_directory() -> Path:
    """Where archives are kept: ``$XDG_CACHE_HOME/imgfeat/spark-env``, else ``~/.cache/imgfeat/spark-env``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imgfeat" / "spark-env"


def _check_private(directory: Path) -> None:
    """Refuse a cache directory that another user could write into (its archives run on the executors).

    Raises:
        ConfigurationError: ``directory`` or its parent belongs to another user or is group/world-writable.
    """
    for d in (directory, directory.parent):
        st = d.stat()
        if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ConfigurationError(
                f"the Spark environment cache {d} belongs to another user or is writable by others",
                hint="Archives kept there run on the executors: make it yours alone (chmod go-w), or set XDG_CACHE_HOME.",
            )


def _requirement_closure(requirements: tuple[str, ...]) -> list[metadata.Distribution]:
    """The installed distributions ``requirements`` need, transitively (markers evaluated for
    this interpreter, requested extras followed), sorted by normalised name.

    Raises:
        ConfigurationError: a needed distribution is not installed in the driver's environment.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, metadata.Distribution] = {}
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, needed_by = todo.pop()
        name = canonicalize_name(req.name)
        try:
            dist = found.get(name) or metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            by = f" (needed by {needed_by})" if needed_by else ""
            raise ConfigurationError(
                f"the driver's Python lacks the package {req.name}{by}, which the Spark executors need",
                hint="Install the Spark extra into the driver's environment: pip install 'imgfeat[spark]'.",
            ) from None
        first = name not in found
        found[name] = dist
        for text in dist.requires or []:
            sub = Requirement(text)
            extras = [""] + sorted(req.extras)
            if sub.marker is not None and not any(sub.marker.evaluate({"extra": e}) for e in extras):
                continue
            if first or req.extras:
                todo.append((sub, dist.metadata["Name"]))
    return [found[k] for k in sorted(found)]


def _site_files(dist: metadata.Distribution) -> list[tuple[Path, str]]:
    """``(absolute source, path relative to site-packages)`` of the distribution's installed
    files inside its site-packages directory (scripts in ``bin/`` and the like are left out)."""
    root = Path(dist.locate_file("")).resolve()  # type: ignore[arg-type]
    out = []
    for f in dist.files or []:
        src = Path(dist.locate_file(f)).resolve()  # type: ignore[arg-type]
        try:
            rel = src.relative_to(root)
        except ValueError:
            continue
        if src.is_file():
            out.append((src, rel.as_posix()))
    return out


def _package_files() -> list[tuple[Path, str]]:
    """``(absolute source, relative path)`` of the imgfeat packages' files, without byte-code."""
    import imgfeat

    import imgfeat_loader

    out = []
    for module in (imgfeat, imgfeat_loader):
        top = Path(module.__file__).resolve().parent  # type: ignore[arg-type]
        for src in sorted(top.rglob("*")):
            if src.is_file() and "__pycache__" not in src.parts and src.suffix != ".pyc":
                out.append((src, f"{top.name}/{src.relative_to(top).as_posix()}"))
    return out


def content_key(dists: list[metadata.Distribution], packages: list[tuple[Path, str]]) -> str:
    """The sha256 (hex) that names an archive: Python version and platform, every distribution's
    name, version and RECORD, and the imgfeat packages' paths and contents."""
    h = hashlib.sha256()
    for part in (FORMAT, sys.version, sys.implementation.cache_tag or "", platform.machine(),
                 os.path.realpath(sys._base_executable)):  # type: ignore[attr-defined]
        h.update(part.encode() + b"\0")
    for d in dists:
        h.update(f"{d.metadata['Name']}\0{d.version}\0".encode())
        h.update((d.read_text("RECORD") or "").encode() + b"\0")
    for src, rel in packages:
        h.update(rel.encode() + b"\0" + hashlib.sha256(src.read_bytes()).digest())
    return h.hexdigest()


def executor_archive(cache_dir: Path | None = None) -> Path:
    """The packed executor environment for this driver, built on first use and then reused.

    Args:
        cache_dir: where archives are kept (default :func:`cache_directory`); created if
            missing, and it must be private to the current user.

    Returns:
        The path of ``imgfeat-env-<first 16 hex digits of the content key>.tar.gz``: pass it
        to Spark as ``--archives PATH#env`` with ``spark.pyspark.python=./env/bin/python``.

    Raises:
        ConfigurationError: a package the executors need is missing here, or the cache
            directory is not private.
        venv_pack.VenvPackException: packing failed.
    """
    import venv_pack

    directory = Path(cache_dir) if cache_dir is not None else cache_directory()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_private(directory)
    dists = _requirement_closure(EXECUTOR_REQUIREMENTS)
    packages = _package_files()
    archive = directory / f"imgfeat-env-{content_key(dists, packages)[:16]}.tar.gz"
    if archive.is_file():
        return archive
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
        env = Path(tmp) / "env"
        venv.EnvBuilder(symlinks=True, with_pip=False).create(env)
        site = Path(tmp) / "env" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
        files = [f for d in dists for f in _site_files(d)] + packages
        for src, rel in files:
            dest = site / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        out = Path(tmp) / archive.name
        venv_pack.pack(prefix=str(env), output=str(out), compress_level=4)
        out.chmod(0o644)
        os.replace(out, archive)  # atomic: a concurrent builder of the same content writes the same bytes
    return archive
