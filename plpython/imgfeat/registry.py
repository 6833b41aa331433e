"""The model registry: ONNX feature extractors stored in ``imgfeat.models`` (metadata) and
``imgfeat.model_chunks`` (the bytes, in chunks of :data:`CHUNK_BYTES`).

Chunked storage keeps a large model (AlexNet fp32 is about 233 MB) well below PostgreSQL's
1 GB field limit and lets a backend stream it in while hashing, so loading holds the
model's bytes about once plus onnxruntime's own copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from .errors import ModelError, ModelNotFoundError
from .spec import Preprocessing

_SHA256 = re.compile(r"[0-9a-f]{64}")

CHUNK_BYTES = 8 * 1024 * 1024
"""Bytes per row of ``imgfeat.model_chunks`` (8 MiB)."""

WEIGHTS_ORIGINS = ("imagenet", "synthetic", "custom")


@dataclass(frozen=True)
class ModelInfo:
    """A registered model's metadata (one row of ``imgfeat.models``)."""

    name: str
    architecture: str
    input_width: int
    input_height: int
    feature_dim: int
    preprocessing: Preprocessing
    weights_origin: str
    input_name: str
    output_name: str
    fixed_batch: bool
    sha256: str
    size_bytes: int

    @classmethod
    def from_row(cls, row: Any) -> "ModelInfo":
        """From a registry row. The row may come from a caller of an internal function (a
        composite built in SQL skips the table's CHECKs), so what names files or sizes
        memory is checked here.

        Raises:
            ModelError: a sha256 that is not 64 hex digits, a non-positive size, or a
                preprocessing spec outside its limits.
        """
        sha = row["sha256"]
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise ModelError(f"model row: sha256 must be 64 lowercase hex digits, not {sha!r}")
        if not isinstance(row["size_bytes"], int) or row["size_bytes"] <= 0:
            raise ModelError(f"model row: size_bytes must be positive, not {row['size_bytes']!r}")
        pre = row["preprocessing"]
        return cls(
            name=row["name"],
            architecture=row["architecture"],
            input_width=row["input_width"],
            input_height=row["input_height"],
            feature_dim=row["feature_dim"],
            preprocessing=Preprocessing.from_json(json.loads(pre) if isinstance(pre, str) else pre),
            weights_origin=row["weights_origin"],
            input_name=row["input_name"],
            output_name=row["output_name"],
            fixed_batch=row["fixed_batch"],
            sha256=row["sha256"],
            size_bytes=row["size_bytes"],
        )


_COLUMNS = (
    "name, architecture, input_width, input_height, feature_dim, preprocessing::text AS preprocessing, "
    "weights_origin, input_name, output_name, fixed_batch, sha256, size_bytes"
)


class Registry:
    """Prepared statements over the registry tables for one backend (plans are prepared once)."""

    def __init__(self, plpy: Any) -> None:
        self.plpy = plpy
        self._info = plpy.prepare(f"SELECT {_COLUMNS} FROM imgfeat.models WHERE name = $1", ["text"])
        self._sha = plpy.prepare("SELECT sha256 FROM imgfeat.models WHERE name = $1", ["text"])
        self._chunks = plpy.prepare(
            "SELECT data FROM imgfeat.model_chunks WHERE model_name = $1 ORDER BY chunk_no", ["text"]
        )

    def names(self) -> list[str]:
        """Registered model names, sorted."""
        return [r["name"] for r in self.plpy.execute("SELECT name FROM imgfeat.models ORDER BY name")]

    def not_found(self, name: str) -> ModelNotFoundError:
        names = self.names()
        return ModelNotFoundError(
            f"model {name!r} is not registered",
            detail=f"registered models: {', '.join(names) if names else '(none)'}",
            hint="Register one with imgfeat.register_model(...) or the CLI: imgfeat models add NAME --synthetic resnet18",
        )

    def row(self, name: str) -> dict[str, Any] | None:
        """The registry row of ``name`` (without bytes), or None."""
        rows = self.plpy.execute(self._info, [name])
        return dict(rows[0]) if rows else None

    def sha256(self, name: str) -> str:
        """The registered sha256 of ``name``. Raises ModelNotFoundError listing the registered models."""
        rows = self.plpy.execute(self._sha, [name])
        if not rows:
            raise self.not_found(name)
        return rows[0]["sha256"]

    def info(self, name: str) -> ModelInfo:
        rows = self.plpy.execute(self._info, [name])
        if not rows:
            raise self.not_found(name)
        return ModelInfo.from_row(rows[0])

    def stream_to_cache(self, info: ModelInfo) -> str | None:
        """Write the model's chunks to the file cache one by one, hashing as they go, so the
        backend never holds the whole model; returns the verified path, or None if the cache
        directory is not writable.

        Raises:
            ModelError: the stored bytes do not match the registered size and sha256.
        """
        path = _cached_path(info.sha256)
        tmp = f"{path}.{os.getpid()}.tmp"
        digest = hashlib.sha256()
        size = 0
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fh = open(tmp, "wb")
        except OSError:
            return None
        try:
            with fh:
                cursor = self.plpy.cursor(self._chunks, [info.name])
                while True:
                    rows = cursor.fetch(1)
                    if not rows:
                        break
                    data = rows[0]["data"]
                    digest.update(data)
                    size += len(data)
                    fh.write(data)
                    del rows, data
            if size != info.size_bytes or digest.hexdigest() != info.sha256:
                raise ModelError(
                    f"model {info.name!r}: stored bytes do not match the registered sha256",
                    detail=f"expected {info.size_bytes} bytes with sha256 {info.sha256}, "
                    f"read {size} bytes with sha256 {digest.hexdigest()}",
                    hint="Register the model again (imgfeat.register_model(..., replace => true)).",
                )
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
            return path
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def read_bytes(self, info: ModelInfo) -> bytes:
        """Stream the model's chunks, verifying size and sha256. Raises ModelError if they differ."""
        buf = bytearray()
        digest = hashlib.sha256()
        cursor = self.plpy.cursor(self._chunks, [info.name])
        while True:
            rows = cursor.fetch(4)
            if not rows:
                break
            for row in rows:
                data = row["data"]
                digest.update(data)
                buf += data
        if len(buf) != info.size_bytes or digest.hexdigest() != info.sha256:
            raise ModelError(
                f"model {info.name!r}: stored bytes do not match the registered sha256",
                detail=f"expected {info.size_bytes} bytes with sha256 {info.sha256}, "
                f"read {len(buf)} bytes with sha256 {digest.hexdigest()}",
                hint="Register the model again (imgfeat.register_model(..., replace => true)).",
            )
        return bytes(buf)


FILE_CACHE_DIR = "imgfeat_models"
"""The server-side model file cache, relative to the backend's working directory (the data
directory): ``<sha256>.onnx`` files written when a backend first reads a model from the
table, so that parallel workers (which cannot query) can load it. Verified on every read."""


def _cached_path(sha256: str) -> str:
    return os.path.join(os.getcwd(), FILE_CACHE_DIR, f"{sha256}.onnx")


def _file_sha256(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def cached_path(info: ModelInfo) -> str | None:
    """The model's file in the file cache if present and intact (sha256 checked by streaming), else None."""
    path = _cached_path(info.sha256)
    if not os.path.exists(path):
        return None
    if _file_sha256(path) != info.sha256:
        try:
            os.unlink(path)
        except OSError:
            pass
        return None
    return path


def read_cached(info: ModelInfo) -> bytes | None:
    """The model's bytes from the file cache if present and intact (size and sha256), else None."""
    path = cached_path(info)
    if path is None:
        return None
    with open(path, "rb") as fh:
        return fh.read()


def write_cached(sha256: str, data: bytes) -> None:
    """Write a model's bytes to the file cache (atomically; best effort: errors are ignored)."""
    path = _cached_path(sha256)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError:
        pass


def store(
    plpy: Any,
    *,
    name: str,
    onnx_bytes: bytes,
    architecture: str,
    input_width: int,
    input_height: int,
    feature_dim: int,
    preprocessing: Preprocessing,
    weights_origin: str,
    input_name: str,
    output_name: str,
    fixed_batch: bool,
    replace: bool,
    feature_layer: str = "pooled",
) -> str:
    """Insert (or with ``replace``, overwrite) a model and its chunks; returns the sha256 hex digest.

    Raises:
        ModelError: unknown weights origin, or the name exists and ``replace`` is false.
    """
    if weights_origin not in WEIGHTS_ORIGINS:
        raise ModelError(
            f"weights_origin must be one of {', '.join(WEIGHTS_ORIGINS)}, not {weights_origin!r}"
        )
    exists = plpy.execute(plpy.prepare("SELECT 1 FROM imgfeat.models WHERE name = $1", ["text"]), [name])
    if exists and not replace:
        raise ModelError(
            f"model {name!r} is already registered",
            hint="Pass replace => true to overwrite it, or drop it first with imgfeat.drop_model(name).",
        )
    sha = hashlib.sha256(onnx_bytes).hexdigest()
    if exists:
        plpy.execute(plpy.prepare("DELETE FROM imgfeat.models WHERE name = $1", ["text"]), [name])
    insert = plpy.prepare(
        "INSERT INTO imgfeat.models (name, architecture, input_width, input_height, feature_dim, "
        "preprocessing, weights_origin, input_name, output_name, fixed_batch, sha256, size_bytes, feature_layer) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12, $13)",
        ["text", "text", "int4", "int4", "int4", "text", "text", "text", "text", "bool", "text", "int8", "text"],
    )
    plpy.execute(
        insert,
        [name, architecture, input_width, input_height, feature_dim, json.dumps(preprocessing.to_json()),
         weights_origin, input_name, output_name, fixed_batch, sha, len(onnx_bytes), feature_layer],
    )
    chunk = plpy.prepare(
        "INSERT INTO imgfeat.model_chunks (model_name, chunk_no, data) VALUES ($1, $2, $3)",
        ["text", "int4", "bytea"],
    )
    view = memoryview(onnx_bytes)
    for number, offset in enumerate(range(0, len(onnx_bytes), CHUNK_BYTES)):
        plpy.execute(chunk, [name, number, bytes(view[offset : offset + CHUNK_BYTES])])
    write_cached(sha, onnx_bytes)
    return sha
