"""Preprocessing specifications: how an image becomes a model's NCHW float32 input.

A spec is stored as ``jsonb`` in ``imgfeat.models.preprocessing``. Every pixel value ``p``
(0..255 after decoding to 8-bit RGB) becomes ``(p / scale - mean[c]) / std[c]`` in the
channel order ``channel_order``; the tensor layout is always NCHW, dtype float32.

Constants and where they come from:

* ``IMAGENET_MEAN`` / ``IMAGENET_STD``: torchvision's ImageNet normalisation
  (https://pytorch.org/vision/stable/models.html, "transforms.Normalize(mean=[0.485, 0.456,
  0.406], std=[0.229, 0.224, 0.225])"), applied to pixels scaled to [0, 1] (``scale=255``).
* ``TF_LITE_MEAN`` / ``TF_LITE_STD``: TensorFlow EfficientNet-Lite's input normalisation
  ``(p - 127) / 128`` on 0..255 pixels (``efficientnet/lite/efficientnet_lite_builder.py``:
  ``MEAN_RGB = [127.0, 127.0, 127.0]``, ``STDDEV_RGB = [128.0, 128.0, 128.0]``).
* ``CAFFE_BGR_MEAN``: the BVLC Caffe ImageNet mean per channel in BGR order, in 0..255 units
  (``scale=1``, ``std=1``), as used by the ONNX Model Zoo's ``bvlcalexnet``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .errors import InvalidParameterError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN: tuple[float, float, float] = (104.0, 117.0, 123.0)
TF_LITE_MEAN: tuple[float, float, float] = (127.0, 127.0, 127.0)
TF_LITE_STD: tuple[float, float, float] = (128.0, 128.0, 128.0)

MAX_INPUT_SIDE = 2048
"""Largest model input side in pixels: a 3x2048x2048 float32 tensor is 48 MiB per image."""

RESIZE_MODES = ("isocrop", "isopad", "aniso")
"""Resize modes, after MicrosoftML's ``resizeImage``:

* ``isocrop``: scale so the shorter side is ``resize_size``, then center-crop to the input
  size (torchvision's ``Resize(resize_size)`` + ``CenterCrop(crop)``);
* ``isopad``: scale so the whole image fits inside the input size, keeping the aspect
  ratio, and pad the rest with ``pad_color``;
* ``aniso``: stretch to the input size, ignoring the aspect ratio.
"""


@dataclass(frozen=True)
class Preprocessing:
    """How to turn a decoded RGB image into the model input.

    Attributes:
        width, height: model input size in pixels (e.g. 224x224 for the ResNets).
        resize: one of :data:`RESIZE_MODES`; default ``isocrop``.
        resize_size: for ``isocrop``, the shorter side's length before cropping, in pixels
            (256 for torchvision's eval transform). ``None`` means crop from an image whose
            shorter side equals the crop size (no margin).
        interpolation: Pillow resampling filter name, ``bilinear`` (torchvision's default) or
            ``bicubic``, ``nearest``, ``lanczos``.
        channel_order: ``RGB`` or ``BGR``.
        scale: pixels are divided by this first (255 maps 0..255 to 0..1).
        mean, std: per channel, in ``channel_order``, applied after ``scale``.
        pad_color: RGB fill for ``isopad``, 0..255.
        background: RGB colour that transparent pixels are composited onto, 0..255.
    """

    width: int = 224
    height: int = 224
    resize: str = "isocrop"
    resize_size: int | None = 256
    interpolation: str = "bilinear"
    channel_order: str = "RGB"
    scale: float = 255.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pad_color: tuple[int, int, int] = (0, 0, 0)
    background: tuple[int, int, int] = (255, 255, 255)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise InvalidParameterError(
                f"unknown resize mode {self.resize!r}", hint=f"use one of {', '.join(RESIZE_MODES)}"
            )
        if self.channel_order not in ("RGB", "BGR"):
            raise InvalidParameterError(f"channel_order must be RGB or BGR, not {self.channel_order!r}")
        if not (1 <= self.width <= MAX_INPUT_SIDE and 1 <= self.height <= MAX_INPUT_SIDE):
            raise InvalidParameterError(
                f"input size must be between 1 and {MAX_INPUT_SIDE} pixels a side, not {self.width}x{self.height}"
            )
        if self.resize_size is not None and not 1 <= self.resize_size <= 2 * MAX_INPUT_SIDE:
            raise InvalidParameterError(
                f"resize_size must be between 1 and {2 * MAX_INPUT_SIDE} pixels, not {self.resize_size}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise InvalidParameterError("mean and std need three values each, std non-zero")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (self.scale, *self.mean, *self.std)):
            raise InvalidParameterError(
                f"scale, mean and std must be finite numbers, not scale={self.scale!r}, "
                f"mean={list(self.mean)!r}, std={list(self.std)!r}"
            )
        if self.scale <= 0:
            raise InvalidParameterError(f"scale must be positive (255 maps 0..255 to 0..1), not {self.scale!r}")
        for name in ("pad_color", "background"):
            color = getattr(self, name)
            if len(color) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color):
                raise InvalidParameterError(f"{name} must be three integers 0..255, not {list(color)!r}")

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "Preprocessing":
        """Build from the ``jsonb`` form; unknown keys raise :class:`InvalidParameterError`."""
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InvalidParameterError(
                f"unknown preprocessing keys: {', '.join(sorted(unknown))}",
                hint=f"known keys: {', '.join(sorted(known))}",
            )
        for key in ("mean", "std", "pad_color", "background"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        """The ``jsonb`` form (lists instead of tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def replace(self, **changes: Any) -> "Preprocessing":
        """A copy with some fields changed (e.g. a per-call ``resize`` mode)."""
        return Preprocessing.from_json({**self.to_json(), **changes})


def torchvision_imagenet(size: int = 224, resize_size: int = 256) -> Preprocessing:
    """torchvision's documented ImageNet eval transform: Resize(256), CenterCrop(224),
    ToTensor, Normalize(IMAGENET_MEAN, IMAGENET_STD)."""
    return Preprocessing(width=size, height=size, resize="isocrop", resize_size=resize_size)


def tf_efficientnet_lite(size: int = 224) -> Preprocessing:
    """TensorFlow EfficientNet-Lite's eval crop with its normalisation: the centre
    ``size / (size + 32)`` of the shorter side (``efficientnet/preprocessing.py``,
    ``CROP_PADDING = 32``; here as Resize(size + 32) + CenterCrop(size), the same crop) resized
    to ``size``, then ``(p - 127) / 128`` (:data:`TF_LITE_MEAN`, :data:`TF_LITE_STD`) on 0..255
    RGB. Resampling is bilinear, as for every other built-in network; TF resizes bicubic. Both
    give the same ImageNet classes on photos, but on small images enlarged 2x (the CMU faces,
    128x120) bicubic's overshoot moved the spatial features enough to cost the seed's task
    accuracy (0.981 against 0.994, AUC 0.962 against 1.000, measured on its test split)."""
    return Preprocessing(
        width=size, height=size, resize="isocrop", resize_size=size + 32, interpolation="bilinear",
        scale=1.0, mean=TF_LITE_MEAN, std=TF_LITE_STD,
    )


def caffe_bgr(size: int = 227, resize_size: int = 256) -> Preprocessing:
    """BVLC Caffe style: BGR, 0..255 pixels minus :data:`CAFFE_BGR_MEAN`, no std scaling."""
    return Preprocessing(
        width=size, height=size, resize="isocrop", resize_size=resize_size,
        channel_order="BGR", scale=1.0, mean=CAFFE_BGR_MEAN, std=(1.0, 1.0, 1.0),
    )
