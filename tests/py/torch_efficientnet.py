"""EfficientNet-Lite0 written in torch, independently of imgfeat's builder: lukemelas'
EfficientNet-PyTorch structure and names (``Conv2dStaticSamePadding``: TF "SAME" padding
computed for the fixed input size, applied with ``F.pad`` before an unpadded convolution),
TF EfficientNet-Lite's changes (no squeeze-excitation, ReLU6, BatchNorm eps 1e-3), and
the B0 block table. Used by the tests to check imgfeat's ONNX model against torch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SameConv(nn.Conv2d):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, size: int = 224) -> None:
        super().__init__(cin, cout, k, stride, 0, groups=groups, bias=False)
        out = math.ceil(size / stride)
        pad = max((out - 1) * stride + k - size, 0)
        self.pad = (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)  # left, right, top, bottom
        self.out_size = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int, size: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = SameConv(cin, mid, 1, size=size)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3)
        self._depthwise_conv = SameConv(mid, mid, k, stride, groups=mid, size=size)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv = SameConv(mid, cout, 1, size=self._depthwise_conv.out_size)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3)
        self.skip = stride == 1 and cin == cout
        self.out_size = self._depthwise_conv.out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand != 1:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    TABLE = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
             (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        size, cin, blocks = self._conv_stem.out_size, 32, []
        for t, k, s, cout, n in self.TABLE:
            for r in range(n):
                block = MBConv(cin, cout, t, k, s if r == 0 else 1, size)
                blocks.append(block)
                size, cin = block.out_size, cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(320, 1280, 1, size=size)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)
        self._fc = nn.Linear(1280, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean((2, 3))

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.feature_map(x), 2), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))
