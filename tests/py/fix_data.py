"""Data fixtures: the CMU face images (read-only, from ../shared or IMGFEAT_CMU_FACES)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cmu-faces" / "faces"


def faces_dir() -> Path:
    return Path(os.environ.get("IMGFEAT_CMU_FACES", DEFAULT_FACES))


@pytest.fixture(scope="session")
def cmu_faces() -> Path:
    """The CMU faces directory (``faces/<user>/*.pgm``)."""
    path = faces_dir()
    assert path.is_dir(), f"CMU faces not found at {path}: set IMGFEAT_CMU_FACES"
    return path


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
