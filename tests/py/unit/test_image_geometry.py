"""isocrop / isopad / aniso geometry, draft sizes, channel order, spec validation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import imagefactory as fac
from imgfeat.core import image as im
from imgfeat.core.errors import InvalidParameterError
from imgfeat.core.spec import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, torchvision_imagenet

MEAN = np.array(IMAGENET_MEAN, np.float32)[:, None]
STD = np.array(IMAGENET_STD, np.float32)[:, None]


def norm(rgb: tuple[int, int, int]) -> np.ndarray:
    """ImageNet-normalised colour, float32 [3, 1]."""
    return (np.array(rgb, np.float32)[:, None] / np.float32(255) - MEAN) / STD


def test_isopad_white_100x50_to_224() -> None:
    img = Image.new("RGB", (100, 50), (255, 255, 255))
    t = im.preprocess(img, torchvision_imagenet().replace(resize="isopad"))
    # fits as 224x112, centred: rows 56..167 are the image, the rest pad (black)
    assert t.shape == (3, 224, 224)
    np.testing.assert_allclose(t[:, 56:168, :].reshape(3, -1), np.broadcast_to(norm((255, 255, 255)), (3, 112 * 224)), atol=1e-6)
    np.testing.assert_allclose(t[:, :56, :].reshape(3, -1), np.broadcast_to(norm((0, 0, 0)), (3, 56 * 224)), atol=1e-6)
    np.testing.assert_allclose(t[:, 168:, :].reshape(3, -1), np.broadcast_to(norm((0, 0, 0)), (3, 56 * 224)), atol=1e-6)


def test_isopad_pad_colour_and_bgr_order() -> None:
    img = Image.new("RGB", (50, 100), (200, 100, 50))
    spec = Preprocessing(width=64, height=64, resize="isopad", channel_order="BGR", scale=1.0,
                         mean=(0, 0, 0), std=(1, 1, 1), pad_color=(10, 20, 30))
    t = im.preprocess(img, spec)
    # fits as 32x64: columns 16..47 image, the rest pad; channels B, G, R
    assert t[:, 5, 20].tolist() == [50, 100, 200]
    assert t[:, 5, 0].tolist() == [30, 20, 10]
    assert t[:, 5, 15].tolist() == [30, 20, 10] and t[:, 5, 16].tolist() == [50, 100, 200]
    assert t[:, 5, 47].tolist() == [50, 100, 200] and t[:, 5, 48].tolist() == [30, 20, 10]


def test_aniso_stretches_without_keeping_aspect() -> None:
    a = np.zeros((50, 100, 3), np.uint8)
    a[:, :50] = (255, 0, 0)
    a[:, 50:] = (0, 0, 255)
    t = im.preprocess(Image.fromarray(a), torchvision_imagenet().replace(resize="aniso"))
    assert t.shape == (3, 224, 224)
    np.testing.assert_allclose(t[:, :, :100].reshape(3, -1), np.broadcast_to(norm((255, 0, 0)), (3, 224 * 100)), atol=1e-6)
    np.testing.assert_allclose(t[:, :, 124:].reshape(3, -1), np.broadcast_to(norm((0, 0, 255)), (3, 224 * 100)), atol=1e-6)


def test_isocrop_without_resize_size_covers_the_crop() -> None:
    # 100x50, resize_size None: shorter side -> 224 (448x224), centre crop keeps columns 112..335
    a = np.zeros((50, 100, 3), np.uint8)
    a[:, :20] = (255, 0, 0)  # left fifth (0..89 after resizing): cropped away entirely
    a[:, 20:] = (0, 255, 0)
    spec = torchvision_imagenet().replace(resize_size=None)
    assert im.draft_size_for(spec, 100, 50) == (448, 224)
    t = im.preprocess(Image.fromarray(a), spec)
    np.testing.assert_allclose(t.reshape(3, -1), np.broadcast_to(norm((0, 255, 0)), (3, 224 * 224)), atol=1e-6)


def test_isocrop_crop_larger_than_resized_pads_like_torchvision() -> None:
    # 100x200 portrait, Resize(128) -> 128x256, CenterCrop((100, 300)): width 300 > 128, so
    # torchvision pads (300 - 128) // 2 = 86 left, 86 right with 0; top = round((256 - 100) / 2) = 78.
    img = Image.new("RGB", (100, 200), (255, 255, 255))
    spec = Preprocessing(width=300, height=100, resize_size=128, scale=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    t = im.preprocess(img, spec)
    assert t.shape == (3, 100, 300)
    assert (t[:, :, :86] == 0).all() and (t[:, :, 214:] == 0).all()
    assert (t[:, :, 86:214] == 255).all()


def test_draft_sizes() -> None:
    resnet = torchvision_imagenet()
    assert im.draft_size_for(resnet, 2000, 1500) == (341, 256)
    assert im.draft_size_for(resnet, 1500, 2000) == (256, 341)
    assert im.draft_size_for(resnet, 128, 120) == (273, 256)
    assert im.draft_size_for(resnet.replace(resize="isopad"), 2000, 1500) == (224, 168)
    assert im.draft_size_for(resnet.replace(resize="aniso"), 2000, 1500) == (224, 224)
    with pytest.raises(InvalidParameterError):
        im.draft_size_for(resnet, 0, 10)


def test_extreme_aspect_uses_window_resize_close_to_full(monkeypatch: pytest.MonkeyPatch) -> None:
    img = fac.photo_like(300, 200, seed=9)
    spec = torchvision_imagenet()
    full = im.preprocess(img, spec)
    monkeypatch.setattr(im, "MAX_INTERMEDIATE_PIXELS", 0)  # force the crop-window path
    window = im.preprocess(img, spec)
    # same geometry: equal up to rounding of the resampling coefficients (a few 8-bit levels)
    assert np.abs(full - window).max() < 3 * (1 / 255) / min(IMAGENET_STD)
    assert np.abs(full - window).mean() < 0.005


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos"])
def test_interpolations_match_pillow(interpolation: str) -> None:
    img = fac.photo_like(90, 60, seed=10)
    spec = Preprocessing(width=30, height=20, resize="aniso", interpolation=interpolation,
                         scale=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    filt = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}[interpolation]
    expected = np.asarray(img.resize((30, 20), filt)).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(im.preprocess(img, spec), expected)


def test_unknown_interpolation_is_an_invalid_parameter() -> None:
    spec = torchvision_imagenet().replace(interpolation="spline")
    with pytest.raises(InvalidParameterError, match="unknown interpolation 'spline'"):
        im.preprocess(Image.new("RGB", (4, 4)), spec)


def test_preprocess_converts_non_rgb_input_with_spec_background() -> None:
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    spec = Preprocessing(width=4, height=4, resize="aniso", scale=1.0, mean=(0, 0, 0), std=(1, 1, 1),
                         background=(0, 128, 255))
    t = im.preprocess(rgba, spec)
    assert t[:, 0, 0].tolist() == [0, 128, 255] and (t == t[:, :1, :1]).all()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scale": 0}, "scale must be positive"),
        ({"scale": -255}, "scale must be positive"),
        ({"scale": float("nan")}, "finite numbers"),
        ({"std": [0.2, float("nan"), 0.2]}, "finite numbers"),
        ({"mean": [0.5, float("inf"), 0.5]}, "finite numbers"),
        ({"std": [0.2, 0, 0.2]}, "std non-zero"),
        ({"pad_color": [1.5, 0, 0]}, "pad_color must be three integers 0..255"),
        ({"background": [0, 0, 256]}, "background must be three integers 0..255"),
        ({"pad_color": [0, 0]}, "pad_color must be three integers 0..255"),
    ],
)
def test_spec_refuses_values_that_make_nan_or_truncate(changes: dict[str, object], message: str) -> None:
    """A spec that would give inf/NaN tensors or silently truncate a colour is refused when it is made."""
    with pytest.raises(InvalidParameterError, match=message):
        Preprocessing.from_json({**Preprocessing().to_json(), **changes})
