"""Deterministic synthetic weights for testing the builders end to end without downloads.

The weights are random but *sane*: features stay finite, non-zero and image-dependent through
all of resnet101's layers. They are not trained and classify nothing.

* Convolutions: He (Kaiming) normal. ResNets use torchvision's own init,
  ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``, std ``sqrt(2 / (out * k * k))``;
  AlexNet, which has no BatchNorm, uses fan-in, std ``sqrt(2 / (in * k * k))``, so that each
  ReLU layer keeps its input's scale (He et al. 2015, "Delving Deep into Rectifiers").
* Hidden linear layers (AlexNet fc6/fc7): He fan-in normal. Classifier heads (``fc``,
  ``classifier.6``): normal, std ``1 / sqrt(in)``. Biases: normal, std 0.01.
* BatchNorm affine: ``weight ~ U(0.5, 1.5)``, ``bias ~ N(0, 0.1)``; the running statistics
  are then *measured*: a batch of smooth random images (ImageNet-normalised scale: mean 0,
  std 1 per channel) is propagated through the network in numpy and each BatchNorm's
  ``running_mean``/``running_var`` set to the per-channel mean/variance of its input, before
  the batch continues through it in eval mode. Every BatchNorm output is therefore about
  ``gamma * N(0, 1) + beta`` on such images, as in a trained network.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .layers import BN_EPS, NumpyBackend, set_batchnorm_from_batch
from .state_dict import arch_spec, expected_shapes

CALIBRATION_BATCH = 4
"""Images propagated to measure the BatchNorm statistics."""


class CalibratingBackend(NumpyBackend):
    """A :class:`NumpyBackend` that sets each BatchNorm's running statistics from the batch
    it is evaluating, just before applying it."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        super().__init__(state)
        self.writable = state

    def batchnorm(self, y: np.ndarray, bn: str, eps: float = BN_EPS) -> np.ndarray:
        set_batchnorm_from_batch(self.writable, bn, y)
        return super().batchnorm(y, bn, eps)


def calibration_images(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """``n`` smooth random images ``[n, 3, height, width]`` float32, each channel of mean 0 and
    std 1 (the scale of ImageNet-normalised photos): coarse blobs, a gradient and fine noise."""
    cell = 16
    coarse = rng.standard_normal((n, 3, height // cell + 2, width // cell + 2), dtype=np.float32)
    img = np.repeat(np.repeat(coarse, cell, axis=2), cell, axis=3)[:, :, :height, :width]
    ramp = np.linspace(-1, 1, width, dtype=np.float32)[None, None, None, :]
    img = img + rng.uniform(-1, 1, (n, 3, 1, 1)).astype(np.float32) * ramp
    img = img + 0.3 * rng.standard_normal((n, 3, height, width), dtype=np.float32)
    img -= img.mean(axis=(2, 3), keepdims=True)
    img /= img.std(axis=(2, 3), keepdims=True)
    return np.ascontiguousarray(img, dtype=np.float32)


def _init(name: str, shape: tuple[int, ...], rng: np.random.Generator, he_fan_in: bool, head_prefix: str) -> np.ndarray:
    def normal(std: float) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    leaf = name.rsplit(".", 1)[1]
    if len(shape) == 4:  # conv weight [out, in, k, k]
        fan = shape[1] * shape[2] * shape[3] if he_fan_in else shape[0] * shape[2] * shape[3]
        return normal(np.sqrt(2.0 / fan))
    if len(shape) == 2:  # linear weight [out, in]
        return normal(1.0 / np.sqrt(shape[1]) if name.startswith(head_prefix) else np.sqrt(2.0 / shape[1]))
    if leaf == "running_mean":
        return np.zeros(shape, np.float32)
    if leaf == "running_var":
        return np.ones(shape, np.float32)
    return np.empty(0, np.float32)  # filled below by the caller (BN affine or bias)


def synthetic_state_dict(arch: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded synthetic weights for ``arch`` under torchvision's parameter names.

    Returns ``{name: array}`` in torchvision's order: float32 parameters and running
    statistics, and an int64 scalar ``num_batches_tracked`` per BatchNorm (as torch saves
    them), so the dict loads into a torchvision model with ``strict=True``. The same
    ``(arch, seed)`` gives the same values on the same machine (BLAS rounding may differ in
    the last bits of the measured BatchNorm statistics across machines).

    Raises:
        ModelError: unknown ``arch``.
    """
    spec = arch_spec(arch)
    rng = np.random.default_rng([seed, sum(map(ord, arch))])
    shapes = expected_shapes(arch, head=True)
    is_bn = {k.rsplit(".", 1)[0] for k in shapes if k.endswith(".running_var")}
    sd: dict[str, Any] = {}
    for name, shape in shapes.items():
        owner, leaf = name.rsplit(".", 1)
        if owner in is_bn and leaf == "weight":
            sd[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif owner in is_bn and leaf == "bias":
            sd[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        elif leaf == "bias":
            sd[name] = (0.01 * rng.standard_normal(shape)).astype(np.float32)
        else:
            sd[name] = _init(name, shape, rng, he_fan_in=(arch == "alexnet"), head_prefix=spec.head_prefix)
        if owner in is_bn and leaf == "running_var":
            sd[f"{owner}.num_batches_tracked"] = np.array(0, dtype=np.int64)
    if is_bn:
        images = calibration_images(rng, CALIBRATION_BATCH, spec.input_height, spec.input_width)
        spec.forward(CalibratingBackend(sd), images, head=False)
    return sd
