"""What the registry says about a model: :class:`ModelInfo` (one row of ``imgfeat.models``),
and the check that a model's bytes are the registered ones.

Pure: used by the database layer (a backend loading a model), by Spark executors and by the
client, with the row coming from wherever they read it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import ModelError

PRECISIONS = ("fp32", "bf16", "int8")
"""``imgfeat.models.precision`` (the same as :data:`imgfeat.core.engines.PRECISIONS`; kept here so that
reading a catalog row imports no engine)."""

ENGINES = ("onnxruntime", "openvino")
"""``imgfeat.models.engines``' values (:data:`imgfeat.core.engines.ENGINES`)."""
from .spec import Preprocessing

WEIGHTS_ORIGINS = ("imagenet", "synthetic", "custom")
"""``imgfeat.models.weights_origin``: pre-trained on ImageNet, seeded synthetic, or the user's own."""

_SHA256 = re.compile(r"[0-9a-f]{64}")

ROW_COLUMNS = (
    "name, architecture, input_width, input_height, feature_dim, preprocessing::text AS preprocessing, "
    "weights_origin, input_name, output_name, fixed_batch, sha256, size_bytes, precision, engines"
)
"""The SQL select list of an ``imgfeat.models`` row as :meth:`ModelInfo.from_row` reads it."""


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
    precision: str = "fp32"
    """fp32, bf16 or int8 (:data:`imgfeat.core.engines.PRECISIONS`)."""
    engines: tuple[str, ...] = ("onnxruntime",)
    """The engines that may run it, in order of preference (:mod:`imgfeat.core.engines`)."""

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
        # A row without these columns (a catalog from before they existed) is fp32 on onnxruntime.
        precision = row.get("precision", "fp32")
        engines = tuple(row.get("engines", ("onnxruntime",)) or ())
        if precision not in PRECISIONS or not engines or not set(engines) <= set(ENGINES):
            raise ModelError(f"model row: precision {precision!r} with engines {list(engines)} is not one imgfeat runs",
                             hint=f"precision: {', '.join(PRECISIONS)}; engines: {', '.join(ENGINES)}")
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
            precision=precision,
            engines=engines,
        )


def check_model_bytes(info: ModelInfo, size: int, sha256: str) -> None:
    """Raise ModelError unless ``size`` bytes with digest ``sha256`` are the registered model's.

    Raises:
        ModelError: another size or another sha256 (the stored or shipped bytes are damaged).
    """
    if size != info.size_bytes or sha256 != info.sha256:
        raise ModelError(
            f"model {info.name!r}: stored bytes do not match the registered sha256",
            detail=f"expected {info.size_bytes} bytes with sha256 {info.sha256}, read {size} bytes with sha256 {sha256}",
            hint="Register the model again (imgfeat.register_model(..., replace => true)).",
        )
