"""Public data sets as tables: ``imgfeat datasets cmu-faces`` and :func:`load_cmu_faces`.

CMU Face Images (T. Mitchell, 1999; UCI Machine Learning Repository, dataset 124, CC BY 4.0):
20 people, 4 poses x 4 expressions x 2 eye states, each at 3 scales, as 8-bit PGM files
``faces/<userid>/<userid>_<pose>_<expression>_<eyes>[_<scale>].pgm`` (no scale suffix: 128x120;
``_2``: 64x60; ``_4``: 32x30), plus 16 ``.bad`` files that the authors marked as capture
glitches (ASCII PGM; they decode, but their content is broken).
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .download import cache_dir
from .download import download as download_file
from .load import ExtraColumn, LoadError, LoadReport, Rejected, load_files

CMU_FACES_URL = "https://archive.ics.uci.edu/static/public/124/cmu+face+images.zip"
"""The UCI repository's archive (dataset page https://archive.ics.uci.edu/dataset/124/cmu+face+images).
A zip holding ``faces.tar.gz`` (all scales; ``faces/<userid>/...``) among other files. Its
checksum is not recorded here: UCI publishes none, and it could not be fetched from this
environment."""

CMU_FACES_COMMENT = (
    "CMU Face Images (T. Mitchell 1999, UCI dataset 124, CC BY 4.0), loaded by imgfeat datasets cmu-faces. "
    "path: <userid>/<file> relative to the faces directory. image: the PGM file (bytea). "
    "scale: 1 = 128x120, 2 = 64x60, 4 = 32x30. is_bad: the authors' glitched captures (.bad). "
    "label: the pose. split: train/test for the full-resolution left/right non-bad images "
    "(per pose, sorted by path, even positions train, odd test: 157 train, 155 test on the full set), else NULL."
)

_NAME = re.compile(
    r"^(?P<userid>[A-Za-z0-9]+)_(?P<pose>straight|left|right|up)_(?P<expression>neutral|happy|sad|angry)"
    r"_(?P<eyes>open|sunglasses)(?:_(?P<scale>[24]))?\.(?P<ext>pgm|bad)$"
)

CMU_COLUMNS = (
    ExtraColumn("userid", "text NOT NULL", "text"),
    ExtraColumn("pose", "text NOT NULL", "text"),
    ExtraColumn("expression", "text NOT NULL", "text"),
    ExtraColumn("eyes", "text NOT NULL", "text"),
    ExtraColumn("scale", "smallint NOT NULL", "int2"),
    ExtraColumn("is_bad", "boolean NOT NULL", "bool"),
    ExtraColumn("label", "text NOT NULL", "text"),
    ExtraColumn("split", "text", "text"),
)
"""The CMU table's columns after the loader's own (see :mod:`imgfeat_loader.load`)."""

SPLIT_CLASSES = ("left", "right")


def parse_cmu_name(file_name: str) -> dict[str, Any] | None:
    """The metadata in a CMU face file name, or None if it does not follow the scheme.

    ``an2i_left_angry_open_2.pgm`` -> ``{'userid': 'an2i', 'pose': 'left', 'expression': 'angry',
    'eyes': 'open', 'scale': 2, 'is_bad': False}``. ``scale`` is 1, 2 or 4 (1 when absent);
    ``is_bad`` is True for the ``.bad`` files.
    """
    m = _NAME.match(file_name)
    if not m:
        return None
    return {
        "userid": m["userid"], "pose": m["pose"], "expression": m["expression"], "eyes": m["eyes"],
        "scale": int(m["scale"] or 1), "is_bad": m["ext"] == "bad",
    }


def cmu_split(keys: list[str]) -> dict[str, str]:
    """The balanced train/test split of the MicrosoftML featurizeImage walkthrough, made deterministic.

    Takes the keys (``<userid>/<file>``) of all files present; only full-resolution
    (scale 1), non-bad, left/right images take part. Within each pose, sorted by key
    (code-point order), even positions (0, 2, ...) go to ``train``, odd ones to ``test``.
    On the full set (157 left, 155 right) that is 79 + 78 = 157 train and 78 + 77 = 155 test,
    the sizes the walkthrough reports. Returns ``{key: 'train' | 'test'}`` for those keys only.
    """
    by_pose: dict[str, list[str]] = {pose: [] for pose in SPLIT_CLASSES}
    for k in keys:
        meta = parse_cmu_name(k.rsplit("/", 1)[-1])
        if meta and meta["scale"] == 1 and not meta["is_bad"] and meta["pose"] in by_pose:
            by_pose[meta["pose"]].append(k)
    out: dict[str, str] = {}
    for members in by_pose.values():
        for i, k in enumerate(sorted(members)):
            out[k] = "train" if i % 2 == 0 else "test"
    return out


def find_faces_dir(root: str | os.PathLike[str]) -> Path:
    """The ``faces`` directory (holding ``<userid>/*.pgm``) at or under ``root``.

    Raises:
        LoadError: no such directory.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LoadError(f"{os.fspath(root)!r} is not a directory")
    if any(root.glob("*/*.pgm")):
        return root
    for candidate in sorted(root.rglob("faces"), key=lambda p: len(p.parts)):
        if candidate.is_dir() and any(candidate.glob("*/*.pgm")):
            return candidate
    raise LoadError(f"no CMU faces under {os.fspath(root)!r} (expected faces/<userid>/<userid>_<pose>_...pgm)")


def fetch_cmu_faces(
    url: str = CMU_FACES_URL,
    cache: str | os.PathLike[str] | None = None,
    *,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Download the CMU faces archive into ``cache`` (default ``<download cache>/datasets``),
    extract it once, and return its ``faces`` directory.

    Handles a zip (the UCI download, which holds ``faces.tar.gz``: only that inner archive
    is unpacked when present, else every inner ``.tar.gz``/``.tgz``/``.tar``) or a tar archive
    directly. Tar members are extracted with the ``data`` filter (no absolute paths, links out
    of the tree, or device files); zip members are sanitised by :mod:`zipfile`.

    Raises:
        DownloadError, ChecksumError: the download failed (see :func:`imgfeat_loader.download.download`).
        LoadError: the archive is neither zip nor tar, or holds no faces.
    """
    directory = Path(cache) if cache is not None else cache_dir() / "datasets"
    archive = download_file(url, directory, sha256=sha256, progress=progress)
    target = archive.with_name(archive.name + ".d")
    if not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=directory))
        try:
            _extract(archive, tmp)
            (tmp / ".complete").write_text(url + "\n")
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return find_faces_dir(target)


def _extract(archive: Path, into: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)
        inner = [p for p in into.rglob("*") if p.is_file() and p.name.endswith((".tar.gz", ".tgz", ".tar"))]
        preferred = [p for p in inner if p.name.split(".")[0] == "faces"]
        for p in preferred or inner:
            _extract_tar(p, into)
            p.unlink()
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, into)
    else:
        raise LoadError(f"{archive} is neither a zip nor a tar archive")


def _extract_tar(path: Path, into: Path) -> None:
    try:
        with tarfile.open(path) as t:
            t.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise LoadError(f"cannot extract {path.name}: {e}") from e


FACES_ENV = "IMGFEAT_CMU_FACES"
"""The environment variable naming a copy of the CMU faces (the ``faces`` directory or one holding it)."""


def faces_beside_project() -> Path | None:
    """``../shared/data/cmu-faces/faces`` beside the project checkout this package runs from
    (``/work/main`` -> ``/work/shared/data/cmu-faces/faces``); None when the package does not run
    from a checkout (installed from a wheel)."""
    project = Path(__file__).resolve().parents[2]
    if not (project / "pyproject.toml").is_file():
        return None
    return project.parent / "shared" / "data" / "cmu-faces" / "faces"


def cmu_faces_dir(*, download: bool = True, url: str = CMU_FACES_URL, cache: str | os.PathLike[str] | None = None,
                  progress: bool = False) -> Path:
    """Where the CMU faces are, decided in one place for the demo, the tests and the benchmark:

    1. ``$IMGFEAT_CMU_FACES`` when set (the ``faces`` directory, or one holding it; an error if
       it holds none: a variable you set is never passed over silently);
    2. else ``../shared/data/cmu-faces/faces`` beside the project (:func:`faces_beside_project`),
       if it holds the faces;
    3. else the UCI download (:func:`fetch_cmu_faces`: once, then from the download cache),
       unless ``download`` is False.

    Raises:
        LoadError: ``$IMGFEAT_CMU_FACES`` holds no faces, or there are none to be had without a
            download and ``download`` is False.
        DownloadError: the download failed; the message names the places looked at.
    """
    env = os.environ.get(FACES_ENV)
    if env:
        try:
            return find_faces_dir(env)
        except LoadError as e:
            raise LoadError(f"{FACES_ENV}={env}: {e}") from None
    beside = faces_beside_project()
    if beside is not None and beside.is_dir() and any(beside.glob("*/*.pgm")):
        return beside
    looked = f"{FACES_ENV} is not set and {beside or 'no directory beside the project'} holds no faces"
    if not download:
        raise LoadError(f"no CMU faces: {looked} (and downloading was not allowed); "
                        f"set {FACES_ENV}=/path/to/faces")
    from .download import DownloadError

    try:
        return fetch_cmu_faces(url, cache, progress=progress)
    except DownloadError as e:
        raise type(e)(f"no CMU faces: {looked}, and the download failed ({e}); "
                      f"set {FACES_ENV}=/path/to/faces") from None


def load_cmu_faces(
    dsn_or_engine: Any,
    table: str = "cmu_faces",
    source: str | os.PathLike[str] | None = None,
    download: bool = False,
    *,
    url: str = CMU_FACES_URL,
    cache: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> LoadReport:
    """Load every CMU face image (``.pgm`` and the ``.bad`` glitches) into ``table``, with metadata.

    Columns, after the loader's (``id``, ``path``, ``image bytea``, ``bytes``, ``sha256``):
    ``userid``, ``pose``, ``expression``, ``eyes`` (text, from the file name), ``scale``
    (smallint 1, 2 or 4), ``is_bad`` (boolean: a ``.bad`` capture glitch), ``label`` (text,
    = pose), ``split`` (``'train'``, ``'test'`` or NULL: see :func:`cmu_split`), ``loaded_at``.
    ``path`` is ``<userid>/<file name>``, relative to the faces directory, so loading the same
    data from another copy adds nothing. Idempotent like every load (path + sha256). On the
    full data set: 1,888 rows (1,872 ``.pgm`` + 16 ``.bad``), 157 train and 155 test.

    Args:
        dsn_or_engine: DSN, SQLAlchemy engine/URL, psycopg connection or None (as :func:`load_directory`).
        table: target table (``name`` or ``schema.name``).
        source: the ``faces`` directory, or a directory containing it.
        download: fetch the archive from ``url`` into ``cache`` instead (see :func:`fetch_cmu_faces`).
        sha256: the archive's expected sha256, if you know it.

    Raises:
        ValueError: neither or both of ``source`` and ``download``.
        LoadError, DownloadError, psycopg.Error: as :func:`fetch_cmu_faces` and :func:`load_directory`.
    """
    if (source is None) == (not download):
        raise ValueError("give exactly one of source= (a directory) and download=True")
    if download:
        faces = fetch_cmu_faces(url, cache, sha256=sha256, progress=progress)
    else:
        assert source is not None
        faces = find_faces_dir(source)
    candidates = sorted(p for p in faces.glob("*/*") if p.suffix in (".pgm", ".bad") and p.is_file())
    files: list[Path] = []
    ignored: list[Rejected] = []
    for p in candidates:
        if parse_cmu_name(p.name) is None:
            ignored.append(Rejected(str(p), "name outside the CMU scheme <userid>_<pose>_<expression>_<eyes>[_<scale>]"))
        else:
            files.append(p)

    def key(p: Path) -> str:
        return f"{p.parent.name}/{p.name}"

    split = cmu_split([key(p) for p in files])

    def values(p: Path) -> tuple[Any, ...]:
        m = parse_cmu_name(p.name)
        assert m is not None
        return (m["userid"], m["pose"], m["expression"], m["eyes"], m["scale"], m["is_bad"], m["pose"], split.get(key(p)))

    report = load_files(dsn_or_engine, files, table, key=key, extra=CMU_COLUMNS, extra_values=values,
                        comment=CMU_FACES_COMMENT, progress=progress)
    report.ignored.extend(ignored)
    return report


__all__ = [
    "CMU_FACES_URL", "FACES_ENV", "cmu_faces_dir", "cmu_split", "faces_beside_project", "fetch_cmu_faces", "find_faces_dir", "load_cmu_faces", "parse_cmu_name",
]
