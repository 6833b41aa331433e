"""Data fixtures: the CMU face images (read-only), found where the demo and the benchmark find
them (:func:`imgfeat_loader.datasets.cmu_faces_dir`: ``IMGFEAT_CMU_FACES``, else
``../shared/data/cmu-faces/faces`` beside the project, else the UCI download)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgfeat_loader.datasets import cmu_faces_dir
from imgfeat_loader.download import DownloadError
from imgfeat_loader.load import LoadError


@pytest.fixture(scope="session")
def cmu_faces() -> Path:
    """The CMU faces directory (``faces/<user>/*.pgm``)."""
    try:
        return cmu_faces_dir()
    except (LoadError, DownloadError) as e:
        pytest.fail(f"the tests need the CMU faces: {e}")


@pytest.fixture(scope="session")
def face_files(cmu_faces: Path) -> list[Path]:
    """The 312 full-resolution left/right faces, sorted by path."""
    files = sorted(
        p for p in cmu_faces.glob("*/*.pgm")
        if p.stem.split("_")[1] in ("left", "right") and len(p.stem.split("_")) == 4
    )
    return files


@pytest.fixture(scope="session")
def face_bytes(face_files: list[Path]) -> bytes:
    """One full-resolution CMU face, as PGM bytes."""
    return face_files[0].read_bytes()
