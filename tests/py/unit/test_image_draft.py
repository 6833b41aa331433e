"""Reduced-size (draft) JPEG decoding stays within DRAFT_TOLERANCE of the full decode."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import imagefactory as fac
from imgfeat.core import image as im
from imgfeat.core.spec import caffe_bgr, torchvision_imagenet


def noisy_photo(width: int, height: int, sigma: float) -> Image.Image:
    base = np.asarray(fac.photo_like(width, height)).astype(np.float64)
    noise = np.random.default_rng(1).normal(0, sigma, base.shape)
    return Image.fromarray(np.clip(np.rint(base + noise), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("sigma, bound", [(0, 0.01), (30, im.DRAFT_TOLERANCE)])
def test_draft_within_tolerance_of_full_decode(sigma: float, bound: float) -> None:
    img = fac.photo_like(2000, 1500) if sigma == 0 else noisy_photo(2000, 1500, sigma)
    data = fac.encode(img, "JPEG", quality=90)
    spec = torchvision_imagenet()
    assert im.decode(data, draft_size=im.draft_size_for(spec, 2000, 1500)).size == (500, 375)
    drafted = im.image_to_tensor(data, spec)
    full = im.image_to_tensor(data, spec, draft=False)
    diff = np.abs(drafted - full)
    assert 0 < diff.mean() < bound  # draft really happened, and stays close
    batch, good, _ = im.images_to_batch([data], spec)
    np.testing.assert_array_equal(batch[0], drafted)


def test_draft_with_exif_rotation_matches_full_decode() -> None:
    data = fac.with_exif_orientation(fac.photo_like(1600, 1200, seed=4), 6, quality=90)
    spec = caffe_bgr()
    drafted = im.image_to_tensor(data, spec)
    full = im.image_to_tensor(data, spec, draft=False)
    # 0..255 units here: the bound is DRAFT_TOLERANCE in ImageNet units times ~255 * 0.226
    assert 0 < np.abs(drafted - full).mean() < im.DRAFT_TOLERANCE * 255 * 0.226


def test_small_jpeg_is_not_drafted() -> None:
    data = fac.encode(fac.photo_like(640, 480), "JPEG", quality=90)  # 640 // 341 = 1: full size
    spec = torchvision_imagenet()
    np.testing.assert_array_equal(im.image_to_tensor(data, spec), im.image_to_tensor(data, spec, draft=False))
