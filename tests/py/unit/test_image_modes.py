"""Every pixel mode -> the expected 8-bit RGB values (hand-computed on tiny images)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import imagefactory as fac
from imgfeat.core import image as im
from imgfeat.core.spec import torchvision_imagenet

GOOD = fac.good_images()


def rgb(data: bytes, **kw: object) -> np.ndarray:
    img = im.decode(data, **kw)  # type: ignore[arg-type]
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


def gray(values: list[list[int]]) -> np.ndarray:
    a = np.array(values)
    return np.stack([a, a, a], axis=-1)


def test_rgb_png_exact() -> None:
    assert rgb(GOOD["png_rgb"]).tolist() == [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]]


@pytest.mark.parametrize("name", ["tiff_rgb", "tiff_rgb_lzw", "bmp", "ppm_p6", "jpeg2000"])
def test_lossless_rgb_formats(name: str) -> None:
    assert rgb(GOOD[name]).tolist() == rgb(GOOD["png_rgb"]).tolist()


def test_l_and_1_bit() -> None:
    np.testing.assert_array_equal(rgb(GOOD["png_l"]), gray([[0, 64], [128, 255]]))
    np.testing.assert_array_equal(rgb(GOOD["pgm_p5"]), gray([[0, 64], [128, 255]]))
    # "1" from L thresholds at 128: 0, 64 -> black; 128, 255 -> white
    np.testing.assert_array_equal(rgb(GOOD["png_1"]), gray([[0, 0], [255, 255]]))
    np.testing.assert_array_equal(rgb(GOOD["pbm_p4"]), gray([[0, 0], [255, 255]]))


def test_rgba_composited_on_background() -> None:
    # alphas [[255, 128], [0, 255]]; pixel (0,1) green at alpha 128 on white:
    # R = B = round(255 * 127 / 255) = 127, G = 255. Pixel (1,0) blue at alpha 0 -> background.
    assert rgb(GOOD["png_rgba"]).tolist() == [[[255, 0, 0], [127, 255, 127]], [[255, 255, 255], [10, 20, 30]]]
    # on black: green * 128 / 255 = 128.0 -> 128
    on_black = rgb(GOOD["png_rgba"], background=(0, 0, 0))
    assert on_black.tolist() == [[[255, 0, 0], [0, 128, 0]], [[0, 0, 0], [10, 20, 30]]]
    assert rgb(GOOD["webp_lossless"]).tolist() == rgb(GOOD["png_rgba"]).tolist()


def test_la_composited() -> None:
    # L of the RGB pixels (ITU-R 601-2 luma, Pillow): red 76, green 150, blue 29, (10,20,30) 18.
    # (0,1): 150 at alpha 128 on white: round((150 * 128 + 255 * 127) / 255) = 202.
    np.testing.assert_array_equal(rgb(GOOD["png_la"]), gray([[76, 202], [255, 18]]))


def test_hidden_colours_under_zero_alpha_never_reach_the_model() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (40, 60, 4), dtype=np.uint8)
    base[:, :30, 3] = 0  # left half fully transparent
    other = base.copy()
    other[:, :30, :3] = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    a = fac.encode(Image.fromarray(base, "RGBA"), "PNG")
    b = fac.encode(Image.fromarray(other, "RGBA"), "PNG")
    spec = torchvision_imagenet()
    np.testing.assert_array_equal(im.image_to_tensor(a, spec), im.image_to_tensor(b, spec))
    # ... whereas dropping alpha (Pillow's convert("RGB")) would have shown them.
    assert not np.array_equal(np.asarray(Image.fromarray(base).convert("RGB")),
                              np.asarray(Image.fromarray(other).convert("RGB")))


def test_palette_with_and_without_transparency() -> None:
    assert rgb(GOOD["png_p"]).tolist() == [[[255, 0, 0], [0, 255, 0]]]
    assert rgb(GOOD["gif"]).tolist() == [[[255, 0, 0], [0, 255, 0]]]
    # index 1 fully transparent (tRNS single index / GIF transparency) -> white background
    assert rgb(GOOD["png_p_trns_index"]).tolist() == [[[255, 0, 0], [255, 255, 255]]]
    assert rgb(GOOD["gif_trns"]).tolist() == [[[255, 0, 0], [255, 255, 255]]]
    # tRNS alphas [255, 128]: green at alpha 128 on white -> (127, 255, 127)
    assert rgb(GOOD["png_p_trns_bytes"]).tolist() == [[[255, 0, 0], [127, 255, 127]]]


def test_trns_colour_key_for_l_and_rgb() -> None:
    np.testing.assert_array_equal(rgb(GOOD["png_l_trns"]), gray([[0, 255], [128, 255]]))
    assert rgb(GOOD["png_rgb_trns"], background=(1, 2, 3)).tolist() == [
        [[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [1, 2, 3]]
    ]


def _cmyk_image(pixels: list[tuple[int, int, int, int]]) -> Image.Image:
    img = Image.new("CMYK", (len(pixels), 1))
    for x, p in enumerate(pixels):
        img.putpixel((x, 0), p)
    return img


def test_cmyk_without_profile_uses_pillow_conversion() -> None:
    # Pillow: R = (255 - C) * (255 - K) / 255, rounded; white, cyan, black, (10,20,30,40)
    img = _cmyk_image([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255), (10, 20, 30, 40)])
    expected = [[[255, 255, 255], [0, 255, 255], [0, 0, 0], [207, 198, 190]]]
    assert rgb(fac.encode(img, "TIFF")).tolist() == expected
    # JPEG (quality 100, Adobe-inverted CMYK on disk): within JPEG error of the same values
    assert np.abs(rgb(GOOD["jpeg_cmyk"])[0, 1] - [0, 255, 255]).max() <= 3


def test_cmyk_through_embedded_icc_profile() -> None:
    # The test profile ignores C/M/Y and maps K linearly to L* (see imagefactory.cmyk_icc_profile):
    # cyan -> white (Pillow's naive conversion would give (0, 255, 255)); K=255 -> black;
    # K=128 -> L* = 100 * 127/255 = 49.8 -> sRGB 118; K=64 -> L* = 74.9 -> sRGB 184.
    img = _cmyk_image([(255, 0, 0, 0), (0, 0, 0, 255), (0, 0, 0, 128), (255, 255, 0, 64)])
    out = rgb(fac.encode(img, "TIFF", icc_profile=fac.cmyk_icc_profile()))
    expected = gray([[255, 0, 118, 184]])
    assert np.abs(out - expected).max() <= 2, out.tolist()
    jpeg = rgb(GOOD["jpeg_cmyk_icc"])
    assert np.abs(jpeg - gray([[255, 255], [0, 255]])).max() <= 3, jpeg.tolist()


def test_cmyk_with_unusable_profile_falls_back_to_pillow() -> None:
    img = _cmyk_image([(255, 0, 0, 0)])
    out = rgb(fac.encode(img, "TIFF", icc_profile=b"not an icc profile at all" * 8))
    assert out.tolist() == [[[0, 255, 255]]]


@pytest.mark.parametrize("name", ["png_i16", "tiff_i16"])
def test_16_bit_scaled_by_257(name: str) -> None:
    # [[0, 65535], [25700, 1000]] -> round(v / 257): [[0, 255], [100, 4]]  (1000/257 = 3.89)
    np.testing.assert_array_equal(rgb(GOOD[name]), gray([[0, 255], [100, 4]]))


def test_16_bit_rounding_and_big_endian() -> None:
    values = np.array([[0, 128, 129, 32896, 65535]], dtype=np.uint16)
    # 128/257 = 0.498 -> 0; 129/257 = 0.502 -> 1; 32896/257 = 128
    little = Image.fromarray(values)
    big = Image.frombytes("I;16B", (5, 1), values.astype(">u2").tobytes())
    for mode, img in (("I;16", little), ("I;16B", big)):
        assert img.mode == mode
        out = np.asarray(im.to_rgb(img))[..., 0]
        assert out.tolist() == [[0, 0, 1, 128, 255]], mode


def test_16_bit_pgm_maxval_65535() -> None:
    np.testing.assert_array_equal(rgb(GOOD["pgm_p5_maxval_65535"]), gray([[0, 255]]))
    data = b"P5\n3 1\n65535\n" + np.array([129, 32896, 65000], ">u2").tobytes()
    # 65000 / 257 = 252.9 -> 253
    np.testing.assert_array_equal(rgb(data), gray([[1, 128, 253]]))


def test_pgm_maxval_1023_and_ascii_maxval_15() -> None:
    # 10-bit samples [0, 1023, 512, 1]: 512 * 255 / 1023 = 127.6 -> 128; 1 * 255 / 1023 = 0.25 -> 0
    np.testing.assert_array_equal(rgb(GOOD["pgm_p5_maxval_1023"]), gray([[0, 255], [128, 0]]))
    # P2 with maxval 15: [0, 15, 7, 8] -> v * 17: [0, 255, 119, 136]
    np.testing.assert_array_equal(rgb(GOOD["pgm_p2_maxval_15"]), gray([[0, 255], [119, 136]]))
    # P6 with maxval 1023, one pixel (0, 1023, 512)
    assert rgb(GOOD["ppm_p6_maxval_1023"]).tolist() == [[[0, 255, 128]]]


def test_32_bit_integer_tiff_by_declared_signed_range() -> None:
    # [[-2^31, 2^31 - 1], [0, 1]] over -2^31..2^31-1: 0 -> 2^31 * 255 / (2^32 - 1) = 127.50000003 -> 128
    np.testing.assert_array_equal(rgb(GOOD["tiff_i32"]), gray([[0, 255], [128, 128]]))


def test_32_bit_integer_in_memory_uses_16_bit_range_and_never_clips() -> None:
    inside = Image.fromarray(np.array([[0, 65535, 257 * 7]], dtype=np.int32))
    assert np.asarray(im.to_rgb(inside))[..., 0].tolist() == [[0, 255, 7]]
    # values beyond 0..65535 widen the range to min..max instead of clipping at 255
    outside = Image.fromarray(np.array([[-100, 0, 131070]], dtype=np.int32))
    # (v + 100) * 255 / 131170: 0 -> 0.19 -> 0; 131070 -> 255
    out = np.asarray(im.to_rgb(outside))[..., 0].tolist()
    assert out == [[0, 0, 255]]
    mid = Image.fromarray(np.array([[0, 65535, 131070]], dtype=np.int32))
    assert np.asarray(im.to_rgb(mid))[..., 0].tolist() == [[0, 128, 255]]  # 127.5 -> 128 (rint)


def test_float_images() -> None:
    # within [0, 1]: v * 255 -> [[0, 127.5 -> 128], [255, 63.75 -> 64]]
    np.testing.assert_array_equal(rgb(GOOD["tiff_f32"]), gray([[0, 128], [255, 64]]))
    np.testing.assert_array_equal(rgb(GOOD["pfm"]), gray([[0, 128], [255, 64]]))

    def f(values: list[float]) -> list[int]:
        img = Image.fromarray(np.array([values], dtype=np.float32))
        return np.asarray(im.to_rgb(img))[0, :, 0].tolist()

    assert f([-1.0, 1.0, 3.0]) == [0, 128, 255]  # min-max: (v + 1) / 4 * 255
    assert f([5.0, 5.0]) == [255, 255]  # constant above 1
    assert f([-2.0, -2.0]) == [0, 0]  # constant below 0
    assert f([float("nan"), 0.0, 1.0, float("inf")]) == [0, 0, 255, 255]


def test_first_frame_of_multiframe_images() -> None:
    for name in ("gif_animated", "tiff_multipage", "apng"):
        out = rgb(GOOD[name])
        assert out.shape == (4, 4, 3)
        assert np.abs(out - [200, 0, 0]).max() <= 1, name


def _quadrants() -> np.ndarray:
    """8x4 (w x h) image: distinct colours in the four 4x2 quadrants, stored orientation."""
    a = np.zeros((4, 8, 3), dtype=np.uint8)
    a[:2, :4] = (255, 0, 0)
    a[:2, 4:] = (0, 255, 0)
    a[2:, :4] = (0, 0, 255)
    a[2:, 4:] = (255, 255, 0)
    return a


@pytest.mark.parametrize(
    "orientation, expected",
    [
        (1, lambda a: a),
        (2, np.fliplr),
        (3, lambda a: np.rot90(a, 2)),
        (4, np.flipud),
        (5, lambda a: a.transpose(1, 0, 2)),
        (6, lambda a: np.rot90(a, -1)),  # stored image is rotated 90 CCW: display turns it clockwise
        (7, lambda a: np.rot90(a, 2).transpose(1, 0, 2)),
        (8, lambda a: np.rot90(a, 1)),
    ],
)
def test_exif_orientation_png(orientation: int, expected) -> None:  # type: ignore[no-untyped-def]
    a = _quadrants()
    data = fac.with_exif_orientation(Image.fromarray(a), orientation, fmt="PNG")
    np.testing.assert_array_equal(rgb(data), expected(a))


def test_exif_orientation_jpeg_pixel_positions() -> None:
    # 64x32 stored: left half red, right half blue; orientation 6 -> displayed 32x64 with
    # red on top (the stored left edge becomes the displayed top edge).
    a = np.zeros((32, 64, 3), dtype=np.uint8)
    a[:, :32] = (255, 0, 0)
    a[:, 32:] = (0, 0, 255)
    out = rgb(fac.with_exif_orientation(Image.fromarray(a), 6, quality=95))
    assert out.shape == (64, 32, 3)
    assert np.abs(out[8, 16] - [255, 0, 0]).max() <= 6
    assert np.abs(out[56, 16] - [0, 0, 255]).max() <= 6
    out8 = rgb(fac.with_exif_orientation(Image.fromarray(a), 8, quality=95))
    assert np.abs(out8[8, 16] - [0, 0, 255]).max() <= 6  # orientation 8: right edge on top


@pytest.mark.slow
def test_draft_decodes_large_jpeg_smaller_but_covering() -> None:
    data = fac.encode(fac.photo_like(2000, 1500), "JPEG", quality=85)
    assert im.decode(data).size == (2000, 1500)
    # 2000 // 341 = 5 -> scale 1/4 -> 500x375, which still covers 341x256
    assert im.decode(data, draft_size=(341, 256)).size == (500, 375)
    assert im.decode(data, draft_size=(1500, 1000)).size == (2000, 1500)  # no reduction possible
    # with orientation 6 the draft size is in display orientation (256x341 covers 375x500)
    rotated = fac.with_exif_orientation(fac.photo_like(2000, 1500), 6, quality=85)
    assert im.decode(rotated, draft_size=(256, 341)).size == (375, 500)
    # draft is JPEG-only: a PNG ignores it
    assert im.decode(GOOD["png_rgb"], draft_size=(1, 1)).size == (2, 2)
