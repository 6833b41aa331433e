"""The model registry: ONNX feature extractors stored in ``imgfeat.models`` (what is known of
each, :class:`~imgfeat.core.model_info.ModelInfo`) and ``imgfeat.model_chunks`` (the bytes, in
chunks of :data:`CHUNK_BYTES`), and the server-side file cache that parallel workers load from.

Chunked storage keeps a large model (AlexNet fp32 is about 233 MB) well below PostgreSQL's
1 GB field limit and lets a backend stream it in while hashing, so loading holds the
model's bytes about once plus onnxruntime's own copy.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from ..core.errors import ModelError, ModelNotFoundError
from ..core.model_info import ROW_COLUMNS, WEIGHTS_ORIGINS, ModelInfo, check_model_bytes
from ..core.spec import Preprocessing, torchvision_imagenet

CHUNK_BYTES = 8 * 1024 * 1024
"""Bytes per row of ``imgfeat.model_chunks`` (8 MiB)."""

class Registry:
    """Prepared statements over the registry tables for one backend (plans are prepared once)."""

    def __init__(self, plpy: Any) -> None:
        self.plpy = plpy
        self._info = plpy.prepare(f"SELECT {ROW_COLUMNS} FROM imgfeat.models WHERE name = $1", ["text"])
        self._row = plpy.prepare("SELECT * FROM imgfeat.models WHERE name = $1", ["text"])
        self._chunks = plpy.prepare(
            "SELECT data FROM imgfeat.model_chunks WHERE model_name = $1 ORDER BY chunk_no", ["text"]
        )

    def names(self) -> list[str]:
        """Registered model names, sorted."""
        return [r["name"] for r in self.plpy.execute("SELECT name FROM imgfeat.models ORDER BY name")]

    def not_found(self, name: str) -> ModelNotFoundError:
        from ..core.zoo import catalog

        names = self.names()
        return ModelNotFoundError(
            f"model {name!r} is not registered",
            detail=f"registered models: {', '.join(names) if names else '(none)'}",
            hint=catalog.registration_hint(name),
        )

    def row(self, name: str) -> dict[str, Any] | None:
        """The registry row of ``name`` as :meth:`ModelInfo.from_row` reads it, or None."""
        rows = self.plpy.execute(self._info, [name])
        return dict(rows[0]) if rows else None

    def info(self, name: str) -> ModelInfo:
        """What the registry says about ``name``. Raises ModelNotFoundError listing the registered models."""
        row = self.row(name)
        if row is None:
            raise self.not_found(name)
        return ModelInfo.from_row(row)

    def catalog_row(self, name: str) -> dict[str, Any]:
        """The whole ``imgfeat.models`` row of ``name`` (what the registering functions return)."""
        return dict(self.plpy.execute(self._row, [name])[0])

    def _stream_chunks(self, info: ModelInfo, sink: Any) -> None:
        """Pass the model's chunks to ``sink`` one by one, then check size and sha256.

        Raises:
            ModelError: the stored bytes are not the registered ones.
        """
        digest = hashlib.sha256()
        size = 0
        cursor = self.plpy.cursor(self._chunks, [info.name])
        while True:
            rows = cursor.fetch(1)
            if not rows:
                break
            data = rows[0]["data"]
            digest.update(data)
            size += len(data)
            sink(data)
            del rows, data
        check_model_bytes(info, size, digest.hexdigest())

    def stream_to_cache(self, info: ModelInfo) -> str | None:
        """Write the model's chunks to the file cache one by one, hashing as they go, so the
        backend never holds the whole model; returns the verified path, or None if the cache
        directory is not writable.

        Raises:
            ModelError: the stored bytes do not match the registered size and sha256.
        """
        path = _cached_path(info.sha256)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fh = open(tmp, "wb")
        except OSError:
            return None
        try:
            with fh:
                self._stream_chunks(info, fh.write)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
            return path
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def read_bytes(self, info: ModelInfo) -> bytes:
        """The model's bytes, streamed from its chunks. Raises ModelError if they are not the registered ones."""
        buf = bytearray()
        self._stream_chunks(info, buf.extend)
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
    precision: str = "fp32",
    engines: tuple[str, ...] | None = None,
) -> str:
    """Insert (or with ``replace``, overwrite) a model and its chunks; returns the sha256 hex digest.
    ``precision`` (fp32, bf16, int8) and ``engines`` (default: the precision's
    :data:`~imgfeat.core.engines.DEFAULT_ENGINES`) are recorded with it.

    Raises:
        ModelError: unknown weights origin, or the name exists and ``replace`` is false.
    """
    from ..core.engines import DEFAULT_ENGINES

    engines = tuple(engines or DEFAULT_ENGINES[precision])
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
        "preprocessing, weights_origin, input_name, output_name, fixed_batch, sha256, size_bytes, feature_layer, "
        "precision, engines) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        ["text", "text", "int4", "int4", "int4", "text", "text", "text", "text", "bool", "text", "int8", "text",
         "text", "text[]"],
    )
    plpy.execute(
        insert,
        [name, architecture, input_width, input_height, feature_dim, json.dumps(preprocessing.to_json()),
         weights_origin, input_name, output_name, fixed_batch, sha, len(onnx_bytes), feature_layer,
         precision, list(engines)],
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


def read_large_object(plpy: Any, oid: int, chunk_bytes: int = 8 * 1024 * 1024) -> bytes:
    """A large object's contents, read in chunks (the caller needs SELECT on it).

    Raises:
        ModelError: no such large object, or it is empty.
    """
    plan = plpy.prepare("SELECT pg_catalog.lo_get($1, $2, $3) AS data", ["oid", "int8", "int4"])
    exists = plpy.execute(
        plpy.prepare("SELECT 1 FROM pg_catalog.pg_largeobject_metadata WHERE oid = $1", ["oid"]), [oid]
    )
    if not exists:
        raise ModelError(f"large object {oid} does not exist")
    buf = bytearray()
    while True:
        data = plpy.execute(plan, [oid, len(buf), chunk_bytes])[0]["data"]
        if not data:
            break
        buf += data
        del data
    if not buf:
        raise ModelError(f"large object {oid} is empty")
    out = bytes(buf)
    del buf
    return out


def register(
    plpy: Any,
    name: str,
    onnx_bytes: bytes | int,
    architecture: str | None,
    weights_origin: str,
    preprocessing: str | None,
    output_name: str | None,
    feature_dim: int | None,
    replace: bool,
    feature_layer: str = "pooled",
) -> str:
    """``imgfeat.register_model`` (ONNX bytes) and ``imgfeat.register_large_model`` (the oid of a
    large object holding them): validate, cut at the feature layer (:func:`prepare_feature_extractor`),
    store; returns the sha256. ``feature_layer`` (``pooled`` or ``spatial``) records what the
    graph's output is; for a built-in architecture it sets the expected ``feature_dim``.

    The preprocessing is ``preprocessing`` (jsonb text) when given, else the architecture's,
    else torchvision's ImageNet transform at the graph's input size.

    Raises:
        ModelError: NULL arguments, not ONNX, external data, a dynamic input size without a
            preprocessing spec, a size contradicting the graph, the name taken without ``replace``.
    """
    from ..core import zoo
    from ..core.onnx_import import prepare_feature_extractor

    if onnx_bytes is None or name is None:
        raise ModelError("name and onnx must not be NULL")
    if isinstance(onnx_bytes, int):  # a large object's oid (imgfeat.register_large_model)
        onnx_bytes = read_large_object(plpy, onnx_bytes)
    zoo.check_feature_layer(feature_layer)
    arch = zoo.ARCHITECTURES.get(architecture or "")
    if arch is not None and feature_dim is None:
        feature_dim = arch.dim(feature_layer)
    prepared = prepare_feature_extractor(onnx_bytes, output=output_name, feature_dim=feature_dim)
    del onnx_bytes
    if preprocessing is not None:
        spec = Preprocessing.from_json(json.loads(preprocessing))
    elif arch is not None:
        spec = arch.preprocessing
    elif prepared.input_width and prepared.input_height:
        spec = torchvision_imagenet(size=prepared.input_width).replace(
            width=prepared.input_width, height=prepared.input_height
        )
    else:
        raise ModelError(
            "the model's input size is dynamic, so a preprocessing spec is needed",
            hint='Pass preprocessing => \'{"width": 224, "height": 224}\' (see the README for all keys).',
        )
    if prepared.input_width and (spec.width, spec.height) != (prepared.input_width, prepared.input_height):
        raise ModelError(
            f"preprocessing size {spec.width}x{spec.height} contradicts the graph's input "
            f"{prepared.input_width}x{prepared.input_height}"
        )
    return store(
        plpy,
        name=name,
        onnx_bytes=prepared.onnx_bytes,
        architecture=architecture or "custom",
        input_width=spec.width,
        input_height=spec.height,
        feature_dim=prepared.feature_dim,
        preprocessing=spec,
        weights_origin=weights_origin,
        input_name=prepared.input_name,
        output_name=prepared.output_name,
        fixed_batch=prepared.fixed_batch,
        replace=replace,
        feature_layer=feature_layer,
    )


def register_synthetic(
    plpy: Any, architecture: str, name: str | None, seed: int, replace: bool, feature_layer: str = "pooled",
) -> str:
    """``imgfeat.register_synthetic_model``: build ``architecture`` with seeded weights and register it.

    Returns the registered name. Raises ModelError for an unknown architecture or feature layer.
    """
    from ..core import zoo

    arch = zoo.ARCHITECTURES.get(architecture)
    if arch is None:
        raise ModelError(
            f"unknown architecture {architecture!r}", hint=f"choose one of {', '.join(sorted(zoo.ARCHITECTURES))}"
        )
    zoo.check_feature_layer(feature_layer)
    name = name or architecture
    proto = zoo.build_feature_extractor(architecture, zoo.synthetic_state_dict(architecture, seed=seed), feature_layer)
    onnx_bytes = proto.SerializeToString()
    del proto
    store(
        plpy,
        name=name,
        onnx_bytes=onnx_bytes,
        architecture=architecture,
        input_width=arch.input_width,
        input_height=arch.input_height,
        feature_dim=arch.dim(feature_layer),
        preprocessing=arch.preprocessing,
        weights_origin="synthetic",
        input_name="input",
        output_name="features",
        fixed_batch=False,
        replace=replace,
        feature_layer=feature_layer,
    )
    return name
