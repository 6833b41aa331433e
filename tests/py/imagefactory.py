"""Test images made in memory with Pillow (no files, no downloads).

* :func:`good_images`: one decodable image per pixel mode / format / oddity (all small),
  including the valid extremes 1x1 and 5000x1.
* :func:`broken_images`: one entry per kind of bad input; each must make
  ``imgfeat.image.decode`` raise ``ImageDecodeError`` (``ImageTooLargeError`` for
  ``huge_header_png``).
* helpers to build specific cases: :func:`encode`, :func:`png_with_declared_size`,
  :func:`with_exif_orientation`, :func:`cmyk_icc_profile`, :func:`photo_like`.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

HUGE_SIDE = 20000
"""Side of the square that ``huge_header_png`` declares (400 megapixels)."""


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    """``img.save`` into bytes."""
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def rgb_2x2() -> Image.Image:
    """Red, green / blue, (10, 20, 30)."""
    arr = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    return Image.fromarray(arr)


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB image (gradients, blobs, mild noise): compresses like a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x /= max(width - 1, 1)
    y /= max(height - 1, 1)
    channels = []
    for c in range(3):
        v = 0.5 + 0.25 * np.sin(2 * np.pi * (x * (1 + c) + y * (2 - c * 0.5)))
        for _ in range(4):
            cx, cy, r = rng.random(), rng.random(), 0.05 + 0.2 * rng.random()
            v += 0.3 * (rng.random() - 0.5) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        channels.append(v)
    arr = np.stack(channels, axis=-1) * 255 + rng.normal(0, 3, (height, width, 3))
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def png_with_declared_size(width: int, height: int) -> bytes:
    """A small PNG whose IHDR declares ``width`` x ``height`` (CRC fixed); its IDAT holds one
    row only, so nothing large is ever allocated unless a decoder trusts the header."""
    data = bytearray(encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def with_exif_orientation(img: Image.Image, orientation: int, fmt: str = "JPEG", **params: object) -> bytes:
    """Encode ``img`` with an EXIF Orientation tag (0x0112)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, fmt, exif=exif, **params)


def cmyk_icc_profile() -> bytes:
    """A minimal ICC v2 CMYK output profile (A2B0 ``lut8Type``, PCS Lab) made by hand.

    It deliberately ignores C, M and Y: ``L* = 100 * (1 - K/255)`` (linear in K), ``a* = b* =
    0``. So through this profile pure cyan is white and K=255 is black, unlike Pillow's naive
    CMYK conversion (cyan -> (0, 255, 255)).
    """

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def pad4(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)

    text = b"imgfeat test CMYK\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    wtpt = b"XYZ " + b"\0" * 4 + s15(0.9642) + s15(1.0) + s15(0.8249)
    cprt = b"text" + b"\0" * 4 + b"public domain\0"
    identity = bytes(range(256))
    clut = bytearray()
    for c in (0, 1):
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    clut += bytes([0 if k else 255, 128, 128])
    a2b0 = (
        b"mft1" + b"\0" * 4 + bytes([4, 3, 2, 0])
        + b"".join(s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
        + identity * 4 + bytes(clut) + identity * 3
    )
    tags = [(b"desc", desc), (b"wtpt", wtpt), (b"cprt", cprt), (b"A2B0", a2b0)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, payload in tags:
        table += sig + struct.pack(">II", offset + len(body), len(payload))
        body += pad4(payload)
    total = offset + len(body)
    header = (
        struct.pack(">I", total) + b"lcms" + struct.pack(">I", 0x02100000) + b"prtr" + b"CMYK" + b"Lab "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 4 + b"\0" * 4 + b"\0" * 8
        + b"\0" * 8 + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 4
    )
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + body


def _palette_2x1(transparency: object | None = None, fmt: str = "PNG") -> bytes:
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.putpixel((1, 0), 1)
    return encode(p, fmt) if transparency is None else encode(p, fmt, transparency=transparency)


def _multiframe(fmt: str) -> bytes:
    frames = [Image.new("RGB", (4, 4), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:])


def good_images() -> dict[str, bytes]:
    """One small decodable image per mode / format (name -> encoded bytes)."""
    rgb = rgb_2x2()
    gray = Image.fromarray(np.array([[0, 64], [128, 255]], dtype=np.uint8))
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(np.array([[255, 128], [0, 255]], dtype=np.uint8)))
    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))
    cmyk.putpixel((1, 0), (255, 0, 0, 0))
    cmyk.putpixel((0, 1), (0, 0, 0, 255))
    i16 = Image.fromarray(np.array([[0, 65535], [257 * 100, 1000]], dtype=np.uint16))
    i32 = Image.fromarray(np.array([[-(2**31), 2**31 - 1], [0, 1]], dtype=np.int32))
    f32 = Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32))
    return {
        "png_rgb": encode(rgb, "PNG"),
        "png_rgba": encode(rgba, "PNG"),
        "png_l": encode(gray, "PNG"),
        "png_la": encode(rgba.convert("LA"), "PNG"),
        "png_1": encode(gray.convert("1"), "PNG"),
        "png_p": _palette_2x1(),
        "png_p_trns_index": _palette_2x1(transparency=1),
        "png_p_trns_bytes": _palette_2x1(transparency=b"\xff\x80"),
        "png_l_trns": encode(gray, "PNG", transparency=64),
        "png_rgb_trns": encode(rgb, "PNG", transparency=(10, 20, 30)),
        "png_i16": encode(i16, "PNG"),
        "png_1x1": encode(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG"),
        "png_5000x1": encode(Image.new("RGB", (5000, 1), (50, 100, 150)), "PNG"),
        "png_1x5000": encode(Image.new("L", (1, 5000), 77), "PNG"),
        "apng": _multiframe("PNG"),
        "jpeg_rgb": encode(photo_like(64, 48), "JPEG", quality=90),
        "jpeg_l": encode(gray.resize((16, 16)), "JPEG"),
        "jpeg_cmyk": encode(cmyk, "JPEG", quality=100),
        "jpeg_cmyk_icc": encode(cmyk, "JPEG", quality=100, icc_profile=cmyk_icc_profile()),
        "jpeg_progressive": encode(photo_like(64, 48, seed=1), "JPEG", progressive=True),
        "jpeg_exif_orientation_6": with_exif_orientation(photo_like(32, 16), 6),
        "gif": _palette_2x1(fmt="GIF"),
        "gif_trns": _palette_2x1(transparency=1, fmt="GIF"),
        "gif_animated": _multiframe("GIF"),
        "tiff_rgb": encode(rgb, "TIFF"),
        "tiff_rgb_lzw": encode(rgb, "TIFF", compression="tiff_lzw"),
        "tiff_cmyk": encode(cmyk, "TIFF"),
        "tiff_cmyk_icc": encode(cmyk, "TIFF", icc_profile=cmyk_icc_profile()),
        "tiff_i16": encode(i16, "TIFF"),
        "tiff_i32": encode(i32, "TIFF"),
        "tiff_f32": encode(f32, "TIFF"),
        "tiff_multipage": _multiframe("TIFF"),
        "bmp": encode(rgb, "BMP"),
        "bmp_rgba": encode(rgba, "BMP"),
        "webp_lossless": encode(rgba, "WEBP", lossless=True),
        "webp_lossy": encode(photo_like(32, 32), "WEBP"),
        "ico": encode(Image.new("RGBA", (16, 16), (1, 2, 3, 255)), "ICO", sizes=[(16, 16)]),
        "jpeg2000": encode(rgb, "JPEG2000"),
        "pbm_p4": encode(gray.convert("1"), "PPM"),
        "pgm_p5": encode(gray, "PPM"),
        "ppm_p6": encode(rgb, "PPM"),
        "pgm_p5_maxval_65535": b"P5\n2 1\n65535\n" + np.array([0, 65535], ">u2").tobytes(),
        "pgm_p5_maxval_1023": b"P5\n2 2\n1023\n" + np.array([0, 1023, 512, 1], ">u2").tobytes(),
        "pgm_p2_maxval_15": b"P2\n2 2\n15\n0 15\n7 8\n",
        "ppm_p6_maxval_1023": b"P6\n1 1\n1023\n" + np.array([0, 1023, 512], ">u2").tobytes(),
        "pfm": encode(f32, "PPM"),
    }


def broken_images() -> dict[str, bytes]:
    """One entry per kind of bad input (name -> bytes); each fails to decode."""
    png = encode(photo_like(64, 48), "PNG")
    jpeg = encode(photo_like(64, 48), "JPEG", quality=90)
    gif = encode(photo_like(64, 48).convert("P"), "GIF")
    bad_crc = bytearray(png)
    idat = bad_crc.index(b"IDAT")
    bad_crc[idat + 4 + 10] ^= 0xFF  # corrupt compressed data inside the first IDAT
    return {
        "empty": b"",
        "garbage": b"this is not an image, just some text bytes\n" * 3,
        "random_bytes": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated_png": png[: len(png) // 2],
        "truncated_png_header": png[:20],
        "truncated_jpeg": jpeg[: len(jpeg) // 2],
        "truncated_gif": gif[: len(gif) // 2],
        "corrupt_png_idat": bytes(bad_crc),
        "huge_header_png": png_with_declared_size(HUGE_SIDE, HUGE_SIDE),
        "heif_ftyp": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
        "heif_mif1_ftyp": b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic",
        "avif_ftyp_only": b"\x00\x00\x00\x14ftypavif\x00\x00\x00\x00avif",
        "pdf": b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n%%EOF\n",
        "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>',
        "png_signature_only": png[:8],
    }
