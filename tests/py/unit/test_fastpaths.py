"""The performance shortcuts give exactly what the slow paths give.

* Netpbm images that Pillow decodes in pure Python (plain P2/P3, binary P5/P6 with maxval
  below 255) are decoded with numpy: same pixels, same errors (by falling back to Pillow).
* 8-bit gray images are resampled as one band: same tensor as through RGB.
* Normalisation is elementwise float32 arithmetic in torchvision's order (divide by 255,
  subtract the mean, divide by the std): every one of the 256 values, gray or RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgfeat.core import image as im
from imgfeat.core.spec import Preprocessing, caffe_bgr, torchvision_imagenet

SPECS = [
    torchvision_imagenet(),
    caffe_bgr(),
    torchvision_imagenet().replace(resize="isopad", pad_color=[10, 20, 30]),
    torchvision_imagenet().replace(resize="aniso", interpolation="bicubic"),
]


def netpbm(magic: bytes, values: np.ndarray, maxval: int) -> bytes:
    """A Netpbm file: ``values`` [H, W] (gray) or [H, W, 3] (RGB) with ``maxval``."""
    h, w = values.shape[:2]
    head = magic + b"\n%d %d\n%d\n" % (w, h, maxval)
    if magic in (b"P2", b"P3"):
        rows = values.reshape(h, -1)
        return head + b"\n".join(b" ".join(b"%d" % v for v in row) for row in rows) + b"\n"
    return head + values.astype(np.uint8).tobytes()


def pillow_pixels(data: bytes) -> np.ndarray:
    """Pillow's own decode of the file (the reference), as uint8."""
    import io

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img)


@pytest.mark.parametrize("maxval", [1, 15, 156, 255])
@pytest.mark.parametrize("magic", [b"P2", b"P3", b"P5", b"P6"])
def test_netpbm_fast_path_equals_pillow(magic: bytes, maxval: int) -> None:
    rng = np.random.default_rng(maxval)
    shape = (23, 37, 3) if magic in (b"P3", b"P6") else (23, 37)
    data = netpbm(magic, rng.integers(0, maxval + 1, shape), maxval)
    fast = im._decode_netpbm(data, 10**9)
    if magic in (b"P5", b"P6") and maxval == 255:
        assert fast is None  # Pillow's C decoder already handles it
        return
    assert fast is not None
    np.testing.assert_array_equal(np.asarray(fast), pillow_pixels(data))


def test_binary_samples_above_maxval_clip_like_pillow() -> None:
    data = b"P5\n4 1\n100\n" + bytes([0, 50, 100, 200])
    fast = im._decode_netpbm(data, 10**9)
    assert fast is not None
    np.testing.assert_array_equal(np.asarray(fast), pillow_pixels(data))
    assert np.asarray(fast).tolist() == [[0, 128, 255, 255]]


@pytest.mark.parametrize(
    "data",
    [
        b"P2\n2 2\n15\n0 15\n7 16\n",  # a sample above maxval
        b"P2\n2 2\n15\n0 15\n7\n",  # too few samples
        b"P2\n2 2\n15\n0 15\n7 000000000008\n",  # a token Pillow finds too long
        b"P2\n# comment\n2 2\n15\n0 15\n7 8\n",  # comments: Pillow parses them
        b"P2\n2 2\n0\n0 0 0 0\n",  # maxval 0
        b"P2\n2 2\n65535\n0 1 2 3\n",  # 16-bit
        b"P2\n2 2\n15\n0 -1 2 3\n",  # a sign
        b"P5\n2 2\n15\n\x00\x0f\x07",  # truncated binary
    ],
)
def test_unusual_netpbm_falls_back_to_pillow(data: bytes) -> None:
    assert im._decode_netpbm(data, 10**9) is None
    try:
        expected: Any = im.to_rgb(Image.open(__import__("io").BytesIO(data)))
    except Exception:  # noqa: BLE001 - Pillow's verdict is the reference
        expected = None
    if expected is None:
        with pytest.raises(im.ImageDecodeError):
            im.decode(data)
    else:
        np.testing.assert_array_equal(np.asarray(im.decode(data)), np.asarray(expected))


def test_too_many_pixels_still_refused() -> None:
    data = netpbm(b"P2", np.zeros((10, 10), int), 15)
    with pytest.raises(im.ImageTooLargeError):
        im.decode(data, max_pixels=99)


@pytest.mark.parametrize("spec", SPECS, ids=["resnet", "caffe", "isopad", "aniso-bicubic"])
def test_gray_resampled_as_one_band_equals_rgb(spec: Preprocessing) -> None:
    rng = np.random.default_rng(7)
    gray = Image.fromarray(rng.integers(0, 256, (120, 128), dtype=np.uint8))
    np.testing.assert_array_equal(im.preprocess(gray, spec), im.preprocess(gray.convert("RGB"), spec))


@pytest.mark.parametrize("spec", SPECS[:2], ids=["resnet", "caffe"])
@pytest.mark.parametrize("gray", [True, False], ids=["gray", "rgb"])
def test_normalisation_is_torchvision_float32_order(spec: Preprocessing, gray: bool) -> None:
    """All 256 values in a 16x16 image, taken as is (aniso at the model's own size)."""
    spec = spec.replace(resize="aniso", width=16, height=16)
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    pixels = values if gray else np.stack([values, values[::-1], values.T], axis=2)
    got = im.preprocess(Image.fromarray(pixels), spec)
    rgb = np.broadcast_to(values[:, :, None], (16, 16, 3)) if gray else pixels
    bands = (0, 1, 2) if spec.channel_order == "RGB" else (2, 1, 0)
    for c in range(3):
        x = rgb[:, :, bands[c]].astype(np.float32) / np.float32(spec.scale)
        want = (x - np.float32(spec.mean[c])) / np.float32(spec.std[c])
        assert want.dtype == np.float32
        np.testing.assert_array_equal(got[c], want)


def test_cmu_faces_tensors_equal_the_pillow_path(face_files: list[Path]) -> None:
    """Every 10th face: the fast decode + one-band resample == Pillow's decoder + RGB path."""
    spec = torchvision_imagenet()
    for path in face_files[::10]:
        data = path.read_bytes()
        assert data.startswith(b"P2")
        with Image.open(path) as img:
            slow = im.preprocess(img.convert("RGB"), spec)
        np.testing.assert_array_equal(im.image_to_tensor(data, spec), slow)
