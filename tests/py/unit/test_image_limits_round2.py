"""Limits checked before decoding (second security round): ICO frames by their own headers,
Pillow's bomb limit never lifted, JPEG scan bombs, AVIF refused."""

from __future__ import annotations

import io
import struct
import time

import pytest
from PIL import Image, ImageFile

from imgfeat.core import image as im
from imgfeat.core.errors import ImageDecodeError, ImageTooLargeError


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _ico_around(frame: bytes, declared: int = 16) -> bytes:
    directory = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", declared % 256, declared % 256, 0, 0, 1, 32, len(frame), 6 + 16)
    return directory + entry + frame


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_an_ico_png_frame_is_held_to_the_limit_by_its_own_header(monkeypatch: pytest.MonkeyPatch) -> None:
    ico = _ico_around(_encode(Image.new("L", (300, 200)), "PNG"))
    _no_decoding(monkeypatch)
    with pytest.raises(ImageTooLargeError) as err:
        im.decode(ico, max_pixels=1000)
    assert str(err.value) == "image is too large: 300x200 (60000 pixels) exceeds the limit of 1000 pixels"
    assert err.value.detail == "ICO frame 1 of 1 is a PNG of 300x200 pixels (the directory says 16x16); nothing was decoded"


def test_an_ico_bmp_frame_is_held_to_the_limit_by_its_own_header(monkeypatch: pytest.MonkeyPatch) -> None:
    dib = _encode(Image.new("RGB", (300, 200)), "BMP")[14:]  # a DIB: BMP without its file header
    dib = dib[:8] + struct.pack("<i", 400) + dib[12:]  # ICO DIBs count the AND mask in the height
    _no_decoding(monkeypatch)
    with pytest.raises(ImageTooLargeError, match=r"^image is too large: 300x200 "):
        im.decode(_ico_around(dib), max_pixels=1000)


def test_an_ico_core_header_bmp_frame_is_read_by_its_16_bit_size() -> None:
    core = struct.pack("<IHHHH", 12, 3000, 2 * 3000, 1, 24)  # BITMAPCOREHEADER: 3000x3000, XOR + AND
    with pytest.raises(ImageTooLargeError, match=r"^image is too large: 3000x3000 "):
        im.decode(_ico_around(core + b"\0" * 64), max_pixels=1000)


def test_a_genuine_ico_still_decodes() -> None:
    ico = _encode(Image.new("RGBA", (32, 32), (1, 2, 3, 255)), "ICO", sizes=[(16, 16), (32, 32)])
    assert im.decode(ico).size == (32, 32)
    assert im.decode(ico, max_pixels=32 * 32).size == (32, 32)
    with pytest.raises(ImageTooLargeError):
        im.decode(ico, max_pixels=32 * 32 - 1)


@pytest.mark.parametrize("pillow_limit", [None, 10, 10**12])
def test_pillows_limit_is_max_pixels_while_opening_and_is_restored(monkeypatch: pytest.MonkeyPatch, pillow_limit: int | None) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    seen: list[int | None] = []
    real_open = Image.open

    def spy(*args: object, **kw: object) -> Image.Image:
        seen.append(Image.MAX_IMAGE_PIXELS)
        return real_open(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Image, "open", spy)
    png = _encode(Image.new("RGB", (100, 100)), "PNG")
    assert im.decode(png, max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageTooLargeError, match=r"^image is too large: 100x100 \(10000 pixels\) exceeds the limit of 6000 pixels$"):
        im.decode(png, max_pixels=6000)  # between once and twice Pillow's limit: our message
    with pytest.raises(ImageTooLargeError, match=r"^image is too large: 10000 pixels exceeds the limit of 1000 pixels$"):
        im.decode(png, max_pixels=1000)  # over twice: Pillow's own check, never retried with it lifted
    assert seen == [10_000, 6000, 1000]
    assert Image.MAX_IMAGE_PIXELS == pillow_limit


def _scan_bomb(side: int, scans: int) -> bytes:
    data = _encode(Image.new("L", (side, side), 128), "JPEG", progressive=True, quality=90)
    at = data.index(b"\xff\xda")
    header = data[at : at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")]
    end = data.index(b"\xff\xda", at + 2)  # the first scan's data ends at the second scan
    return data[:end] + header * scans + b"\xff\xd9"


def test_a_jpeg_scan_bomb_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = _scan_bomb(2000, 3000)
    _no_decoding(monkeypatch)
    started = time.monotonic()
    with pytest.raises(ImageDecodeError) as err:
        im.decode(bomb)
    assert time.monotonic() - started < 1
    assert str(err.value) == f"JPEG has too many scans: more than {im.MAX_JPEG_SCANS} in the image"
    assert err.value.sqlstate == "22P02"


def test_scans_are_counted_by_segment_not_by_byte_pattern() -> None:
    exif_thumbnail_like = b"\xff\xd8\xff\xe1" + (2 + 600).to_bytes(2, "big") + b"\xff\xda\x00\x02" * 150
    progressive = _encode(Image.new("RGB", (64, 48), (200, 30, 40)), "JPEG", progressive=True)
    data = exif_thumbnail_like + progressive[2:]  # an APP1 full of SOS-like bytes, then a real JPEG
    assert im._jpeg_scans(data) == im._jpeg_scans(progressive) == 10
    assert im.decode(data).size == (64, 48)
    assert im._jpeg_scans(_scan_bomb(64, 100)) == 101
    im.decode(_scan_bomb(64, im.MAX_JPEG_SCANS - 1))  # at the cap: still decodes
    with pytest.raises(ImageDecodeError, match="too many scans"):
        im.decode(_scan_bomb(64, im.MAX_JPEG_SCANS))


def test_a_jpeg_compressed_tiff_strip_is_held_to_the_scan_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = _scan_bomb(64, 500)
    tiff = _encode(Image.new("L", (64, 64)), "TIFF", compression="jpeg")
    img = Image.open(io.BytesIO(tiff))
    offset = img.tag_v2[273][0]
    assert tiff[offset : offset + 2] == b"\xff\xd8"
    # the strip replaced by the bomb, appended: the IFD's StripOffsets and StripByteCounts point at it
    patched = bytearray(tiff + bomb)
    assert tiff[:2] == b"II"
    ifd = struct.unpack_from("<I", tiff, 4)[0]
    for k in range(struct.unpack_from("<H", tiff, ifd)[0]):
        at = ifd + 2 + 12 * k
        tag, kind, n = struct.unpack_from("<HHI", tiff, at)
        if tag in (273, 279):
            assert n == 1
            value = len(tiff) if tag == 273 else len(bomb)
            if kind == 3:
                struct.pack_into("<H", patched, at + 8, value)
            else:
                struct.pack_into("<I", patched, at + 8, value)
    with pytest.raises(ImageDecodeError, match=r"too many scans: more than \d+ in TIFF strip 1$"):
        im.decode(bytes(patched))
    assert im.decode(tiff).size == (64, 64)


def test_avif_is_refused_as_unsupported() -> None:
    try:
        avif = _encode(Image.new("RGB", (16, 16), (10, 200, 30)), "AVIF", quality=10, speed=10)
    except (KeyError, OSError):
        pytest.skip("this Pillow cannot write AVIF")
    with pytest.raises(ImageDecodeError) as err:
        im.decode(avif)
    assert str(err.value) == "unsupported image format AVIF"
    assert "AV1 frame" in (err.value.detail or "")
    assert "AVIF" not in im.FORMATS and "AVIF" not in im.SUPPORTED


def test_scan_counting_is_bounded_work() -> None:
    sos = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
    restarts = b"\xff\xd8" + sos + b"\x12\xff\xd0" * 2_000_000 + b"\xff\xd9"  # RSTn inside one scan: skipped in C
    started = time.monotonic()
    assert im._jpeg_scans(restarts) == 1
    assert time.monotonic() - started < 1
    comments = b"\xff\xd8" + b"\xff\xfe\x00\x02" * 1_000_000 + b"\xff\xd9"
    started = time.monotonic()
    with pytest.raises(ImageDecodeError, match=r"^JPEG has too many marker segments: more than 10000$"):
        im.decode(comments)
    assert time.monotonic() - started < 1
