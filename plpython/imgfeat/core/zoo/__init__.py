"""The model zoo: torchvision's ResNet-18/50/101 and AlexNet, and TF's EfficientNet-Lite0, as
ONNX feature extractors.

Built from numpy state dicts with the ``onnx`` package only; ``.pth`` files are read without
torch (:mod:`.torchfile`). Public API:

* :data:`ARCHITECTURES` / :class:`ArchSpec`: input size, feature size, preprocessing;
* :data:`FEATURE_LAYERS`: ``pooled`` (default) or ``spatial`` features;
* :func:`build_feature_extractor` / :func:`build_classifier`: ``onnx.ModelProto``;
* :func:`synthetic_state_dict`: seeded, well-scaled random weights for tests;
* :func:`load_state_dict` / :func:`save_state_dict`: ``.safetensors`` (numpy) and ``.pth``
  (read by :func:`.torchfile.read_torch_file`, no torch);
* :func:`param_count`, :func:`expected_shapes`, :func:`feature_state_dict`;
* :mod:`.catalog`: the public pre-trained files (URLs, checksums, preprocessing).
"""

from __future__ import annotations

from . import catalog
from .archspec import ARCHITECTURES, ArchSpec, check_feature_layer
from .layers import FEATURE_LAYERS, SPATIAL_GRID
from .build import build_classifier, build_feature_extractor
from .state_dict import (
    check_state_dict,
    expected_shapes,
    feature_state_dict,
    load_state_dict,
    param_count,
    save_state_dict,
)
from .synthetic import synthetic_state_dict

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "FEATURE_LAYERS",
    "SPATIAL_GRID",
    "check_feature_layer",
    "build_classifier",
    "build_feature_extractor",
    "catalog",
    "check_state_dict",
    "expected_shapes",
    "feature_state_dict",
    "load_state_dict",
    "param_count",
    "save_state_dict",
    "synthetic_state_dict",
]
