"""Client-side model registration: ``imgfeat models add|list|remove``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg


_COLUMNS = ("name", "architecture", "feature_dim", "sha256", "feature_layer", "weights_origin")


def add_synthetic(
    conn: psycopg.Connection[Any], name: str, arch: str, *, seed: int = 0, replace: bool = False,
    feature_layer: str = "pooled",
) -> dict[str, Any]:
    """Register ``arch`` with seeded synthetic weights, built by the server (``imgfeat.register_synthetic_model``)."""
    row = conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM imgfeat.register_synthetic_model(%s, %s, %s, %s, %s)",
        (arch, name, seed, replace, feature_layer),
    ).fetchone()
    assert row is not None
    return dict(zip(_COLUMNS, row))


LARGE_MODEL_BYTES = 32 * 1024 * 1024
"""Models larger than this are uploaded as a large object in chunks (``imgfeat.register_large_model``)."""

UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024


def add_onnx(
    conn: psycopg.Connection[Any],
    name: str,
    onnx_bytes: bytes,
    *,
    architecture: str | None = None,
    weights_origin: str = "custom",
    output: str | None = None,
    preprocessing: dict[str, Any] | None = None,
    feature_dim: int | None = None,
    replace: bool = False,
    feature_layer: str = "pooled",
) -> dict[str, Any]:
    """Register ONNX bytes (cut at the feature layer by the server). ``feature_layer`` records
    what the graph's output is (``pooled`` or ``spatial``; see ``imgfeat.register_model``).

    Up to :data:`LARGE_MODEL_BYTES` the bytes go as one parameter of
    ``imgfeat.register_model``; larger models are streamed into a temporary large object
    (``lo_put`` in 8 MiB chunks) and registered with ``imgfeat.register_large_model``, so
    the server holds about twice the model's size instead of four times.
    """
    spec = json.dumps(preprocessing) if preprocessing is not None else None
    columns = ", ".join(_COLUMNS)
    if len(onnx_bytes) <= LARGE_MODEL_BYTES:
        row = conn.execute(
            f"SELECT {columns} FROM imgfeat.register_model(%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s)",
            (name, onnx_bytes, architecture, weights_origin, spec, output, feature_dim, replace, feature_layer),
        ).fetchone()
    else:
        with conn.transaction():
            oid = conn.execute("SELECT pg_catalog.lo_create(0)").fetchone()[0]  # type: ignore[index]
            view = memoryview(onnx_bytes)
            for offset in range(0, len(onnx_bytes), UPLOAD_CHUNK_BYTES):
                conn.execute("SELECT pg_catalog.lo_put(%s, %s, %s)",
                             (oid, offset, bytes(view[offset : offset + UPLOAD_CHUNK_BYTES])))
            row = conn.execute(
                f"SELECT {columns} FROM imgfeat.register_large_model(%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s)",
                (name, oid, architecture, weights_origin, spec, output, feature_dim, replace, feature_layer),
            ).fetchone()
            conn.execute("SELECT pg_catalog.lo_unlink(%s)", (oid,))
    assert row is not None
    return dict(zip(_COLUMNS, row))


def add_weights(
    conn: psycopg.Connection[Any], name: str, weights: Path, arch: str, *, weights_origin: str = "custom",
    replace: bool = False, feature_layer: str = "pooled",
) -> dict[str, Any]:
    """Build ``arch`` from a state dict file (``.safetensors``, or a torch ``.pth`` read without
    torch) and register it. ``weights_origin`` is ``custom`` unless the caller vouches for the
    file (``imagenet``): nothing here can tell pre-trained weights from any others."""
    from imgfeat.core import zoo

    proto = zoo.build_feature_extractor(arch, zoo.load_state_dict(weights), feature_layer)
    return add_onnx(conn, name, proto.SerializeToString(), architecture=arch, weights_origin=weights_origin,
                    replace=replace, feature_layer=feature_layer)


def list_models(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """The registry without the ONNX bytes."""
    cur = conn.execute(
        "SELECT name, architecture, input_width, input_height, feature_dim, feature_layer, weights_origin, size_bytes, sha256, created_at "
        "FROM imgfeat.models ORDER BY name"
    )
    cols = [c.name for c in cur.description or []]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def remove(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT imgfeat.drop_model(%s)", (name,)).fetchone()
    return bool(row and row[0])
