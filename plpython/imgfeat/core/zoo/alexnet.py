"""torchvision's AlexNet topology, written against :class:`.layers.Backend`.

``torchvision.models.alexnet`` (the "one weird trick" variant, Krizhevsky 2014,
arXiv:1404.5997: 64/192/384/256/256 filters, no LRN), with its parameter names:

``features``: 0 Conv(3, 64, 11, stride 4, pad 2), 1 ReLU, 2 MaxPool(3, 2),
3 Conv(64, 192, 5, pad 2), 4 ReLU, 5 MaxPool(3, 2), 6 Conv(192, 384, 3, pad 1), 7 ReLU,
8 Conv(384, 256, 3, pad 1), 9 ReLU, 10 Conv(256, 256, 3, pad 1), 11 ReLU, 12 MaxPool(3, 2);
``avgpool``: AdaptiveAvgPool2d((6, 6)); ``classifier``: 0 Dropout, 1 Linear(9216, 4096),
2 ReLU, 3 Dropout, 4 Linear(4096, 4096), 5 ReLU, 6 Linear(4096, 1000).

Dropout is the identity at inference. The feature layer is fc7 after its ReLU
(``classifier.5``), 4096 values. At a 227x227 (or 224x224) input the last pooling map is
already 6x6, so the adaptive pool is the identity. The ``spatial`` feature layer is that
256x6x6 map (pool5) averaged to 2x2 (3x3 cells), 1024 values: AlexNet's fc6/fc7 mix every
position, so the spatial layer is taken before them.
"""

from __future__ import annotations

from typing import Any

from .layers import SPATIAL_GRID, Backend

FEATURE_DIM = 4096
SPATIAL_DIM = 256 * SPATIAL_GRID * SPATIAL_GRID


def alexnet(b: Backend, x: Any, *, head: bool, num_classes: int = 1000, features: str = "pooled") -> Any:
    """Run AlexNet on ``x`` with backend ``b``: fc7 features ``[N, 4096]`` (after ReLU), the
    ``spatial`` ones ``[N, 1024]``, or the logits ``[N, num_classes]`` if ``head``."""
    x = b.conv(x, "features.0", 3, 64, 11, stride=4, pad=2, bias=True, relu=True)
    x = b.maxpool(x, 3, 2)
    x = b.conv(x, "features.3", 64, 192, 5, pad=2, bias=True, relu=True)
    x = b.maxpool(x, 3, 2)
    x = b.conv(x, "features.6", 192, 384, 3, pad=1, bias=True, relu=True)
    x = b.conv(x, "features.8", 384, 256, 3, pad=1, bias=True, relu=True)
    x = b.conv(x, "features.10", 256, 256, 3, pad=1, bias=True, relu=True)
    x = b.maxpool(x, 3, 2)
    if features == "spatial":
        if head:
            raise ValueError("the classifier head follows the pooled features only")
        return b.flatten(b.adaptive_avg_pool(x, SPATIAL_GRID, SPATIAL_GRID))
    x = b.adaptive_avg_pool(x, 6, 6)
    x = b.flatten(x)
    x = b.linear(x, "classifier.1", 256 * 6 * 6, 4096, relu=True)
    x = b.linear(x, "classifier.4", 4096, FEATURE_DIM, relu=True)
    if head:
        x = b.linear(x, "classifier.6", FEATURE_DIM, num_classes)
    return x
