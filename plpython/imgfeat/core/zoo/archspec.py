"""The architectures imgfeat builds itself, and what each one expects and produces."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any
from collections.abc import Callable

from ..errors import ModelError
from ..spec import Preprocessing, tf_efficientnet_lite, torchvision_imagenet
from . import alexnet as _alexnet
from . import efficientnet as _efficientnet
from . import resnet as _resnet
from .layers import FEATURE_LAYERS, SPATIAL_GRID, Backend


@dataclass(frozen=True)
class ArchSpec:
    """One architecture.

    Attributes:
        name: ``resnet18``, ``resnet50``, ``resnet101``, ``alexnet`` or ``efficientnet_lite0``.
        input_width, input_height: the built models' fixed input size, pixels.
        feature_dim: length of the ``pooled`` feature vector (``features`` output, float32).
        feature_layer: where the ``pooled`` features are taken, in the source's terms.
        preprocessing: how images must be prepared for the published weights.
        head_prefix: state-dict prefix of the 1000-way classifier layer that the feature
            extractor drops (``fc.``, ``classifier.6.`` or ``_fc.``).
        spatial_dim: length of the ``spatial`` feature vector (4x the last map's channels).
        spatial_layer: where the ``spatial`` features are taken.
        num_classes: classes of the standard ImageNet-1k head.
    """

    name: str
    input_width: int
    input_height: int
    feature_dim: int
    feature_layer: str
    preprocessing: Preprocessing
    head_prefix: str
    spatial_dim: int
    spatial_layer: str
    num_classes: int = 1000

    def forward(self, backend: Backend, x: Any, *, head: bool, num_classes: int | None = None,
                features: str = "pooled") -> Any:
        """Run the topology with ``backend`` (see :mod:`.layers`); ``features`` is one of
        :data:`.layers.FEATURE_LAYERS`."""
        check_feature_layer(features)
        return _TOPOLOGY[self.name](backend, x, head=head, num_classes=num_classes or self.num_classes,
                                    features=features)

    def dim(self, feature_layer: str) -> int:
        """The feature vector's length at ``feature_layer`` (``pooled`` or ``spatial``)."""
        return self.spatial_dim if check_feature_layer(feature_layer) == "spatial" else self.feature_dim

    def layer(self, feature_layer: str) -> str:
        """Where ``feature_layer`` is taken, in words."""
        return self.spatial_layer if check_feature_layer(feature_layer) == "spatial" else self.feature_layer


def check_feature_layer(feature_layer: str) -> str:
    """``feature_layer`` if it is one of :data:`.layers.FEATURE_LAYERS`, else :class:`ModelError`."""
    if feature_layer not in FEATURE_LAYERS:
        raise ModelError(
            f"unknown feature layer {feature_layer!r}",
            hint="use 'pooled' (the network's own feature layer, the default) or 'spatial' "
            f"(the last feature map averaged to {SPATIAL_GRID}x{SPATIAL_GRID}, flattened)",
        )
    return feature_layer


_TOPOLOGY: dict[str, Callable[..., Any]] = {
    "resnet18": partial(_resnet.resnet, arch="resnet18"),
    "resnet50": partial(_resnet.resnet, arch="resnet50"),
    "resnet101": partial(_resnet.resnet, arch="resnet101"),
    "alexnet": _alexnet.alexnet,
    "efficientnet_lite0": _efficientnet.efficientnet_lite0,
}

_GRID = f"averaged to {SPATIAL_GRID}x{SPATIAL_GRID} (AdaptiveAvgPool2d), flattened channel-major"


def _resnet_spec(name: str) -> ArchSpec:
    return ArchSpec(
        name=name, input_width=224, input_height=224, feature_dim=_resnet.feature_dim(name),
        feature_layer="global average pool (avgpool), flattened; the input of fc",
        preprocessing=torchvision_imagenet(), head_prefix="fc.",
        spatial_dim=_resnet.feature_dim(name) * SPATIAL_GRID**2,
        spatial_layer=f"layer4's output ({_resnet.feature_dim(name)}x7x7) {_GRID}",
    )


ARCHITECTURES: dict[str, ArchSpec] = {
    "resnet18": _resnet_spec("resnet18"),
    "resnet50": _resnet_spec("resnet50"),
    "resnet101": _resnet_spec("resnet101"),
    # AlexNet at 227x227, as in the original Caffe/BVLC models; torchvision documents 224x224
    # for its weights, but the network is the same at 227 (the last pooling map is 6x6 at both
    # sizes), so the torchvision ImageNet mean/std are used with a 227 centre crop of a
    # 256-pixel resize: torchvision_imagenet(size=227, resize_size=256).
    "alexnet": ArchSpec(
        name="alexnet", input_width=227, input_height=227, feature_dim=_alexnet.FEATURE_DIM,
        feature_layer="fc7 after its ReLU (classifier.5); the input of classifier.6",
        preprocessing=torchvision_imagenet(size=227, resize_size=256), head_prefix="classifier.6.",
        spatial_dim=_alexnet.SPATIAL_DIM, spatial_layer=f"pool5, the last max pool (256x6x6), {_GRID}",
    ),
    # TF EfficientNet-Lite0 (converted to lukemelas' PyTorch names): 224x224, Lite's own
    # normalisation (p - 127) / 128 and TF's eval crop (224 of a 256 resize; bilinear, see
    # imgfeat.spec.tf_efficientnet_lite).
    "efficientnet_lite0": ArchSpec(
        name="efficientnet_lite0", input_width=224, input_height=224, feature_dim=_efficientnet.FEATURE_DIM,
        feature_layer="global average pool of the head (_conv_head, _bn1, ReLU6; 1280x7x7); the input of _fc",
        preprocessing=tf_efficientnet_lite(), head_prefix="_fc.",
        spatial_dim=_efficientnet.HEAD_CHANNELS * SPATIAL_GRID**2,
        spatial_layer=f"the head's output (1280x7x7, after ReLU6) {_GRID}",
    ),
}
"""The built-in architectures by name."""
