"""ONNX models of the built-in architectures from a state dict (numpy + onnx; no torch)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from .layers import OPSET, OnnxBackend, OnnxValue
from .archspec import check_feature_layer
from .state_dict import arch_spec, check_state_dict

INPUT_NAME = "input"
FEATURES_NAME = "features"
LOGITS_NAME = "logits"
BATCH_DIM = "N"


def build_feature_extractor(
    arch: str, state_dict: Mapping[str, np.ndarray], feature_layer: str = "pooled",
) -> onnx.ModelProto:
    """The feature extractor of ``arch`` with the weights of ``state_dict``.

    Input ``input``: float32 ``[N, 3, H, W]`` (``N`` dynamic; ``H, W`` from
    ``ARCHITECTURES[arch]``, 224 or 227), preprocessed per ``ArchSpec.preprocessing``.
    Output ``features``: float32 ``[N, ArchSpec.dim(feature_layer)]``. ``pooled`` (default):
    ResNets' global average pool, 512 or 2048; AlexNet's fc7 after ReLU, 4096;
    EfficientNet-Lite0's global average pool, 1280. ``spatial``: the last feature map averaged
    to 2x2 and flattened channel-major, 4x its channels (see :data:`.layers.FEATURE_LAYERS`).
    Opset 17, IR 8, checked with ``onnx.checker``. BatchNorm (eval mode; eps 1e-5, EfficientNet
    1e-3) is folded into the convolutions, so the graph has no BatchNormalization nodes. The
    classifier head in ``state_dict``, if any, is ignored.

    Raises:
        ModelError: unknown ``arch`` or ``feature_layer``, or weights missing, mis-shaped or unexpected.
    """
    return _build(arch, state_dict, head=False, feature_layer=feature_layer)


def build_classifier(arch: str, state_dict: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """The whole network with its classifier head: output ``logits`` float32
    ``[N, num_classes]`` (1000 for ImageNet weights; taken from the head's weight shape),
    no softmax. Input and conventions as :func:`build_feature_extractor`.

    Raises:
        ModelError: unknown ``arch``, or weights (head included) missing, mis-shaped or unexpected.
    """
    return _build(arch, state_dict, head=True)


def _build(arch: str, state_dict: Mapping[str, np.ndarray], *, head: bool, feature_layer: str = "pooled") -> onnx.ModelProto:
    spec = arch_spec(arch)
    check_feature_layer(feature_layer)
    sd = check_state_dict(arch, state_dict, head=head)
    num_classes = sd[f"{spec.head_prefix}weight"].shape[0] if head else spec.num_classes
    backend = OnnxBackend(sd)
    backend.g.unique(INPUT_NAME)
    backend.g.unique(FEATURES_NAME)
    backend.g.unique(LOGITS_NAME)
    x = OnnxValue(INPUT_NAME, 3, spec.input_height, spec.input_width)
    y = spec.forward(backend, x, head=head, num_classes=num_classes, features=feature_layer)
    out_name, out_dim = (LOGITS_NAME, num_classes) if head else (FEATURES_NAME, spec.dim(feature_layer))
    assert y.c == out_dim, (y, out_dim)
    what = "classifier (logits)" if head else f"feature extractor ({feature_layer}: {spec.layer(feature_layer)})"
    doc = (
        f"imgfeat {arch} {what}; BatchNorm folded; input "
        f"[N,3,{spec.input_height},{spec.input_width}] float32, opset {OPSET}"
    )
    return backend.g.model(
        INPUT_NAME, [BATCH_DIM, 3, spec.input_height, spec.input_width], y.name, out_name,
        [BATCH_DIM, out_dim], doc=doc,
    )
