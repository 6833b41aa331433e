"""Broken inputs: each kind gives a clean ImageDecodeError; valid extremes never crash."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFile

import imagefactory as fac
from imgfeat.core import image as im
from imgfeat.core.errors import ImageDecodeError, ImageTooLargeError, InvalidParameterError
from imgfeat.core.spec import torchvision_imagenet

BROKEN = fac.broken_images()
GOOD = fac.good_images()
SPEC = torchvision_imagenet()


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_every_broken_kind_raises_image_decode_error(name: str) -> None:
    with pytest.raises(ImageDecodeError) as err:
        im.decode(BROKEN[name])
    assert err.value.sqlstate in ("22P02", "54000")
    assert err.value.message and "Traceback" not in err.value.message


@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_good_kind_decodes_to_rgb_and_preprocesses(name: str) -> None:
    img = im.decode(GOOD[name])
    assert img.mode == "RGB" and img.width >= 1 and img.height >= 1
    t = im.image_to_tensor(GOOD[name], SPEC)
    assert t.shape == (3, 224, 224) and t.dtype == np.float32 and np.isfinite(t).all()


@pytest.mark.parametrize(
    "name, message",
    [
        ("empty", "image is empty (0 bytes)"),
        ("garbage", "not a recognised image format"),
        ("random_bytes", "not a recognised image format"),
        ("png_signature_only", "not a recognised image format"),
        ("heif_ftyp", "unsupported image format HEIF"),
        ("heif_mif1_ftyp", "unsupported image format HEIF"),
        ("pdf", "unsupported image format PDF"),
        ("svg", "unsupported image format SVG"),
    ],
)
def test_unrecognised_messages(name: str, message: str) -> None:
    with pytest.raises(ImageDecodeError) as err:
        im.decode(BROKEN[name])
    assert str(err.value) == message
    assert type(err.value) is ImageDecodeError


@pytest.mark.parametrize("name", ["truncated_png", "truncated_png_header", "truncated_jpeg", "truncated_gif"])
def test_truncated_files_fail_instead_of_decoding_grey(name: str) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(ImageDecodeError, match=rf"^truncated image data \({len(BROKEN[name])} bytes\)$"):
        im.decode(BROKEN[name])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.slow
def test_truncated_jpeg_fails_in_image_to_tensor_and_with_draft() -> None:
    data = fac.encode(fac.photo_like(2000, 1500), "JPEG", quality=85)
    cut = data[: int(len(data) * 0.6)]
    with pytest.raises(ImageDecodeError, match="truncated image data"):
        im.image_to_tensor(cut, SPEC)
    with pytest.raises(ImageDecodeError, match="truncated image data"):
        im.decode(cut, draft_size=(341, 256))


def test_truncated_tiff_with_corrupt_exif_leaks_no_warning() -> None:
    # Pillow warns "Corrupt EXIF data" on this one; warnings are errors in this test suite.
    tiff = fac.encode(fac.rgb_2x2(), "TIFF")
    for cut in (8, 20, len(tiff) // 2):
        with pytest.raises(ImageDecodeError):
            im.decode(tiff[:cut])


def test_corrupt_png_data_is_named() -> None:
    with pytest.raises(ImageDecodeError, match=r"^damaged PNG image data"):
        im.decode(BROKEN["corrupt_png_idat"])


def test_huge_header_rejected_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    data = BROKEN["huge_header_png"]
    assert len(data) < 100
    with pytest.raises(ImageTooLargeError) as err:
        im.decode(data)
    # over twice the limit: Pillow's own check (its limit set to max_pixels while opening) refuses it
    assert str(err.value) == "image is too large: 400.0 megapixels exceeds the limit of 50.0 megapixels"
    assert (err.value.detail or "").endswith("nothing was decoded")
    assert err.value.sqlstate == "54000"
    with pytest.raises(ImageTooLargeError):
        im.image_to_tensor(data, SPEC)


@pytest.mark.parametrize("pillow_limit", [None, 10, 10**12])
def test_limit_is_ours_whatever_pillows_global_is(monkeypatch: pytest.MonkeyPatch, pillow_limit: int | None) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    img = fac.encode(Image.new("RGB", (100, 100), (1, 2, 3)), "PNG")
    # 10000 px is above a global of 10 (Pillow would raise DecompressionBombError): still decodes
    assert im.decode(img).size == (100, 100)
    assert im.decode(img, max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageTooLargeError, match=r"^image is too large: 100x100 \(10000 pixels\) exceeds the limit of 9999 pixels$"):
        im.decode(img, max_pixels=9_999)
    with pytest.raises(ImageTooLargeError):
        im.decode(BROKEN["huge_header_png"])
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # restored


def test_bytes_like_inputs_and_bad_arguments() -> None:
    data = GOOD["png_rgb"]
    for form in (bytearray(data), memoryview(data)):
        assert np.asarray(im.decode(form)).tolist() == np.asarray(im.decode(data)).tolist()  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="max_pixels must be positive"):
        im.decode(data, max_pixels=0)
    with pytest.raises(InvalidParameterError, match="background"):
        im.decode(data, background=(0, 0, 256))


@pytest.mark.parametrize("name", ["png_1x1", "png_5000x1", "png_1x5000"])
@pytest.mark.parametrize("resize", ["isocrop", "isopad", "aniso"])
def test_extreme_sizes_preprocess_to_the_right_shape(name: str, resize: str) -> None:
    spec = SPEC.replace(resize=resize)
    t = im.image_to_tensor(GOOD[name], spec)
    assert t.shape == (3, 224, 224) and t.flags["C_CONTIGUOUS"]
    colour = np.asarray(im.decode(GOOD[name]))[0, 0]
    expected = ((colour / np.float32(255)).astype(np.float32) - np.array(SPEC.mean, np.float32)) / np.array(
        SPEC.std, np.float32
    )
    if resize == "isopad" and name != "png_1x1":
        # the strip is one pixel thick, centred; the rest is pad colour (black)
        pad = (0 - np.array(SPEC.mean, np.float32)) / np.array(SPEC.std, np.float32)
        if name == "png_5000x1":
            np.testing.assert_allclose(t[:, 111, :], expected[:, None].repeat(224, 1), atol=1e-6)
            np.testing.assert_allclose(t[:, 0, :], pad[:, None].repeat(224, 1), atol=1e-6)
        else:
            np.testing.assert_allclose(t[:, :, 111], expected[:, None].repeat(224, 1), atol=1e-6)
            np.testing.assert_allclose(t[:, :, 0], pad[:, None].repeat(224, 1), atol=1e-6)
    else:
        np.testing.assert_allclose(t, expected[:, None, None] * np.ones((3, 224, 224), np.float32), atol=1e-6)


def test_batch_keeps_good_images_and_reports_bad_ones() -> None:
    items = [GOOD["png_rgb"], BROKEN["empty"], GOOD["jpeg_rgb"], BROKEN["truncated_jpeg"],
             None, BROKEN["huge_header_png"], GOOD["png_1x1"]]
    batch, good, bad = im.images_to_batch(items, SPEC)  # type: ignore[arg-type]
    assert good == [0, 2, 6]
    assert [i for i, _ in bad] == [1, 3, 4, 5]
    assert str(bad[0][1]) == "image is empty (0 bytes)"
    assert str(bad[1][1]).startswith("truncated image data")
    assert str(bad[2][1]) == "image is NULL"
    assert isinstance(bad[3][1], ImageTooLargeError)
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == np.float32 and batch.flags["C_CONTIGUOUS"]
    for row, i in enumerate(good):
        np.testing.assert_array_equal(batch[row], im.image_to_tensor(items[i], SPEC))  # type: ignore[arg-type]


def test_batch_of_only_bad_images_is_empty() -> None:
    batch, good, bad = im.images_to_batch([BROKEN["garbage"]], SPEC)
    assert batch.shape == (0, 3, 224, 224) and good == [] and len(bad) == 1
    batch, good, bad = im.images_to_batch([], SPEC)
    assert batch.shape == (0, 3, 224, 224) and good == [] and bad == []
