"""torchvision's ResNet-18/50/101 topology, written against :class:`.layers.Backend`.

Follows ``torchvision.models.resnet`` (He et al., "Deep Residual Learning for Image
Recognition", 2015) exactly, including parameter names:

* stem: ``conv1`` (7x7, stride 2, pad 3, no bias) -> ``bn1`` -> ReLU -> MaxPool(3, 2, 1);
* ``layer1..layer4`` of residual blocks, 64/128/256/512 base widths, strides 1/2/2/2;
* ``BasicBlock`` (resnet18): ``conv1`` 3x3 (stride) -> ``bn1`` -> ReLU -> ``conv2`` 3x3 ->
  ``bn2``; expansion 1;
* ``Bottleneck`` (resnet50/101), torchvision's "ResNet v1.5": ``conv1`` 1x1 -> ``bn1`` ->
  ReLU -> ``conv2`` 3x3 **with the stride** -> ``bn2`` -> ReLU -> ``conv3`` 1x1 -> ``bn3``;
  expansion 4 (the original paper and MXNet's v1 put the stride on ``conv1``);
* shortcut ``downsample.0`` (1x1 conv, stride, no bias) + ``downsample.1`` (BatchNorm) on the
  first block of a stage when the stride or width changes; block output ``relu(out + shortcut)``;
* head: global average pool -> ``fc`` (Linear(512 * expansion, 1000)).

The ``spatial`` feature layer averages ``layer4``'s 7x7 map to 2x2 instead (2048 or 8192 values).
"""

from __future__ import annotations

from typing import Any

from .layers import Backend, feature_head

LAYERS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}
"""Block type and blocks per stage, from torchvision's ``resnet18/50/101`` builders."""


def feature_dim(arch: str) -> int:
    """Width of the pooled features: 512 for BasicBlock nets, 2048 for Bottleneck nets."""
    return 512 * (1 if LAYERS[arch][0] == "basic" else 4)


def resnet(b: Backend, x: Any, arch: str, *, head: bool, num_classes: int = 1000, features: str = "pooled") -> Any:
    """Run ``arch`` on ``x`` with backend ``b``: pooled features ``[N, 512|2048]``, spatial ones
    ``[N, 2048|8192]`` (see :data:`.layers.FEATURE_LAYERS`), or the logits ``[N, num_classes]``
    if ``head``."""
    kind, counts = LAYERS[arch]
    expansion = 1 if kind == "basic" else 4
    x = b.conv(x, "conv1", 3, 64, 7, stride=2, pad=3, bias=False, bn="bn1", relu=True)
    x = b.maxpool(x, 3, 2, 1)
    inplanes = 64
    for stage, (blocks, planes) in enumerate(zip(counts, (64, 128, 256, 512), strict=True), start=1):
        for i in range(blocks):
            p = f"layer{stage}.{i}"
            stride = 2 if (i == 0 and stage > 1) else 1
            if kind == "basic":
                out = b.conv(x, f"{p}.conv1", inplanes, planes, 3, stride=stride, pad=1,
                             bias=False, bn=f"{p}.bn1", relu=True)
                out = b.conv(out, f"{p}.conv2", planes, planes, 3, pad=1, bias=False, bn=f"{p}.bn2")
            else:
                out = b.conv(x, f"{p}.conv1", inplanes, planes, 1, bias=False, bn=f"{p}.bn1", relu=True)
                out = b.conv(out, f"{p}.conv2", planes, planes, 3, stride=stride, pad=1,
                             bias=False, bn=f"{p}.bn2", relu=True)
                out = b.conv(out, f"{p}.conv3", planes, planes * expansion, 1, bias=False, bn=f"{p}.bn3")
            if i == 0 and (stride != 1 or inplanes != planes * expansion):
                shortcut = b.conv(x, f"{p}.downsample.0", inplanes, planes * expansion, 1,
                                  stride=stride, bias=False, bn=f"{p}.downsample.1")
            else:
                shortcut = x
            x = b.add_relu(out, shortcut)
            inplanes = planes * expansion
    return feature_head(b, x, features=features, head=head, fc="fc", in_features=inplanes, num_classes=num_classes)
