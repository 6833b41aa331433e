"""EfficientNet-Lite0, written against :class:`.layers.Backend`.

EfficientNet (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019, arXiv:1905.11946) in its Lite form (TensorFlow's
``efficientnet/lite/README.md``, 2020): the B0 block table without squeeze-and-excitation,
ReLU6 instead of swish, the stem (32) and head (1280) not scaled. Lite0 has width and depth
multipliers 1.0 and a 224x224 input. Parameter names follow lukemelas' EfficientNet-PyTorch
(``efficientnet_pytorch``), which the published PyTorch conversion of the TF checkpoint uses:

* stem: ``_conv_stem`` (3x3, stride 2, 32 filters, no bias) -> ``_bn0`` -> ReLU6;
* ``_blocks.0`` .. ``_blocks.15``, MBConv (inverted residual) blocks: ``_expand_conv`` 1x1
  (when the expansion ratio is not 1) -> ``_bn0`` -> ReLU6 -> ``_depthwise_conv`` kxk
  (stride s, one group per channel) -> ``_bn1`` -> ReLU6 -> ``_project_conv`` 1x1 -> ``_bn2``;
  plus the block's input when the stride is 1 and the widths agree (no activation after it);
* head: ``_conv_head`` 1x1 to 1280 -> ``_bn1`` -> ReLU6 -> global average pool -> (dropout 0.2,
  the identity at inference) -> ``_fc`` Linear(1280, 1000).

BatchNorm epsilon 1e-3 (TF's ``batch_norm_epsilon``). Every convolution pads TF-"SAME" for the
fixed input size: total padding ``max((ceil(n / s) - 1) * s + k - n, 0)``, half (rounded down)
before and the rest after, so a strided convolution puts its odd pixel at the bottom and right
(lukemelas' ``Conv2dStaticSamePadding``).
"""

from __future__ import annotations

import math
from typing import Any

from .layers import Backend, feature_head

BN_EPS = 1e-3
"""TF EfficientNet's BatchNorm epsilon (``batch_norm_epsilon=1e-3``)."""

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
"""EfficientNet-Lite fixes the stem and head widths (``fix_head_stem``); Lite0 has them anyway."""

FEATURE_DIM = HEAD_CHANNELS

BLOCKS: tuple[tuple[int, int, int, int, int], ...] = (
    # expansion ratio, kernel, stride of the first block, output channels, blocks
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
"""EfficientNet-B0's stages (Tan & Le 2019, Table 1; TF ``efficientnet_builder._DEFAULT_BLOCKS_ARGS``)."""


def same_padding(size: int, kernel: int, stride: int) -> tuple[tuple[int, int, int, int], int]:
    """TF "SAME" padding ``(top, left, bottom, right)`` of a square ``size`` input, and the output size."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before, after = total // 2, total - total // 2
    return (before, before, after, after), out


def efficientnet_lite0(
    b: Backend, x: Any, *, head: bool, num_classes: int = 1000, features: str = "pooled", size: int = 224,
) -> Any:
    """Run EfficientNet-Lite0 on ``x`` (``[N, 3, size, size]``) with backend ``b``.

    Returns the pooled features ``[N, 1280]``, the ``spatial`` ones (the head's 1280x7x7 map
    averaged to 2x2, flattened channel-major: ``[N, 5120]``), or the logits
    ``[N, num_classes]`` if ``head``.
    """
    pad, size = same_padding(size, 3, 2)
    x = b.conv(x, "_conv_stem", 3, STEM_CHANNELS, 3, stride=2, pad=pad, bias=False, bn="_bn0",
               bn_eps=BN_EPS, relu6=True)
    cin, i = STEM_CHANNELS, 0
    for expand, kernel, first_stride, cout, repeats in BLOCKS:
        for r in range(repeats):
            stride = first_stride if r == 0 else 1
            p = f"_blocks.{i}"
            mid = cin * expand
            h = x
            if expand != 1:
                h = b.conv(h, f"{p}._expand_conv", cin, mid, 1, bias=False, bn=f"{p}._bn0", bn_eps=BN_EPS, relu6=True)
            pad, out_size = same_padding(size, kernel, stride)
            h = b.conv(h, f"{p}._depthwise_conv", mid, mid, kernel, stride=stride, pad=pad, groups=mid,
                       bias=False, bn=f"{p}._bn1", bn_eps=BN_EPS, relu6=True)
            h = b.conv(h, f"{p}._project_conv", mid, cout, 1, bias=False, bn=f"{p}._bn2", bn_eps=BN_EPS)
            if stride == 1 and cin == cout:
                h = b.add(h, x)
            x, cin, size, i = h, cout, out_size, i + 1
    x = b.conv(x, "_conv_head", cin, HEAD_CHANNELS, 1, bias=False, bn="_bn1", bn_eps=BN_EPS, relu6=True)
    return feature_head(b, x, features=features, head=head, fc="_fc", in_features=HEAD_CHANNELS, num_classes=num_classes)
