"""Fidelity: our tensors equal torchvision's documented eval transforms, computed here
independently (torchvision itself is not installable: Pillow resize + torch tensor ops).

torchvision's ImageNet eval transform (https://pytorch.org/vision/stable/models.html):
``Resize(256)`` (PIL ``resize`` with BILINEAR; shorter side -> 256, longer side
``int(256 * long / short)``), ``CenterCrop(224)`` (offsets ``int(round((h - 224) / 2.0))``),
``ToTensor()`` (``/ 255`` in float32), ``Normalize(mean, std)``.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import imagefactory as fac
from imgfeat.core import image as im
from imgfeat.core.spec import CAFFE_BGR_MEAN, IMAGENET_MEAN, IMAGENET_STD, caffe_bgr, torchvision_imagenet


def tv_resize(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    return img.resize((new_w, new_h), Image.Resampling.BILINEAR)


def tv_center_crop(img: Image.Image, crop: int) -> Image.Image:
    w, h = img.size
    top = int(round((h - crop) / 2.0))
    left = int(round((w - crop) / 2.0))
    return img.crop((left, top, left + crop, top + crop))


def tv_to_tensor_normalize(img: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    t = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    t = t.to(torch.float32).div(255)
    m = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.as_tensor(std, dtype=torch.float32)[:, None, None]
    return t.sub(m).div(s).numpy()


def torchvision_eval(img: Image.Image, resize: int = 256, crop: int = 224) -> np.ndarray:
    return tv_to_tensor_normalize(tv_center_crop(tv_resize(img, resize), crop), IMAGENET_MEAN, IMAGENET_STD)


def composite_on_white(rgba: Image.Image) -> Image.Image:
    a = np.asarray(rgba).astype(np.float64)
    alpha = a[..., 3:] / 255
    return Image.fromarray(np.rint(a[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8))


def _rgba_640x480() -> Image.Image:
    img = fac.photo_like(640, 480, seed=3).convert("RGBA")
    alpha = np.full((480, 640), 255, np.uint8)
    alpha[100:300, 200:500] = np.linspace(0, 255, 300, dtype=np.uint8)[None, :]
    img.putalpha(Image.fromarray(alpha))
    return img


CASES = {
    "rgb_300x500_png": lambda: (fac.encode(fac.photo_like(300, 500, seed=1), "PNG"), None),
    "rgb_500x300_jpeg": lambda: (fac.encode(fac.photo_like(500, 300, seed=2), "JPEG", quality=90), None),
    "rgba_640x480_png": lambda: (fac.encode(_rgba_640x480(), "PNG"), composite_on_white),
    "palette_333x257_png": lambda: (fac.encode(fac.photo_like(333, 257, seed=4).quantize(64), "PNG"), None),
    "gray_257x256_png": lambda: (fac.encode(fac.photo_like(257, 256, seed=5).convert("L"), "PNG"), None),
    "rgb_224x224_png": lambda: (fac.encode(fac.photo_like(224, 224, seed=6), "PNG"), None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_resnet_spec_equals_torchvision_eval(name: str) -> None:
    data, prepare = CASES[name]()
    pil = Image.open(io.BytesIO(data))
    pil = prepare(pil) if prepare else pil.convert("RGB")
    expected = torchvision_eval(pil)
    ours = im.image_to_tensor(data, torchvision_imagenet())
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32 and ours.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


def test_resnet_spec_on_cmu_face(face_bytes: bytes) -> None:
    pil = Image.open(io.BytesIO(face_bytes))
    assert pil.size == (128, 120) and pil.mode == "L"
    expected = torchvision_eval(pil.convert("RGB"))  # upscaled: 128x120 -> 273x256
    ours = im.image_to_tensor(face_bytes, torchvision_imagenet())
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


def test_alexnet_caffe_isocrop_256_to_227() -> None:
    data = fac.encode(fac.photo_like(400, 300, seed=7), "PNG")
    pil = Image.open(io.BytesIO(data)).convert("RGB")
    resized = tv_resize(pil, 256)
    assert resized.size == (341, 256)
    cropped = tv_center_crop(resized, 227)
    bgr = np.asarray(cropped).astype(np.float32)[..., ::-1].transpose(2, 0, 1)
    expected = bgr - np.array(CAFFE_BGR_MEAN, np.float32)[:, None, None]
    ours = im.image_to_tensor(data, caffe_bgr())
    assert ours.shape == (3, 227, 227)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)


def test_center_crop_offsets_round_half_to_even_like_torchvision() -> None:
    # 341x256 needs no resize at 256; crop 227: top = round(14.5) = 14 (Python rounds half to
    # even), left = round(57.0) = 57. Rows hold their index, columns 0..255 mod 256 in green.
    rows = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 341, axis=1)
    cols = np.repeat((np.arange(341) % 256).astype(np.uint8)[None, :], 256, axis=0)
    arr = np.stack([rows, cols, np.zeros_like(rows)], axis=-1)
    data = fac.encode(Image.fromarray(arr), "PNG")
    spec = caffe_bgr().replace(mean=[0, 0, 0])  # BGR, 0..255 units, no mean: raw values
    t = im.image_to_tensor(data, spec)
    red, green = t[2], t[1]
    assert red[0, 0] == 14 and red[-1, 0] == 14 + 226
    assert green[0, 0] == 57 and green[0, -1] == (57 + 226) % 256
    # 224 crop of 256: (256 - 224) / 2 = 16 exactly
    t224 = im.image_to_tensor(data, spec.replace(width=224, height=224))
    assert t224[2, 0, 0] == 16 and t224[1, 0, 0] == round((341 - 224) / 2.0) == 58
