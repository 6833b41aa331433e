"""The architectures imgfeat builds itself, and what each one expects and produces."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any
from collections.abc import Callable

from ..spec import Preprocessing, torchvision_imagenet
from . import alexnet as _alexnet
from . import resnet as _resnet
from .layers import Backend


@dataclass(frozen=True)
class ArchSpec:
    """One architecture.

    Attributes:
        name: ``resnet18``, ``resnet50``, ``resnet101`` or ``alexnet``.
        input_width, input_height: the built models' fixed input size, pixels.
        feature_dim: length of the feature vector (``features`` output, float32).
        feature_layer: where the features are taken, in torchvision's terms.
        preprocessing: how images must be prepared for the torchvision weights.
        head_prefix: state-dict prefix of the 1000-way classifier layer that the feature
            extractor drops (``fc.`` or ``classifier.6.``).
        num_classes: classes of the standard ImageNet-1k head.
    """

    name: str
    input_width: int
    input_height: int
    feature_dim: int
    feature_layer: str
    preprocessing: Preprocessing
    head_prefix: str
    num_classes: int = 1000

    def forward(self, backend: Backend, x: Any, *, head: bool, num_classes: int | None = None) -> Any:
        """Run the topology with ``backend`` (see :mod:`.layers`)."""
        return _TOPOLOGY[self.name](backend, x, head=head, num_classes=num_classes or self.num_classes)


_TOPOLOGY: dict[str, Callable[..., Any]] = {
    "resnet18": partial(_resnet.resnet, arch="resnet18"),
    "resnet50": partial(_resnet.resnet, arch="resnet50"),
    "resnet101": partial(_resnet.resnet, arch="resnet101"),
    "alexnet": _alexnet.alexnet,
}


def _resnet_spec(name: str) -> ArchSpec:
    return ArchSpec(
        name=name, input_width=224, input_height=224, feature_dim=_resnet.feature_dim(name),
        feature_layer="global average pool (avgpool), flattened; the input of fc",
        preprocessing=torchvision_imagenet(), head_prefix="fc.",
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
    ),
}
"""The built-in architectures by name."""
