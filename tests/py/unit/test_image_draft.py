"""Reduced-size (draft) JPEG decoding stays within DRAFT_TOLERANCE of the full decode, with the
geometry of the full image (torchvision's resize target from the original size), at odd sizes."""

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


@pytest.mark.parametrize("size", [(2000, 1500), (2707, 1800), (1800, 2707),
                                  pytest.param((3001, 2001), marks=pytest.mark.slow),
                                  pytest.param((4001, 3001), marks=pytest.mark.slow)])
@pytest.mark.parametrize("sigma, bound", [(0, 0.004), (30, im.DRAFT_TOLERANCE)])
def test_draft_within_tolerance_of_full_decode(size: tuple[int, int], sigma: float, bound: float) -> None:
    w, h = size
    img = fac.photo_like(w, h) if sigma == 0 else noisy_photo(w, h, sigma)
    data = fac.encode(img, "JPEG", quality=90)
    spec = torchvision_imagenet()
    drafted = im.image_to_tensor(data, spec)
    full = im.image_to_tensor(data, spec, draft=False)
    diff = np.abs(drafted - full)
    assert 0 < diff.mean() < bound  # draft really happened, and stays close
    batch, good, _ = im.images_to_batch([data], spec)
    np.testing.assert_array_equal(batch[0], drafted)


def test_resize_target_comes_from_the_original_size() -> None:
    """2707x1800 drafts at 1/2 to 1354x900 (libjpeg rounds 1353.5 up). torchvision resizes the
    full image to int(256 * 2707 / 1800) = 384 x 256; from the drafted size it would be 385."""
    data = fac.encode(fac.photo_like(2707, 1800), "JPEG", quality=90)
    spec = torchvision_imagenet()
    img = im._decode_for(data, spec, im.DEFAULT_MAX_PIXELS)
    assert img.size == (1354, 900)
    assert img.info[im.ORIGINAL_SIZE] == (2707, 1800)
    assert img.info[im.CONTENT_BOX] == (0.0, 0.0, 1353.5, 900.0)
    assert im.draft_size_for(spec, 2707, 1800) == (384, 256)
    assert im.draft_size_for(spec, 1354, 900) == (385, 256)  # what the drafted size alone would give
    full = im.image_to_tensor(data, spec, draft=False)
    drafted = im.preprocess(img, spec)
    img.info.pop(im.ORIGINAL_SIZE)
    img.info.pop(im.CONTENT_BOX)
    wrong_geometry = im.preprocess(img, spec)
    assert np.abs(drafted - full).mean() < 0.004 < np.abs(wrong_geometry - full).mean()


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_draft_with_exif_rotation_matches_full_decode(orientation: int) -> None:
    data = fac.with_exif_orientation(fac.photo_like(3001, 2001, seed=4), orientation, quality=90)
    spec = caffe_bgr()
    drafted = im.image_to_tensor(data, spec)
    full = im.image_to_tensor(data, spec, draft=False)
    # 0..255 units here: about 0.004 in ImageNet units times ~255 * 0.226
    assert 0 < np.abs(drafted - full).mean() < 0.004 * 255 * 0.226


@pytest.mark.parametrize("size", [(640, 480), (1353, 900), (1001, 667)])
def test_jpeg_under_twice_its_resize_is_not_drafted(size: tuple[int, int]) -> None:
    data = fac.encode(fac.photo_like(*size), "JPEG", quality=90)  # 1353x900 resizes to 384x256: < 2x
    spec = torchvision_imagenet()
    np.testing.assert_array_equal(im.image_to_tensor(data, spec), im.image_to_tensor(data, spec, draft=False))
