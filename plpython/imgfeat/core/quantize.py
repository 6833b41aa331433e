"""Static int8 quantization of an ONNX feature extractor (the core of ``imgfeat.quantize_model``).

onnxruntime's static quantization (:func:`onnxruntime.quantization.quantize_static`) turns a
float32 feature extractor into an int8 one: weights are quantized per output channel
(symmetric int8), activations per tensor (asymmetric uint8) with ranges calibrated by
running the float model over images the user names, decoded with the model's own
preprocessing. On CPUs with VNNI (AVX-512 VNNI, AMX) onnxruntime's int8 convolutions run
several times faster than float32 (the README's Performance section). The quantized model is a registry entry
of its own (e.g. ``resnet50-int8``): same input, preprocessing and feature dimension.

Choices and where they come from:

* ``QuantFormat.QDQ`` (:data:`QUANT_FORMAT`): QDQ and QOperator models run equally fast here
  and give the same features, and QDQ is the format onnxruntime recommends for CPUs.
* ``activation_type=QUInt8, weight_type=QInt8, reduce_range=False, per_channel=True``:
  onnxruntime's documented recommendation for x86 CPUs with VNNI (``quantize_static``
  docstring, "Choosing parameters for CPU inference"); per-channel weights because ResNet
  convolution weights vary across output channels.
* Calibration ``MinMax`` over the calibration images (``imgfeat.quantize_model`` reads 64 by default), after
  ``quant_pre_process`` (ONNX shape inference and onnxruntime's basic graph optimisation,
  as onnxruntime's quantization examples do; symbolic shape inference, which needs sympy
  and serves transformer models, is skipped).

How close the int8 features are to float32 (median cosine similarity, and the accuracy of the
seed's classifier on them) is measured by ``make bench`` and reported in the README's
Performance section, beside a yardstick: how far the float model's own features move under
1 % input noise.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidParameterError, ModelError

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


def centered_cosine(a: np.ndarray, b: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of ``a - mean`` and ``b - mean`` (float [N, D] and float [D]):
    float64 [N] (0 where a centered row is all zero).

    The pooled features of a ReLU network are non-negative and share a large mean vector, so a
    plain cosine is near 1 for almost any two images; subtracting the reference features' mean
    (``mean``: usually the fp32 features' mean over the images compared) first measures how far
    a variant moves what distinguishes one image from another.

    Raises:
        ValueError: shapes that do not broadcast (``a`` and ``b`` [N, D], ``mean`` [D]).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or mean.shape != a.shape[1:]:
        raise ValueError(f"centered_cosine wants [N, D], [N, D], [D]; got {a.shape}, {b.shape}, {mean.shape}")
    return cosine_similarity(a - mean, b - mean)
