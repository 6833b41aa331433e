"""Static int8 quantization of a registered featurizer (``imgfeat.quantize_model``).

onnxruntime's static quantization (:func:`onnxruntime.quantization.quantize_static`) turns a
float32 feature extractor into an int8 one: weights are quantized per output channel
(symmetric int8), activations per tensor (asymmetric uint8) with ranges calibrated by
running the float model over images the user names, decoded with the model's own
preprocessing. On CPUs with VNNI (AVX-512 VNNI, AMX) onnxruntime's int8 convolutions run
about 3x faster than float32 (see ``make bench``). The quantized model is a registry entry
of its own (e.g. ``resnet50-int8``): same input, preprocessing and feature dimension.

Choices and where they come from:

* ``QuantFormat.QDQ`` (:data:`QUANT_FORMAT`): on this project's benchmark machine (2 cores,
  AVX-512 VNNI + AMX, onnxruntime 1.32) QDQ and QOperator models ran equally fast (resnet50
  batch 16: 90 vs 91 images/s, float32 25.5; resnet18: 205 vs 203, float32 61), and QDQ is
  the format onnxruntime recommends for CPUs; the features are the same.
* ``activation_type=QUInt8, weight_type=QInt8, reduce_range=False, per_channel=True``:
  onnxruntime's documented recommendation for x86 CPUs with VNNI (``quantize_static``
  docstring, "Choosing parameters for CPU inference"); per-channel weights because ResNet
  convolution weights vary across output channels.
* Calibration ``MinMax`` over :data:`DEFAULT_CALIBRATION_ROWS` images, after
  ``quant_pre_process`` (ONNX shape inference and onnxruntime's basic graph optimisation,
  as onnxruntime's quantization examples do; symbolic shape inference, which needs sympy
  and serves transformer models, is skipped).

Accuracy (``make bench``, CMU faces, synthetic weights): the int8 features' median cosine
similarity to float32 is 0.9995 for resnet18 and 0.986 for resnet50. The synthetic resnet50 is
as far off under 1 % Gaussian input noise (cosine 0.992): a deep network with random weights
amplifies any perturbation, rounding included. Other calibration methods, more calibration
images, QOperator, symmetric activations or float32 residual additions did not move it past
0.988; measure pre-trained weights with ``python -m bench --weights resnet50=FILE``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ImgfeatError, InvalidParameterError, ModelError

DEFAULT_CALIBRATION_ROWS = 64
"""Calibration images read by default: enough for stable MinMax ranges on ResNets, about
half a minute of calibration for resnet50 on 2 cores."""

MAX_CALIBRATION_ROWS = 4096

CALIBRATION_BATCH = 8
"""Images per calibration run (the calibrator keeps only per-tensor minima and maxima)."""

QUANT_FORMAT = "qdq"
"""``qdq`` (QuantizeLinear/DequantizeLinear pairs around float operators, which onnxruntime
fuses into int8 kernels at load time) or ``qoperator`` (QLinearConv, QLinearAdd, ...)."""


@dataclass(frozen=True)
class QuantizeOptions:
    """Knobs of :func:`quantize_onnx` (defaults: see the module docstring)."""

    quant_format: str = QUANT_FORMAT
    per_channel: bool = True
    calibration_method: str = "minmax"
    batch_size: int = CALIBRATION_BATCH


class TensorReader:
    """An onnxruntime ``CalibrationDataReader`` over a float32 NCHW array, ``batch_size`` images per run."""

    def __init__(self, input_name: str, tensors: np.ndarray, batch_size: int) -> None:
        self.input_name = input_name
        self.tensors = np.ascontiguousarray(tensors, dtype=np.float32)
        self.batch_size = max(1, batch_size)
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.tensors):
            return None
        batch = self.tensors[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.position = 0


def quantize_onnx(
    onnx_bytes: bytes, calibration: np.ndarray, input_name: str, options: QuantizeOptions = QuantizeOptions()
) -> bytes:
    """Statically quantize a float32 ONNX model to int8.

    Args:
        onnx_bytes: the float32 model (a registered feature extractor).
        calibration: float32 [N, C, H, W] preprocessed calibration images, N >= 1.
        input_name: the model's image input.
        options: format, per-channel weights, calibration method, batch size (1 for models
            whose batch dimension is fixed to 1).

    Returns:
        The int8 model's bytes; its inputs and outputs keep their names, shapes and float32 type.

    Raises:
        InvalidParameterError: no calibration images or an unknown option.
        ModelError: onnxruntime could not quantize the model (its message in ``detail``).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration.ndim != 4 or len(calibration) == 0:
        raise InvalidParameterError("quantization needs at least one calibration image")
    formats = {"qoperator": QuantFormat.QOperator, "qdq": QuantFormat.QDQ}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if options.quant_format not in formats or options.calibration_method not in methods:
        raise InvalidParameterError(
            f"unknown quantization format {options.quant_format!r} or calibration method {options.calibration_method!r}",
            hint=f"formats: {', '.join(formats)}; methods: {', '.join(methods)}",
        )

    class Reader(TensorReader, CalibrationDataReader):
        pass

    reader = Reader(input_name, calibration, options.batch_size)
    with tempfile.TemporaryDirectory(prefix="imgfeat-quantize-") as tmp:
        source = os.path.join(tmp, "float32.onnx")
        prepared = os.path.join(tmp, "prepared.onnx")
        target = os.path.join(tmp, "int8.onnx")
        with open(source, "wb") as fh:
            fh.write(onnx_bytes)
        try:
            quant_pre_process(source, prepared, skip_symbolic_shape=True)
            quantize_static(
                prepared, target, reader,
                quant_format=formats[options.quant_format],
                per_channel=options.per_channel,
                reduce_range=False,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[options.calibration_method],
            )
        except (ValueError, RuntimeError, OSError) as exc:  # onnx / onnxruntime failures
            raise ModelError("onnxruntime could not quantize the model", detail=str(exc)) from exc
        with open(target, "rb") as fh:
            return fh.read()


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two float [N, D] arrays: float64 [N] (0 where a row is all zero)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


# --------------------------------------------------------------------------- in the database


def calibration_images(
    plpy: Any, source: str, image_column: str, rows: int, image_root: Callable[[Any], str]
) -> tuple[list[bytes], list[ImgfeatError]]:
    """Up to ``rows`` non-NULL images of ``source`` (a table or view), evenly spread over it
    (every k-th in scan order), and the errors of those that could not be read. A text
    column holds paths under ``imgfeat.image_root``.

    Raises:
        InvalidParameterError: unknown column, a column neither bytea nor text, no images.
        ConfigurationError, FileAccessError: paths without a usable image root.
    """
    from . import files
    from .jobs import column, relation

    src = relation(plpy, source)
    col = column(src, image_column, "image")
    if col.type == "bytea":
        from_paths = False
    elif col.type == "text" or col.type.startswith("character varying"):
        from_paths = True
    else:
        raise InvalidParameterError(
            f"image column {image_column!r} is {col.type}; it must be bytea (image bytes) or text (paths under imgfeat.image_root)"
        )
    total = plpy.execute(f"SELECT count(*) AS n FROM {src.quoted} WHERE {col.quoted} IS NOT NULL")[0]["n"]
    if total == 0:
        raise InvalidParameterError(
            f"calibration source {src.quoted} has no images in column {image_column!r}",
            hint="Name a table or view with the images the model will see (e.g. a sample of the training set).",
        )
    step = max(1, -(-total // rows))
    picked = plpy.execute(
        plpy.prepare(
            f"SELECT s.image FROM (SELECT {col.quoted} AS image, pg_catalog.row_number() OVER () AS n "
            f"FROM {src.quoted} WHERE {col.quoted} IS NOT NULL) s WHERE (s.n - 1) % $1 = 0 LIMIT $2",
            ["int8", "int4"],
        ),
        [step, rows],
    )
    images = [r["image"] for r in picked]
    if not from_paths:
        return images, []
    root = image_root(plpy)
    read: list[bytes] = []
    failed: list[ImgfeatError] = []
    for path in images:
        try:
            read.append(files.read_image_file(root, path))
        except ImgfeatError as err:
            failed.append(err)
    return read, failed


def quantize_registered(
    plpy: Any,
    model_name: str,
    calibration_source: str,
    image_column: str,
    new_name: str | None,
    calibration_rows: int,
    replace: bool,
    *,
    max_pixels: int,
    image_root: Callable[[Any], str],
    options: QuantizeOptions = QuantizeOptions(),
) -> str:
    """The body of ``imgfeat.quantize_model``: quantize a registered model, register the result.

    The new entry (default name ``<model_name>-int8``) inherits the base model's
    architecture, preprocessing, feature dimension, input/output names and weights origin.
    Calibration images that cannot be decoded are skipped.

    Returns:
        The new model's name.

    Raises:
        ModelNotFoundError: unknown base model.
        InvalidParameterError: bad ``calibration_rows``, no (decodable) calibration images.
        ModelError: the new name is taken (without ``replace``), or quantization failed.
    """
    from . import image, registry

    if model_name is None or calibration_source is None:
        raise InvalidParameterError("model_name and calibration_source must not be NULL")
    if calibration_rows is None or not 1 <= calibration_rows <= MAX_CALIBRATION_ROWS:
        raise InvalidParameterError(
            f"calibration_rows must be between 1 and {MAX_CALIBRATION_ROWS}, not {calibration_rows}"
        )
    reg = registry.Registry(plpy)
    info = reg.info(model_name)
    name = new_name or f"{model_name}-int8"
    if name == model_name:
        raise InvalidParameterError("new_name must differ from the model being quantized")
    if not replace and plpy.execute(plpy.prepare("SELECT 1 FROM imgfeat.models WHERE name = $1", ["text"]), [name]):
        raise ModelError(
            f"model {name!r} is already registered",
            hint="Pass replace => true to overwrite it, or choose another new_name.",
        )
    images, unreadable = calibration_images(plpy, calibration_source, image_column or "image", calibration_rows, image_root)
    tensors, good, bad = image.images_to_batch(images, info.preprocessing, max_pixels=max_pixels)
    errors = unreadable + [err for _, err in bad]
    tried = len(images) + len(unreadable)
    if not good:
        raise InvalidParameterError(
            f"none of the {tried} calibration images could be read and decoded",
            detail=f"first error: {errors[0].message}",
        )
    opts = options
    if info.fixed_batch and opts.batch_size != 1:
        opts = QuantizeOptions(opts.quant_format, opts.per_channel, opts.calibration_method, 1)
    quantized = quantize_onnx(reg.read_bytes(info), tensors, info.input_name, opts)
    registry.store(
        plpy,
        name=name,
        onnx_bytes=quantized,
        architecture=info.architecture,
        input_width=info.input_width,
        input_height=info.input_height,
        feature_dim=info.feature_dim,
        preprocessing=info.preprocessing,
        weights_origin=info.weights_origin,
        input_name=info.input_name,
        output_name=info.output_name,
        fixed_batch=info.fixed_batch,
        replace=replace,
    )
    if errors:
        plpy.notice(
            f"imgfeat: {len(errors)} of {tried} calibration images could not be read or decoded and were skipped",
            detail=f"first error: {errors[0].message}",
        )
    return name
