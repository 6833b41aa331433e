"""Downloads (imgfeat_loader.download) against a local HTTP server on 127.0.0.1, and
``imgfeat models download`` end to end into the database."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from imgfeat_loader.download import (
    ChecksumError,
    DownloadError,
    cache_dir,
    download,
    download_model,
    hash_prefix_from_name,
)


@dataclass
class FileServer:
    """What the test server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    honour_range: bool = True
    truncate_first: dict[str, int] = field(default_factory=dict)  # name -> bytes sent by the next N responses
    truncate_times: int = 1
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    bytes_sent: int = 0
    url: str = ""


def _handler(state: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            rng = self.headers.get("Range")
            state.requests.append((name, rng))
            data = state.files.get(name)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            if rng and state.honour_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if name in state.truncate_first and state.truncate_times > 0:
                state.truncate_times -= 1
                body = body[: state.truncate_first[name]]
                self.close_connection = True
            state.bytes_sent += len(body)  # counted first: the client may finish before write() returns
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server() -> Iterator[FileServer]:
    state = FileServer()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def payload(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_full_download_verifies_and_then_uses_the_cache(server: FileServer, tmp_path: Path) -> None:
    data = payload(300_000)
    server.files["blob.bin"] = data
    digest = hashlib.sha256(data).hexdigest()
    path = download(server.url + "blob.bin", tmp_path, sha256=digest, progress=False)
    assert path == tmp_path / "blob.bin"
    assert path.read_bytes() == data
    assert not (tmp_path / "blob.bin.part").exists()
    assert server.requests == [("blob.bin", None)]
    again = download(server.url + "blob.bin", tmp_path, sha256=digest, progress=False)
    assert again == path
    assert len(server.requests) == 1  # served from the cache, no request


def test_resume_from_part_file_with_range(server: FileServer, tmp_path: Path) -> None:
    data = payload(200_000, seed=1)
    server.files["big.bin"] = data
    (tmp_path / "big.bin.part").write_bytes(data[:123_456])
    path = download(server.url + "big.bin", tmp_path, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert path.read_bytes() == data
    assert server.requests == [("big.bin", "bytes=123456-")]
    assert server.bytes_sent == len(data) - 123_456


def test_server_ignoring_range_restarts_from_zero(server: FileServer, tmp_path: Path) -> None:
    data = payload(50_000, seed=2)
    server.files["f.bin"] = data
    server.honour_range = False
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes from another attempt")
    path = download(server.url + "f.bin", tmp_path, progress=False)
    assert path.read_bytes() == data
    assert server.requests == [("f.bin", "bytes=32-")]
    assert server.bytes_sent == len(data)


def test_checksum_mismatch_deletes_and_raises(server: FileServer, tmp_path: Path) -> None:
    server.files["x.bin"] = payload(10_000, seed=3)
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ChecksumError, match=f"expected {wrong}"):
        download(server.url + "x.bin", tmp_path, sha256=wrong, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cached_file_with_wrong_checksum_is_fetched_again(server: FileServer, tmp_path: Path) -> None:
    data = payload(5_000, seed=4)
    server.files["c.bin"] = data
    (tmp_path / "c.bin").write_bytes(b"corrupt")
    path = download(server.url + "c.bin", tmp_path, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert path.read_bytes() == data
    assert len(server.requests) == 1


def test_hash_prefix_in_file_name(server: FileServer, tmp_path: Path) -> None:
    data = payload(20_000, seed=5)
    prefix = hashlib.sha256(data).hexdigest()[:8]
    name = f"resnet18-{prefix}.pth"
    server.files[name] = data
    assert hash_prefix_from_name(name) == prefix
    assert hash_prefix_from_name("resnet18-f37072fd.pth") == "f37072fd"
    assert hash_prefix_from_name("alexnet-owt-7be5be79.pth") == "7be5be79"
    assert hash_prefix_from_name("model.onnx") is None
    assert download(server.url + name, tmp_path, hash_prefix=prefix, progress=False).read_bytes() == data
    other = tmp_path / "other"
    with pytest.raises(ChecksumError, match="expected 00000000\\.\\.\\."):
        download(server.url + name, other, hash_prefix="00000000", progress=False)
    assert not (other / name).exists() and not (other / (name + ".part")).exists()
    with pytest.raises(ValueError, match="8..64 hex digits"):
        download(server.url + name, other, hash_prefix="abc", progress=False)


def test_truncated_response_is_resumed(server: FileServer, tmp_path: Path) -> None:
    data = payload(100_000, seed=6)
    server.files["t.bin"] = data
    server.truncate_first["t.bin"] = 40_000
    path = download(server.url + "t.bin", tmp_path, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert path.read_bytes() == data
    assert server.requests == [("t.bin", None), ("t.bin", "bytes=40000-")]


def test_truncated_every_time_is_an_error(server: FileServer, tmp_path: Path) -> None:
    data = payload(100_000, seed=7)
    server.files["t.bin"] = data
    server.truncate_first["t.bin"] = 10_000
    server.truncate_times = 100
    with pytest.raises(DownloadError, match="ended early 3 times \\(30000 bytes received"):
        download(server.url + "t.bin", tmp_path, retries=2, progress=False)
    assert not (tmp_path / "t.bin").exists()
    assert (tmp_path / "t.bin.part").read_bytes() == data[:30_000]  # kept for a later resume


def test_http_errors_and_bad_urls(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="404"):
        download(server.url + "missing.bin", tmp_path, progress=False)
    with pytest.raises(DownloadError, match="only http:// and https://"):
        download("file:///etc/passwd", tmp_path, progress=False)
    with pytest.raises(DownloadError, match="file name"):
        download(server.url, tmp_path, progress=False)


def test_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "imgfeat"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "imgfeat"


# --- imgfeat models download ----------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic_safetensors(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    """A resnet18 state dict (the seeded synthetic weights, seed 0) as safetensors, named torchvision-style."""
    from imgfeat.core import zoo

    d = tmp_path_factory.mktemp("weights")
    tmp = d / "w.safetensors"
    zoo.save_state_dict(zoo.synthetic_state_dict("resnet18", seed=0), tmp)
    data = tmp.read_bytes()
    return f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.safetensors", data


def test_models_download_registers_the_weights(
    server: FileServer, tmp_path: Path, dsn: str, resnet18: str, face_bytes: bytes,
    synthetic_safetensors: tuple[str, bytes],
) -> None:
    from imgfeat.core.zoo import catalog

    name, data = synthetic_safetensors
    server.files[name] = data
    got = download_model(
        dsn, "torchvision/resnet18", cache=tmp_path, url=server.url + name,
        sha256=hashlib.sha256(data).hexdigest(), model_name="dl_resnet18", replace=True, progress=False,
    )
    assert got.verified and got.path == tmp_path / name
    assert got.registered is not None
    assert (got.registered["name"], got.registered["architecture"], got.registered["feature_dim"]) == (
        "dl_resnet18", "resnet18", 512)
    with psycopg.connect(dsn, autocommit=True) as conn:
        origin, prep = conn.execute(
            "SELECT weights_origin, preprocessing FROM imgfeat.models WHERE name = 'dl_resnet18'").fetchone()
        assert origin == "custom"  # our own checksum, not the catalog's: nothing vouches for ImageNet weights
        assert prep == catalog.get("torchvision/resnet18").preprocessing.to_json()
        # the same weights as the session's synthetic resnet18 (seed 0): the same features
        ours, theirs = conn.execute(
            "SELECT imgfeat.featurize_image(%s, 'dl_resnet18'), imgfeat.featurize_image(%s, %s)",
            (face_bytes, face_bytes, resnet18),
        ).fetchone()
    assert len(ours) == 512
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(ours) > 0


def test_models_download_cli(server: FileServer, tmp_path: Path, dsn: str,
                             synthetic_safetensors: tuple[str, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    from imgfeat_loader.cli import main

    name, data = synthetic_safetensors
    server.files[name] = data
    good = hashlib.sha256(data).hexdigest()
    # a mismatching checksum: exit 1, clear message, nothing left behind
    rc = main(["--dsn", dsn, "models", "download", "torchvision/resnet18", "--cache", str(tmp_path),
               "--url", server.url + name, "--sha256", "0" * 64, "--no-progress"])
    assert rc == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    # download only
    rc = main(["models", "download", "torchvision/resnet18", "--cache", str(tmp_path), "--url", server.url + name,
               "--hash-prefix", good[:8], "--no-register", "--no-progress"])
    assert rc == 0
    assert "checksum verified" in capsys.readouterr().out
    assert (tmp_path / name).read_bytes() == data
    # the catalog's own checksum applies to a mirror: torchvision's prefix f37072fd is not this file's
    rc = main(["--dsn", dsn, "models", "download", "torchvision/resnet18", "--cache", str(tmp_path / "m"),
               "--url", server.url + name, "--no-progress"])
    assert rc == 1
    assert "expected f37072fd..." in capsys.readouterr().err
    # unknown catalog name
    rc = main(["models", "download", "torchvision/resnet9", "--no-register"])
    assert rc == 1
    assert "no catalog entry 'torchvision/resnet9'" in capsys.readouterr().err
