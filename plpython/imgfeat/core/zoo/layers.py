"""Building blocks shared by the architectures: one topology, several backends.

Each architecture (:mod:`.resnet`, :mod:`.alexnet`, :mod:`.efficientnet`) is written once, as a function that calls
the methods of a :class:`Backend`. The backends interpret those calls differently:

* :class:`ShapeBackend` records every parameter's torchvision name and shape (what a state
  dict must hold);
* :class:`NumpyBackend` evaluates the network in numpy (float32, NCHW), BatchNorm in eval
  mode; :class:`.synthetic` subclasses it to *set* the BatchNorm running statistics from the
  activations it sees;
* :class:`OnnxBackend` emits ONNX nodes and initializers into a :class:`GraphBuilder`.
  BatchNorm (eval mode) is folded into the preceding convolution at build time:
  ``w' = w * gamma / sqrt(var + eps)``, ``b' = beta - mean * gamma / sqrt(var + eps)``
  (computed in float64, stored float32), so the graph has no BatchNormalization nodes.

Conventions follow torch: convolution weights are ``[out, in / groups, kh, kw]``, linear
weights ``[out, in]`` (``y = x @ W.T + b``), BatchNorm ``eps = 1e-5`` (``torch.nn.BatchNorm2d``'s
default, which torchvision's ResNets use) unless a layer says otherwise (EfficientNet: 1e-3).
Padding is one number for all four sides, or ``(top, left, bottom, right)`` for TF's "SAME"
padding, which puts the odd pixel at the bottom and right.
"""

from __future__ import annotations

import abc

import math
from dataclasses import dataclass
from typing import Any, Union
from collections.abc import Mapping, MutableMapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BN_EPS = 1e-5
"""BatchNorm epsilon: ``torch.nn.BatchNorm2d(eps=1e-05)``, used by torchvision's ResNets."""

OPSET = 17
"""ONNX opset of the models built here (default domain)."""

IR_VERSION = 8
"""ONNX IR version of the models built here: the lowest that allows opset 17, so older
onnxruntime releases (>= 1.12) on database servers can load them."""

RELU6_MAX = 6.0
"""ReLU6 clips at 6 (``torch.nn.ReLU6``, ``tf.nn.relu6``; MobileNet and EfficientNet-Lite)."""

Pad = Union[int, tuple[int, int, int, int]]
"""Convolution padding: the same on all sides, or ``(top, left, bottom, right)``."""


def pads4(pad: Pad) -> tuple[int, int, int, int]:
    """``pad`` as ``(top, left, bottom, right)``."""
    return (pad, pad, pad, pad) if isinstance(pad, int) else tuple(pad)  # type: ignore[return-value]


BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var")
"""The BatchNorm entries a state dict must hold; ``num_batches_tracked`` is optional."""


# ---------------------------------------------------------------------------------------
# Backend protocol (documented base class; methods are overridden by each backend)
# ---------------------------------------------------------------------------------------


class Backend(abc.ABC):
    """The operations the architectures are written in. ``x`` values are backend-specific."""

    @abc.abstractmethod
    def conv(
        self, x: Any, name: str, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1,
        pad: Pad = 0, bias: bool, bn: str | None = None, relu: bool = False, groups: int = 1,
        relu6: bool = False, bn_eps: float = BN_EPS,
    ) -> Any:
        """``Conv2d(in_ch, out_ch, kernel, stride, pad, bias, groups)`` named ``name``
        (parameters ``name.weight`` ``[out, in / groups, k, k]`` and ``name.bias`` ``[out]`` if
        ``bias``; ``groups == in_ch == out_ch`` is a depthwise convolution), then the
        ``BatchNorm2d`` named ``bn`` (eval mode, epsilon ``bn_eps``) if given, then ReLU if
        ``relu`` or ReLU6 (``min(max(x, 0), 6)``) if ``relu6``."""
        ...

    @abc.abstractmethod
    def maxpool(self, x: Any, kernel: int, stride: int, pad: int = 0) -> Any:
        """``MaxPool2d(kernel, stride, pad)`` (floor mode, padding never selected)."""
        ...

    @abc.abstractmethod
    def add_relu(self, a: Any, b: Any) -> Any:
        """``relu(a + b)``: the end of a residual block."""
        ...

    @abc.abstractmethod
    def add(self, a: Any, b: Any) -> Any:
        """``a + b``: an identity skip without activation (inverted residual blocks)."""
        ...

    @abc.abstractmethod
    def global_avg_pool(self, x: Any) -> Any:
        """``AdaptiveAvgPool2d(1)`` then ``flatten(1)``: ``[N, C, H, W] -> [N, C]``."""
        ...

    @abc.abstractmethod
    def adaptive_avg_pool(self, x: Any, out_h: int, out_w: int) -> Any:
        """``AdaptiveAvgPool2d((out_h, out_w))`` with torch's bin edges
        ``floor(i * in / out) .. ceil((i + 1) * in / out)``."""
        ...

    @abc.abstractmethod
    def flatten(self, x: Any) -> Any:
        """``torch.flatten(x, 1)``: ``[N, C, H, W] -> [N, C*H*W]``."""
        ...

    @abc.abstractmethod
    def linear(self, x: Any, name: str, in_f: int, out_f: int, *, relu: bool = False) -> Any:
        """``Linear(in_f, out_f)`` named ``name`` (``name.weight`` ``[out, in]``,
        ``name.bias`` ``[out]``), then ReLU if ``relu``."""
        ...


FEATURE_LAYERS = ("pooled", "spatial")
"""Where a built-in network's features are taken (``imgfeat.models.feature_layer``):

* ``pooled``: the network's own feature layer — the global average pool of the last feature
  map (ResNets, EfficientNet-Lite0), fc7 after its ReLU (AlexNet). MicrosoftML's
  ``featurizeImage`` parity; the default.
* ``spatial``: the last feature map averaged to a :data:`SPATIAL_GRID` x :data:`SPATIAL_GRID`
  grid (torch's ``AdaptiveAvgPool2d((2, 2))`` bins) and flattened channel-major
  (``feature[c * 4 + row * 2 + col]``): 4x the channels. It keeps where things are in the
  image (left half vs right half), which the global pool discards.
"""

SPATIAL_GRID = 2
"""Rows and columns of the ``spatial`` feature layer's grid."""


def feature_head(
    b: "Backend", x: Any, *, features: str, head: bool, fc: str, in_features: int, num_classes: int,
) -> Any:
    """The end of a convolutional network from its last feature map ``x`` ``[N, C, H, W]``:
    ``pooled`` -> global average pool ``[N, C]`` (then the classifier ``fc`` if ``head``);
    ``spatial`` -> 2x2 adaptive average pool, flattened ``[N, 4C]`` (no head)."""
    if features not in FEATURE_LAYERS:
        raise ValueError(f"feature layer must be one of {FEATURE_LAYERS}, not {features!r}")
    if features == "spatial":
        if head:
            raise ValueError("the classifier head follows the pooled features only")
        return b.flatten(b.adaptive_avg_pool(x, SPATIAL_GRID, SPATIAL_GRID))
    x = b.global_avg_pool(x)
    if head:
        x = b.linear(x, fc, in_features, num_classes)
    return x


def adaptive_bins(size_in: int, size_out: int) -> list[tuple[int, int]]:
    """torch's AdaptiveAvgPool bin edges ``[start, end)`` along one axis."""
    return [
        (math.floor(i * size_in / size_out), math.ceil((i + 1) * size_in / size_out))
        for i in range(size_out)
    ]


# ---------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------


class ShapeBackend(Backend):
    """Records ``{parameter name: shape}`` in torchvision's registration order.

    ``shapes`` holds trainable parameters and BatchNorm running statistics;
    ``num_batches_tracked`` entries (shape ``()``, int64) are listed in ``buffers``.
    """

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.buffers: list[str] = []

    def conv(self, x: Any, name: str, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1,
             pad: Pad = 0, bias: bool, bn: str | None = None, relu: bool = False, groups: int = 1,
             relu6: bool = False, bn_eps: float = BN_EPS) -> Any:
        self.shapes[f"{name}.weight"] = (out_ch, in_ch // groups, kernel, kernel)
        if bias:
            self.shapes[f"{name}.bias"] = (out_ch,)
        if bn is not None:
            for suffix in BN_SUFFIXES:
                self.shapes[f"{bn}.{suffix}"] = (out_ch,)
            self.buffers.append(f"{bn}.num_batches_tracked")
        return None

    def maxpool(self, x: Any, kernel: int, stride: int, pad: int = 0) -> Any:
        return None

    def add_relu(self, a: Any, b: Any) -> Any:
        return None

    def add(self, a: Any, b: Any) -> Any:
        return None

    def global_avg_pool(self, x: Any) -> Any:
        return None

    def adaptive_avg_pool(self, x: Any, out_h: int, out_w: int) -> Any:
        return None

    def flatten(self, x: Any) -> Any:
        return None

    def linear(self, x: Any, name: str, in_f: int, out_f: int, *, relu: bool = False) -> Any:
        self.shapes[f"{name}.weight"] = (out_f, in_f)
        self.shapes[f"{name}.bias"] = (out_f,)
        return None


# ---------------------------------------------------------------------------------------
# numpy evaluation
# ---------------------------------------------------------------------------------------


def conv2d_np(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, pad: Pad,
              groups: int = 1) -> np.ndarray:
    """2-D cross-correlation as torch computes it. ``x`` ``[N, C, H, W]``, ``w``
    ``[O, C / groups, k, k]`` -> ``[N, O, H', W']``, float32 (im2col + one matrix product per
    group; depthwise convolutions as one weighted sum over the windows)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    top, left, bottom, right = pads4(pad)
    if top or left or bottom or right:
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    if groups != 1:
        if groups == c == o:  # depthwise
            win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
            out = np.einsum("nchwij,cij->nchw", win, w[:, 0], optimize=True)
        else:
            cg, og = c // groups, o // groups
            out = np.concatenate([
                conv2d_np(x[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og], None, stride, 0) for g in range(groups)
            ], axis=1)
        if b is not None:
            out = out + b[None, :, None, None]
        return np.ascontiguousarray(out, dtype=np.float32)
    if kh == 1 and kw == 1:
        cols = x[:, :, ::stride, ::stride]
        ho, wo = cols.shape[2], cols.shape[3]
        out = np.einsum("nchw,oc->nohw", cols, w[:, :, 0, 0], optimize=True)
    else:
        win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
        ho, wo = win.shape[2], win.shape[3]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)
        out = (cols @ w.reshape(o, -1).T).reshape(n, ho, wo, o).transpose(0, 3, 1, 2)
    if b is not None:
        out = out + b[None, :, None, None]
    return np.ascontiguousarray(out, dtype=np.float32)


def maxpool_np(x: np.ndarray, kernel: int, stride: int, pad: int) -> np.ndarray:
    """``MaxPool2d(kernel, stride, pad)`` on ``[N, C, H, W]`` (padding is ``-inf``)."""
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(2, 3))
    return np.ascontiguousarray(win[:, :, ::stride, ::stride].max(axis=(4, 5)), dtype=np.float32)


class NumpyBackend(Backend):
    """Evaluates a network on ``[N, C, H, W]`` float32 arrays with the weights of ``state``."""

    def __init__(self, state: Mapping[str, np.ndarray]) -> None:
        self.state = state

    def _p(self, key: str) -> np.ndarray:
        return np.asarray(self.state[key], dtype=np.float32)

    def batchnorm(self, y: np.ndarray, bn: str, eps: float = BN_EPS) -> np.ndarray:
        """Eval-mode BatchNorm2d ``bn`` (epsilon ``eps``) applied to the conv output ``y``."""
        scale = self._p(f"{bn}.weight") / np.sqrt(self._p(f"{bn}.running_var") + np.float32(eps))
        shift = self._p(f"{bn}.bias") - self._p(f"{bn}.running_mean") * scale
        return y * scale[None, :, None, None] + shift[None, :, None, None]

    def conv(self, x: np.ndarray, name: str, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1,
             pad: Pad = 0, bias: bool, bn: str | None = None, relu: bool = False, groups: int = 1,
             relu6: bool = False, bn_eps: float = BN_EPS) -> np.ndarray:
        y = conv2d_np(x, self._p(f"{name}.weight"), self._p(f"{name}.bias") if bias else None, stride, pad, groups)
        if bn is not None:
            y = self.batchnorm(y, bn, bn_eps)
        if relu6:
            return np.clip(y, 0, RELU6_MAX).astype(np.float32, copy=False)
        return np.maximum(y, 0, dtype=np.float32) if relu else y.astype(np.float32, copy=False)

    def maxpool(self, x: np.ndarray, kernel: int, stride: int, pad: int = 0) -> np.ndarray:
        return maxpool_np(x, kernel, stride, pad)

    def add_relu(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.maximum(a + b, 0, dtype=np.float32)

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a + b).astype(np.float32, copy=False)

    def global_avg_pool(self, x: np.ndarray) -> np.ndarray:
        return x.mean(axis=(2, 3), dtype=np.float32)

    def adaptive_avg_pool(self, x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
        if x.shape[2:] == (out_h, out_w):
            return x
        rows = adaptive_bins(x.shape[2], out_h)
        cols = adaptive_bins(x.shape[3], out_w)
        out = np.empty(x.shape[:2] + (out_h, out_w), dtype=np.float32)
        for i, (r0, r1) in enumerate(rows):
            for j, (c0, c1) in enumerate(cols):
                out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
        return out

    def flatten(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], -1)

    def linear(self, x: np.ndarray, name: str, in_f: int, out_f: int, *, relu: bool = False) -> np.ndarray:
        y = x @ self._p(f"{name}.weight").T + self._p(f"{name}.bias")
        return np.maximum(y, 0, dtype=np.float32) if relu else y.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------


def fold_batchnorm(
    weight: np.ndarray, bias: np.ndarray | None, gamma: np.ndarray, beta: np.ndarray,
    mean: np.ndarray, var: np.ndarray, eps: float = BN_EPS,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold an eval-mode BatchNorm into the convolution before it.

    ``weight`` ``[O, ...]``, the others ``[O]``. Returns float32 ``(weight', bias')`` with
    ``conv'(x) == bn(conv(x))``: ``weight' = weight * s``, ``bias' = (bias - mean) * s + beta``,
    ``s = gamma / sqrt(var + eps)``; arithmetic in float64.
    """
    s = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    w = np.asarray(weight, np.float64) * s.reshape((-1,) + (1,) * (weight.ndim - 1))
    b0 = np.zeros_like(s) if bias is None else np.asarray(bias, np.float64)
    b = (b0 - np.asarray(mean, np.float64)) * s + np.asarray(beta, np.float64)
    return w.astype(np.float32), b.astype(np.float32)


class GraphBuilder:
    """Accumulates ONNX nodes and initializers with unique names; :meth:`model` assembles them."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used: set[str] = set()

    def unique(self, base: str) -> str:
        """``base``, or ``base_1``, ``base_2``... if taken."""
        name, i = base, 0
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def constant(self, name: str, array: np.ndarray) -> str:
        """Add ``array`` as an initializer; returns its (unique) name."""
        name = self.unique(name)
        array = np.asarray(array)
        if not array.flags.c_contiguous:  # (np.ascontiguousarray would make a 0-d array 1-d)
            array = np.ascontiguousarray(array)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        """Add a one-output node ``op``; returns the output tensor's name (``name`` made unique)."""
        out = self.unique(name)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def model(
        self, input_name: str, input_shape: list[int | str], output: str, output_name: str,
        output_shape: list[int | str], doc: str = "",
    ) -> onnx.ModelProto:
        """Assemble and check the model: float32 input ``input_name`` of ``input_shape``
        (strings are symbolic dims), the tensor ``output`` exposed as ``output_name``."""
        if output != output_name:
            self.nodes.append(helper.make_node("Identity", [output], [output_name], name=output_name))
        graph = helper.make_graph(
            self.nodes, "imgfeat",
            [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, output_shape)],
            initializer=self.initializers, doc_string=doc,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="imgfeat",
            ir_version=IR_VERSION,
        )
        onnx.checker.check_model(model)
        return model


@dataclass(frozen=True)
class OnnxValue:
    """A tensor in the graph being built: its name and static ``[C, H, W]`` (``H = W = 0``
    after flattening; ``C`` is then the feature count)."""

    name: str
    c: int
    h: int
    w: int


class OnnxBackend(Backend):
    """Emits ONNX nodes for the network with the weights of ``state`` (BN folded)."""

    def __init__(self, state: Mapping[str, np.ndarray], builder: GraphBuilder | None = None) -> None:
        self.state = state
        self.g = builder or GraphBuilder()

    def conv(self, x: OnnxValue, name: str, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1,
             pad: Pad = 0, bias: bool, bn: str | None = None, relu: bool = False, groups: int = 1,
             relu6: bool = False, bn_eps: float = BN_EPS) -> OnnxValue:
        w = np.asarray(self.state[f"{name}.weight"], np.float32)
        b = np.asarray(self.state[f"{name}.bias"], np.float32) if bias else None
        if bn is not None:
            gamma, beta, mean, var = (np.asarray(self.state[f"{bn}.{s}"]) for s in BN_SUFFIXES)
            w, b = fold_batchnorm(w, b, gamma, beta, mean, var, eps=bn_eps)
        inputs = [x.name, self.g.constant(f"{name}.weight", w)]
        if b is not None:
            inputs.append(self.g.constant(f"{name}.bias", b))
        top, left, bottom, right = pads4(pad)
        attrs: dict[str, Any] = {"group": groups} if groups != 1 else {}
        y = self.g.node(
            "Conv", inputs, name, kernel_shape=[kernel, kernel], strides=[stride, stride],
            pads=[top, left, bottom, right], **attrs,
        )
        if relu6:
            lo = self.g.constant(f"{name}.relu6.min", np.array(0.0, np.float32))
            hi = self.g.constant(f"{name}.relu6.max", np.array(RELU6_MAX, np.float32))
            y = self.g.node("Clip", [y, lo, hi], f"{name}.relu6")
        elif relu:
            y = self.g.node("Relu", [y], f"{name}.relu")
        h = (x.h + top + bottom - kernel) // stride + 1
        wd = (x.w + left + right - kernel) // stride + 1
        return OnnxValue(y, out_ch, h, wd)

    def maxpool(self, x: OnnxValue, kernel: int, stride: int, pad: int = 0) -> OnnxValue:
        y = self.g.node("MaxPool", [x.name], "maxpool", kernel_shape=[kernel, kernel],
                        strides=[stride, stride], pads=[pad] * 4)
        return OnnxValue(y, x.c, (x.h + 2 * pad - kernel) // stride + 1, (x.w + 2 * pad - kernel) // stride + 1)

    def add_relu(self, a: OnnxValue, b: OnnxValue) -> OnnxValue:
        s = self.g.node("Add", [a.name, b.name], "add")
        return OnnxValue(self.g.node("Relu", [s], "add.relu"), a.c, a.h, a.w)

    def add(self, a: OnnxValue, b: OnnxValue) -> OnnxValue:
        return OnnxValue(self.g.node("Add", [a.name, b.name], "add"), a.c, a.h, a.w)

    def global_avg_pool(self, x: OnnxValue) -> OnnxValue:
        p = self.g.node("GlobalAveragePool", [x.name], "avgpool")
        return OnnxValue(self.g.node("Flatten", [p], "flatten", axis=1), x.c, 0, 0)

    def adaptive_avg_pool(self, x: OnnxValue, out_h: int, out_w: int) -> OnnxValue:
        if (x.h, x.w) == (out_h, out_w):
            return x
        if x.h % out_h == 0 and x.w % out_w == 0:
            kh, kw = x.h // out_h, x.w // out_w
            y = self.g.node("AveragePool", [x.name], "avgpool", kernel_shape=[kh, kw], strides=[kh, kw])
            return OnnxValue(y, x.c, out_h, out_w)
        # General case: one ReduceMean per bin, concatenated (static sizes only).
        axes = self.g.constant("avgpool.axes", np.array([2, 3], np.int64))
        rows = []
        for i, (r0, r1) in enumerate(adaptive_bins(x.h, out_h)):
            cells = []
            for j, (c0, c1) in enumerate(adaptive_bins(x.w, out_w)):
                starts = self.g.constant("avgpool.starts", np.array([r0, c0], np.int64))
                ends = self.g.constant("avgpool.ends", np.array([r1, c1], np.int64))
                sl = self.g.node("Slice", [x.name, starts, ends, axes], f"avgpool.slice{i}_{j}")
                cells.append(self.g.node("ReduceMean", [sl], f"avgpool.mean{i}_{j}", axes=[2, 3], keepdims=1))
            rows.append(self.g.node("Concat", cells, f"avgpool.row{i}", axis=3))
        y = self.g.node("Concat", rows, "avgpool", axis=2)
        return OnnxValue(y, x.c, out_h, out_w)

    def flatten(self, x: OnnxValue) -> OnnxValue:
        y = self.g.node("Flatten", [x.name], "flatten", axis=1)
        return OnnxValue(y, x.c * max(x.h, 1) * max(x.w, 1), 0, 0)

    def linear(self, x: OnnxValue, name: str, in_f: int, out_f: int, *, relu: bool = False) -> OnnxValue:
        w = self.g.constant(f"{name}.weight", np.asarray(self.state[f"{name}.weight"], np.float32))
        b = self.g.constant(f"{name}.bias", np.asarray(self.state[f"{name}.bias"], np.float32))
        y = self.g.node("Gemm", [x.name, w, b], name, transB=1)
        if relu:
            y = self.g.node("Relu", [y], f"{name}.relu")
        return OnnxValue(y, out_f, 0, 0)


def set_batchnorm_from_batch(state: MutableMapping[str, np.ndarray], bn: str, y: np.ndarray) -> None:
    """Set ``bn``'s running mean/var to the per-channel statistics of the conv output ``y``
    ``[N, C, H, W]`` (what a BatchNorm would converge to on this data)."""
    y64 = y.astype(np.float64)
    state[f"{bn}.running_mean"] = y64.mean(axis=(0, 2, 3)).astype(np.float32)
    state[f"{bn}.running_var"] = y64.var(axis=(0, 2, 3)).astype(np.float32)
