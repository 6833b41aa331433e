"""Image decoding (Pillow) and preprocessing into a model's float32 CHW input.

The per-image hot path is :func:`image_to_tensor` (and :func:`images_to_batch` for many):

1. :func:`decode`: open the bytes with Pillow (a fixed list of formats, :data:`FORMATS`),
   refuse images whose *header* declares more than ``max_pixels`` pixels (before any pixel
   is decoded), let large JPEGs decode at a reduced size (libjpeg DCT scaling, ``draft``),
   force the decode so that damaged and truncated files fail here, turn every pixel mode
   into 8-bit RGB (alpha composited onto a background colour), and apply the EXIF
   orientation (the mapping of :func:`PIL.ImageOps.exif_transpose`; corrupt EXIF is
   ignored, the pixels still decode).
2. :func:`preprocess`: resize and crop/pad per the :class:`~imgfeat.spec.Preprocessing`
   spec, then normalise each 8-bit value, ``(p / scale - mean[c]) / std[c]`` in float32,
   in the order torchvision's ``ToTensor`` + ``Normalize`` compute it (bit-identical).

Pixel-mode conventions (every mode becomes 8-bit RGB, nothing is clipped):

* ``1``, ``L``, ``P``, ``RGB``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's own conversion.
* Alpha (``RGBA``, ``LA``, ``PA``, ``La``, ``RGBa``, and ``P``/``L``/``RGB``/16-bit images
  with a ``tRNS`` transparency key): composited onto ``background``
  (``out = round((c * a + bg * (255 - a)) / 255)``), so colours stored under fully
  transparent pixels never reach the model.
* ``CMYK``: through the embedded ICC profile to sRGB (LittleCMS via :mod:`PIL.ImageCms`,
  perceptual intent) when the image carries one that LittleCMS accepts; otherwise
  Pillow's naive conversion (``R = 255 - min(255, C + K)``, and so on). Adobe-inverted CMYK
  JPEGs are un-inverted by Pillow on reading.
* 16-bit (``I;16``, ``I;16B``, ``I;16L``: 16-bit PNG, TIFF): ``round(v / 257)``,
  i.e. ``v * 255 / 65535``.
* 32-bit integer ``I``: mapped linearly from its declared range to 0..255. The declared
  range is the TIFF's ``BitsPerSample``/``SampleFormat`` (e.g. signed 32-bit:
  -2**31..2**31-1); for every other source (Netpbm with ``maxval`` > 255, which Pillow
  already rescales to 0..65535, or an ``I`` image built in memory) it is 0..65535. Values
  outside the declared range widen the range to the actual minimum/maximum (never clipped).
* ``F`` (32-bit float: TIFF, PFM): if every finite value lies in [0, 1], ``v * 255``;
  otherwise min-max over the finite values (a constant image outside [0, 1] becomes 0 if
  negative, else 255). NaN becomes 0, -inf 0, +inf 255.
* Netpbm ``maxval`` other than 255 or 65535 (e.g. 15, 1023): Pillow 10+ rescales samples by
  ``maxval`` itself (to 0..255 for ``maxval`` < 256, to 0..65535 for larger ones), which
  the 16-bit rule above then brings to 0..255.

Multi-frame images (GIF, APNG, animated WebP, multi-page TIFF, MPO): the first frame.

Untrusted data is held to limits before anything is decoded: ``max_pixels`` from the header
(an ICO's frames from their own PNG/BMP headers; Pillow's decompression-bomb limit is set to
``max_pixels`` while a file is opened, never lifted), at most :data:`MAX_JPEG_SCANS` scans in a
JPEG stream; AVIF is refused (see :data:`FORMATS`).

Warnings raised by Pillow while decoding (corrupt EXIF, decompression-bomb warnings, which
this module replaces by its own ``max_pixels`` check) are suppressed inside
:func:`decode`; :func:`warnings.catch_warnings` is process-global in Python 3.11, which is
fine in a PostgreSQL backend (one thread) but means :func:`decode` should not run in
several threads at once.
"""

from __future__ import annotations

import io
import math
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageFile, UnidentifiedImageError

from .errors import ImageDecodeError, ImageTooLargeError, ImgfeatError, InvalidParameterError
from .spec import Preprocessing

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "decode",
    "draft_size_for",
    "image_to_tensor",
    "images_to_batch",
    "preprocess",
    "to_rgb",
]

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest image (width x height, from its header) that :func:`decode` accepts: 50 megapixels.

It covers every common camera sensor (45-50 MP full-frame and medium-format-lite bodies,
50 MP phone sensors) while bounding one decode to about 150 MB as 8-bit RGB (200 MB for
RGBA before compositing) inside a PostgreSQL backend. It is lower than Pillow's own
decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, 89.5 MP by default): the limit here is
checked from the header, whatever Pillow's global is set to (which is set to ``max_pixels``
only while a file is opened, then restored)."""

FORMATS: tuple[str, ...] = (
    "JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "JPEG2000", "ICO",
)
"""Pillow formats :func:`decode` tries, in order (MPO, the multi-picture JPEG of some
cameras, is opened by the JPEG plugin). Formats that run external programs (EPS through
Ghostscript) or have no reliable signature (TGA) are left out. AVIF is refused (since 0.3.0's
second security round): Pillow takes its size from the container's ``ispe`` box, but libavif
decodes the AV1 frame at the frame's own size (up to 16384x16384), so the pixel limit could not
be enforced before decoding. ICO frames are checked from their own PNG/BMP headers before
Pillow opens the file (Pillow decodes an ICO's frame inside ``Image.open``)."""

SUPPORTED = "JPEG, PNG, GIF, BMP, TIFF, WebP, PBM/PGM/PPM/PFM, JPEG 2000, ICO"
"""The accepted formats, as named in error messages."""

MAX_JPEG_SCANS = 100
"""Most scans (SOS markers) accepted in one JPEG stream (JPEG, the first frame of an MPO, each
strip or tile of a JPEG-compressed TIFF), counted from the bytes before anything is decoded.

libjpeg decodes a progressive JPEG scan by scan, walking every block of the image for each
one, in C, where no cancel or ``statement_timeout`` reaches it; a scan header costs about 10
bytes, so a small file can repeat it thousands of times and hold a backend for minutes (a
"scan bomb"; libjpeg-turbo's ``TJPARAM_SCANLIMIT`` / ``djpeg -maxscans`` exist to bound it).
Baseline JPEGs have 1 scan per stream (3 when the components are stored separately), libjpeg's
progressive scripts 6 (gray) or 10 (color), optimised encoders (mozjpeg, jpegtran
``-optimize``) a few dozen at most; 100 scans over a 50-megapixel image decode in well under a
second."""

DRAFT_TOLERANCE = 0.01
"""Bound on the mean absolute difference, in normalised (ImageNet mean/std) units, between the
tensor of a JPEG decoded at reduced size (``draft``: libjpeg scales the DCT by 1/2, 1/4 or
1/8, then Pillow resizes) and that of the full decode, for the ResNet spec (JPEG quality 90).
A JPEG is drafted only to :data:`DRAFT_GAP` times its resize size, the resize target is
computed from the full size (:data:`ORIGINAL_SIZE`) and resampled from the box the full
image covers (:data:`CONTENT_BOX`). Measured on photo-like images (smooth content, sensor-like
noise sigma=3) and with heavy per-pixel noise (sigma=30): 2000x1500 0.0025 / 0.0081,
2707x1800 0.0023 / 0.0057, 3001x2001 0.0021 / 0.0047, 4001x3001 0.0027 / 0.0062 (one 8-bit
level is about 0.017 in these units). ``draft=False`` turns it off.
Tested in ``tests/py/unit/test_image_draft.py``."""

ORIGINAL_SIZE = "imgfeat.original_size"
"""Key in ``Image.info`` of a JPEG decoded at reduced size (draft): its full ``(width,
height)`` in display orientation. The resize target is computed from it, as torchvision
computes it from the full image (``int(256 * 1353 / 900) = 384``, where the drafted 677x450
would give 385), so drafting changes only how the pixels are sampled, not the geometry."""

CONTENT_BOX = "imgfeat.content_box"
"""Key in ``Image.info`` of a drafted JPEG: the ``(left, top, right, bottom)`` box, in its
pixels and display orientation, that the full image covers. libjpeg rounds a reduced size
up (1001 / 2 -> 501 pixels for 500.5 pixels' worth of image: Pillow's ``draft`` returns the
box), so the image is resized from this box, not from its last, partly padded, pixel."""


def _transposed_box(box: tuple[float, float, float, float], size: tuple[int, int], orientation: int
                    ) -> tuple[float, float, float, float]:
    """``box`` (left, top, right, bottom) of an image of ``size`` before the EXIF ``orientation``
    transposition, in the coordinates after it."""
    w, h = size
    maps = {
        2: lambda x, y: (w - x, y), 3: lambda x, y: (w - x, h - y), 4: lambda x, y: (x, h - y),
        5: lambda x, y: (y, x), 6: lambda x, y: (h - y, x), 7: lambda x, y: (h - y, w - x), 8: lambda x, y: (y, w - x),
    }
    f = maps.get(orientation)
    if f is None:
        return box
    (x0, y0), (x1, y1) = f(box[0], box[1]), f(box[2], box[3])
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


MAX_INTERMEDIATE_PIXELS = 4_000_000
"""For ``isocrop``, the resized-but-uncropped image is materialised (as torchvision does)
only up to this many pixels; beyond (aspect ratios past about 60:1 at ``resize_size=256``),
only the crop window is resampled (Pillow ``resize(box=...)``), which equals the full
resize up to a few 8-bit levels."""

_INTERPOLATIONS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ORIENTATION_SWAPS_AXES = frozenset({5, 6, 7, 8})
_TRANSPOSE: dict[int, Image.Transpose] = {  # EXIF orientation -> transpose, as ImageOps.exif_transpose
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_PIL_LIMIT_LOCK = threading.Lock()

Color = tuple[int, int, int]


# --------------------------------------------------------------------------- decoding


def decode(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
    background: Color = (255, 255, 255),
) -> Image.Image:
    """Decode image bytes into an 8-bit RGB :class:`PIL.Image.Image` (mode ``"RGB"``).

    Args:
        data: the encoded image (any bytes-like object).
        max_pixels: largest ``width * height`` accepted, read from the header before decoding
            (:data:`DEFAULT_MAX_PIXELS`).
        draft_size: ``(width, height)`` the decoded image must still cover, in display
            orientation (after EXIF rotation). A JPEG larger than twice that decodes at 1/2,
            1/4 or 1/8 scale (libjpeg DCT scaling); other formats ignore it.
        background: RGB colour (0..255) that transparent pixels are composited onto.

    Returns:
        The first frame, EXIF orientation applied, as mode ``RGB``; see the module docstring
        for how each pixel mode maps to 8-bit RGB.

    Raises:
        ImageTooLargeError: the header (or an ICO frame's own header) declares more than
            ``max_pixels`` pixels.
        ImageDecodeError: empty, unrecognised, unsupported (e.g. HEIF, AVIF), damaged or truncated
            data, or a JPEG stream of more than :data:`MAX_JPEG_SCANS` scans; the message says
            which (Pillow's own message is in ``detail``).
        InvalidParameterError: ``max_pixels`` < 1 or a bad ``background``.
    """
    fixed = None if draft_size is None else (max(1, int(draft_size[0])), max(1, int(draft_size[1])))
    return _decode(data, max_pixels, _check_color(background, "background"), lambda w, h: fixed)


def _decode(
    data: bytes,
    max_pixels: int,
    background: Color,
    draft_for: Callable[[int, int], tuple[int, int] | None],
    keep_gray: bool = False,
) -> Image.Image:
    """:func:`decode`; with ``keep_gray`` an opaque 8-bit gray image stays mode ``L`` (the
    preprocessing hot path resamples one band instead of three: same pixels)."""
    if max_pixels < 1:
        raise InvalidParameterError(f"max_pixels must be positive, not {max_pixels}")
    if data is None:
        raise ImageDecodeError("image is NULL")
    n = len(data)
    if n == 0:
        raise ImageDecodeError("image is empty (0 bytes)")
    fast = _decode_netpbm(data, max_pixels)
    if fast is not None:
        return fast if keep_gray or fast.mode == "RGB" else fast.convert("RGB")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = _open(data, max_pixels)
        fmt = img.format or "image"
        jpeg = fmt in ("JPEG", "MPO")
        orientation = 1
        original: tuple[int, int] | None = None
        drafted: tuple[float, float, float, float] | None = None
        try:
            if jpeg:  # only libjpeg can decode at a reduced size; it needs the orientation first
                orientation = _orientation(img)
                original = _oriented(img.size, orientation)
                size = draft_for(*original)
                if size is not None:
                    if orientation in _ORIENTATION_SWAPS_AXES:
                        size = (size[1], size[0])
                    done = img.draft("RGB", (max(1, size[0]), max(1, size[1])))
                    if done is not None and done[1] is not None and img.size != _oriented(original, orientation):
                        drafted = tuple(float(v) for v in done[1])  # type: ignore[assignment]
            img.load()  # decode now, so that damaged and truncated data fail here
        except ImageDecodeError:
            raise
        except MemoryError:
            raise
        except Exception as e:  # Pillow plugins raise OSError, SyntaxError, ValueError, EOFError, ...
            raise _load_error(e, fmt, n) from e
        try:
            if not jpeg:
                orientation = _orientation(img)
            if keep_gray and img.mode == "L" and "transparency" not in img.info:
                rgb = img
            else:
                rgb = to_rgb(img, background)
            method = _TRANSPOSE.get(orientation)
            out = rgb if method is None else rgb.transpose(method)
            if drafted is not None and original is not None:  # decoded at reduced size
                out.info[ORIGINAL_SIZE] = original
                out.info[CONTENT_BOX] = _transposed_box(drafted, rgb.size, orientation)
            return out
        except ImageDecodeError:
            raise
        except MemoryError:
            raise
        except Exception as e:
            raise ImageDecodeError(
                f"could not convert {fmt} image (mode {img.mode}) to RGB", detail=str(e)
            ) from e


_NETPBM_HEADER = re.compile(rb"\AP([2356])[ \t\n\r\v\f]+(\d{1,9})[ \t\n\r\v\f]+(\d{1,9})[ \t\n\r\v\f]+(\d{1,3})[ \t\n\r\v\f]")
_NETPBM_TOKEN_BYTES = b"0123456789 \t\n\r\v\f"


def _decode_netpbm(data: bytes, max_pixels: int) -> Image.Image | None:
    """Netpbm images that Pillow decodes in pure Python, decoded with numpy instead.

    Pillow reads plain (ASCII) PGM/PPM (``P2``, ``P3``; e.g. the CMU faces) and binary ones
    whose ``maxval`` is not 255 (``P5``, ``P6``) one sample at a time in Python: about 20 ms
    for a 128x120 face, more than resizing and normalising it. This reads the same samples
    with numpy and rescales them exactly as Pillow does (``round(v / maxval * 255)`` in
    float64, ties to even; binary samples above ``maxval`` clip to 255), so the pixels are
    identical.

    Returns:
        A mode ``L`` (P2, P5) or ``RGB`` (P3, P6) image, or ``None`` whenever Pillow should
        decide: comments, ``maxval`` 0 or above 255 (16-bit), binary ``maxval`` 255 (already
        fast in Pillow), characters other than digits and whitespace in plain data, too few
        samples, a sample above ``maxval``, a token Pillow finds too long, too many pixels.
        Pillow then decodes it (or raises the usual error).
    """
    if not isinstance(data, bytes) or data[:1] != b"P":
        return None
    m = _NETPBM_HEADER.match(data)
    if m is None:
        return None
    kind = m.group(1)
    width, height, maxval = int(m.group(2)), int(m.group(3)), int(m.group(4))
    if not 1 <= maxval <= 255 or width < 1 or height < 1 or width * height > max_pixels:
        return None
    bands = 3 if kind in (b"3", b"6") else 1
    count = width * height * bands
    body = data[m.end():]
    if kind in (b"2", b"3"):
        if body.translate(None, _NETPBM_TOKEN_BYTES) or b"00000000" in body:
            return None  # comments, signs, garbage, or a token longer than Pillow's 10 characters
        if len(body) < 2 * count - 1:
            return None  # too short to hold count samples
        values = np.fromstring(body, dtype=np.int64, sep=" ")  # digits and whitespace only: no warning
        if values.size < count:
            return None
        values = values[:count]
        if int(values.max()) > maxval:
            return None
        pixels = values if maxval == 255 else np.round(values / maxval * 255)
    else:
        if maxval == 255 or len(body) < count:
            return None
        pixels = np.minimum(np.round(np.frombuffer(body, np.uint8, count) / maxval * 255), 255)
    shape = (height, width, 3) if bands == 3 else (height, width)
    return Image.fromarray(pixels.astype(np.uint8).reshape(shape))  # uint8 [H, W] -> L, [H, W, 3] -> RGB


def _open(data: bytes, max_pixels: int) -> ImageFile.ImageFile:
    """Image.open restricted to FORMATS, held to ``max_pixels`` before anything is decoded.

    Checks, in order: an ICO's frames from their own PNG/BMP headers (Pillow decodes the frame
    inside ``Image.open``); a JPEG's number of scans (:data:`MAX_JPEG_SCANS`); then Pillow opens
    the header with its decompression-bomb limit set to ``max_pixels`` for the call (Pillow
    refuses more than twice its limit by itself; between once and twice, the check below
    refuses with the header's size). Pillow's limit is never lifted.
    """
    _check_ico_frames(data, max_pixels)
    _check_jpeg_scans(data)
    try:
        with _PIL_LIMIT_LOCK:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                img = Image.open(io.BytesIO(data), formats=FORMATS)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError as e:
        raise _unidentified_error(data) from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _bomb_error(e, max_pixels) from e
    except MemoryError:
        raise
    except ImgfeatError:
        raise
    except Exception as e:
        raise _load_error(e, None, len(data)) from e
    if img.format == "TIFF":
        _check_tiff_jpeg_scans(img, data)
    width, height = img.size
    if width * height > max_pixels:
        raise _too_large(width, height, max_pixels, f"{img.format} header declares {width}x{height} pixels; nothing was decoded")
    if width < 1 or height < 1:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")
    return img


def _too_large(width: int, height: int, max_pixels: int, detail: str) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"image is too large: {width}x{height} ({_pixels(width * height)}) "
        f"exceeds the limit of {_pixels(max_pixels)}",
        detail=detail,
        hint="downscale the image before storing it, or raise max_pixels",
    )


_BOMB_PIXELS = re.compile(r"Image size \((\d+) pixels\)")


def _bomb_error(e: BaseException, max_pixels: int) -> ImageTooLargeError:
    """Pillow's own header check (its limit set to ``max_pixels``) refused the image."""
    m = _BOMB_PIXELS.search(str(e))
    declared = f"{_pixels(int(m.group(1)))} " if m else ""
    return ImageTooLargeError(
        f"image is too large: {declared}exceeds the limit of {_pixels(max_pixels)}",
        detail=f"{e}; nothing was decoded",
        hint="downscale the image before storing it, or raise max_pixels",
    )


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_ico_frames(data: bytes, max_pixels: int) -> None:
    """Refuse an ICO any of whose frames is larger than ``max_pixels``, from the frames' own headers.

    An ICO's directory declares each frame's size in one byte per side (at most 256x256), but a
    frame is a whole PNG or a BMP (DIB) of its own size, which Pillow decodes inside
    ``Image.open`` (before any size check of ours). Each frame's real size is read here: the
    PNG's IHDR, or the DIB header's width and half its height (the XOR and AND masks). A frame
    whose header lies outside the data is left to Pillow (it fails as damaged or truncated).
    """
    head = bytes(data[:6])
    if len(head) < 6 or head[:4] not in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00"):
        return
    count = int.from_bytes(head[4:6], "little")
    for k in range(count):
        entry = bytes(data[6 + 16 * k : 22 + 16 * k])
        if len(entry) < 16:
            return
        offset = int.from_bytes(entry[12:16], "little")
        frame = bytes(data[offset : offset + 24])
        if frame[:8] == _PNG_MAGIC and len(frame) >= 24:
            width, height = int.from_bytes(frame[16:20], "big"), int.from_bytes(frame[20:24], "big")
            kind = "PNG"
        elif len(frame) >= 12 and int.from_bytes(frame[0:4], "little") == 12:  # OS/2 BITMAPCOREHEADER
            width = int.from_bytes(frame[4:6], "little")
            height = int.from_bytes(frame[6:8], "little") // 2
            kind = "BMP"
        elif len(frame) >= 12:
            width = abs(int.from_bytes(frame[4:8], "little", signed=True))
            height = abs(int.from_bytes(frame[8:12], "little", signed=True)) // 2
            kind = "BMP"
        else:
            continue
        if width * height > max_pixels:
            raise _too_large(
                width, height, max_pixels,
                f"ICO frame {k + 1} of {count} is a {kind} of {width}x{height} pixels "
                f"(the directory says {entry[0] or 256}x{entry[1] or 256}); nothing was decoded",
            )


_JPEG_MARKER = re.compile(rb"\xff+([^\x00\xff])", re.DOTALL)
_JPEG_SCAN_END = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")  # a marker other than RSTn ends entropy-coded data
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length

MAX_JPEG_SEGMENTS = 10_000
"""Most marker segments :func:`_jpeg_scans` walks in one JPEG stream before refusing it (real
JPEGs have a few dozen; the walk is Python, so a file of millions of 4-byte comment segments
would otherwise keep it busy for seconds)."""


def _jpeg_scans(data: bytes, start: int = 0, end: int | None = None) -> int:
    """The number of scans (SOS markers) in the JPEG stream at ``data[start:end]``, up to its EOI.

    Walks the marker segments by their lengths (so that a thumbnail inside APP1 does not count),
    and from each SOS skips the entropy-coded data to the next marker (0xFF followed by a byte
    other than 0x00 or a restart marker). Stops at the first inconsistency: the decoder will
    report what is wrong with the data.
    """
    stop = len(data) if end is None else min(end, len(data))
    scans = 0
    segments = 0
    i = start + 2  # after SOI
    while i < stop:
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise ImageDecodeError(
                f"JPEG has too many marker segments: more than {MAX_JPEG_SEGMENTS}",
                detail="counted before decoding; real JPEGs have a few dozen",
                hint="re-encode the image",
            )
        m = _JPEG_MARKER.match(data, i, stop)
        if m is None:
            return scans
        marker = m.group(1)[0]
        i = m.end()
        if marker == 0xD9:  # EOI
            return scans
        if marker in _STANDALONE:
            continue
        if i + 2 > stop:
            return scans
        i += int.from_bytes(data[i : i + 2], "big")
        if marker == 0xDA:  # SOS: entropy-coded data follows, up to the next real marker
            scans += 1
            if scans > MAX_JPEG_SCANS:
                return scans
            m = _JPEG_SCAN_END.search(data, i, stop)
            if m is None:
                return scans
            i = m.start()
    return scans


def _scan_error(scans: int, where: str) -> ImageDecodeError:
    return ImageDecodeError(
        f"JPEG has too many scans: more than {MAX_JPEG_SCANS} in {where}",
        detail=f"counted {scans} scans (SOS markers) before decoding; real progressive JPEGs have about 10, "
        "and each scan makes the decoder walk the whole image again (a scan bomb)",
        hint="re-encode the image (e.g. as a baseline JPEG)",
    )


def _check_jpeg_scans(data: bytes) -> None:
    """Refuse a JPEG (or MPO: its first frame) with more than :data:`MAX_JPEG_SCANS` scans."""
    if bytes(data[:3]) != b"\xff\xd8\xff":
        return
    raw = data if isinstance(data, bytes) else bytes(data)
    scans = _jpeg_scans(raw)
    if scans > MAX_JPEG_SCANS:
        raise _scan_error(scans, "the image")


def _check_tiff_jpeg_scans(img: ImageFile.ImageFile, data: bytes) -> None:
    """Refuse a JPEG-compressed TIFF one of whose strips or tiles has more than :data:`MAX_JPEG_SCANS` scans."""
    tags = getattr(img, "tag_v2", None)
    if tags is None or tags.get(259) not in (6, 7):  # Compression: old-style JPEG, JPEG
        return
    raw = data if isinstance(data, bytes) else bytes(data)
    for offsets_tag, counts_tag, what in ((273, 279, "strip"), (324, 325, "tile")):
        offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
        if offsets is None or counts is None:
            continue
        offsets = offsets if isinstance(offsets, tuple) else (offsets,)
        counts = counts if isinstance(counts, tuple) else (counts,)
        for k, (offset, count) in enumerate(zip(offsets, counts)):
            offset, count = int(offset), int(count)
            if raw[offset : offset + 2] != b"\xff\xd8":
                continue
            scans = _jpeg_scans(raw, offset, offset + count)
            if scans > MAX_JPEG_SCANS:
                raise _scan_error(scans, f"TIFF {what} {k + 1}")


def _pixels(n: int) -> str:
    return f"{n / 1e6:.1f} megapixels" if n >= 100_000 else f"{n} pixels"


def _unidentified_error(data: bytes) -> ImageDecodeError:
    """Name formats Pillow cannot read (HEIF, JPEG XL, PDF, ...) instead of a generic message."""
    head = bytes(data[:64])
    what: str | None = None
    if head[4:8] == b"ftyp":
        brands = {head[8:12]} | {head[i:i + 4] for i in range(16, min(len(head), _box_end(head)), 4)}
        if brands & _HEIF_BRANDS:
            what = "HEIF"
        elif brands & _AVIF_BRANDS:
            return ImageDecodeError(
                "unsupported image format AVIF",
                detail="AVIF is refused: its decoder decodes the AV1 frame at the frame's own size, "
                "whatever the container declares, so the pixel limit cannot be checked before decoding",
                hint=f"convert it to one of: {SUPPORTED}",
            )
        else:
            what = f"ISO media ({head[8:12].decode('latin-1')!r})"
    elif head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        what = "JPEG XL"
    elif head.startswith(b"%PDF"):
        what = "PDF"
    elif head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        what = "PostScript/EPS"
    elif head.startswith(b"8BPS"):
        what = "Photoshop PSD"
    elif b"<svg" in bytes(data[:1024]).lower():
        what = "SVG"
    supported = SUPPORTED
    if what is not None:
        return ImageDecodeError(
            f"unsupported image format {what}", hint=f"convert it to one of: {supported}"
        )
    return ImageDecodeError(
        "not a recognised image format",
        detail=f"{len(data)} bytes starting with {head[:8].hex(' ')}",
        hint=f"supported formats: {supported}",
    )


def _box_end(head: bytes) -> int:
    size = int.from_bytes(head[0:4], "big")
    return size if 16 <= size <= len(head) else len(head)


def _load_error(e: BaseException, fmt: str | None, n: int) -> ImageDecodeError:
    msg = str(e) or type(e).__name__
    what = f"{fmt}: {msg}" if fmt else msg
    if isinstance(e, Image.DecompressionBombError):
        return ImageTooLargeError("image is too large to decode", detail=what)
    low = msg.lower()
    if isinstance(e, EOFError) or "truncated" in low or "reached eof" in low or "end of file" in low:
        return ImageDecodeError(f"truncated image data ({n} bytes)", detail=what)
    return ImageDecodeError(
        f"damaged {fmt} image data ({n} bytes)" if fmt else f"damaged image header ({n} bytes)",
        detail=what,
    )


def _orientation(img: Image.Image) -> int:
    """The EXIF (or XMP) orientation tag, 1..8; 1 when absent or unreadable."""
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
        value = int(value)
    except Exception:  # corrupt EXIF must not make a readable image unusable
        return 1
    return value if 1 <= value <= 8 else 1


def _oriented(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in _ORIENTATION_SWAPS_AXES else size


# --------------------------------------------------------------------------- pixel modes


def to_rgb(img: Image.Image, background: Color = (255, 255, 255)) -> Image.Image:
    """Convert a loaded image of any Pillow mode to 8-bit ``RGB``; see the module docstring.

    Raises:
        ImageDecodeError: a mode Pillow cannot convert to RGB.
    """
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        gray, alpha = _high_depth_to_l(img)
        rgb = Image.fromarray(gray).convert("RGB")
        if alpha is not None:
            rgba = rgb.copy()
            rgba.putalpha(Image.fromarray(alpha))
            return _composite(rgba, background)
        return rgb
    if mode == "CMYK":
        return _cmyk_to_rgb(img)
    if mode in _ALPHA_MODES or "transparency" in img.info:
        return _composite(img.convert("RGBA"), background)
    try:
        return img.convert("RGB")
    except ValueError as e:
        raise ImageDecodeError(f"unsupported pixel mode {mode}", detail=str(e)) from e


def _composite(rgba: Image.Image, background: Color) -> Image.Image:
    """``round((c * a + bg * (255 - a)) / 255)`` per channel (Pillow's masked paste)."""
    out = Image.new("RGB", rgba.size, background)
    out.paste(rgba, (0, 0), rgba.getchannel("A"))
    return out


def _high_depth_to_l(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """16-bit, 32-bit integer and float gray to uint8 [H, W], plus an alpha mask from tRNS.

    Scaled in blocks of rows (:data:`_BLOCK_ELEMENTS` values at a time, float64 as a whole-image
    computation would be, with the same result): a 50-megapixel float image needs a few
    hundred MB, not several GB of float64 temporaries."""
    arr = np.asarray(img)
    mode = img.mode
    gray = np.empty(arr.shape, np.uint8)
    if mode in _SIXTEEN_BIT_MODES:
        for block, out in _row_blocks(arr, gray):
            out[...] = (block.astype(np.uint32) + 128) // 257  # == round(v / 257)
    elif mode == "I":
        lo, hi = _declared_range(img)
        if arr.size:
            lo, hi = min(lo, int(arr.min())), max(hi, int(arr.max()))
        for block, out in _row_blocks(arr, gray):
            out[...] = np.rint((block.astype(np.float64) - lo) * (255.0 / (hi - lo)))
    else:
        _float_to_u8(arr, gray)
    alpha = None
    t = img.info.get("transparency")
    if isinstance(t, int) and mode != "F":
        alpha = np.where(arr == t, 0, 255).astype(np.uint8)
    return gray, alpha


_BLOCK_ELEMENTS = 1 << 20
"""Values converted at a time by :func:`_high_depth_to_l` (8 MB of float64)."""


def _row_blocks(arr: np.ndarray, out: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(arr[rows], out[rows])`` for consecutive blocks of rows of about :data:`_BLOCK_ELEMENTS` values."""
    step = max(1, _BLOCK_ELEMENTS // max(1, arr.shape[1] if arr.ndim > 1 else 1))
    for start in range(0, arr.shape[0], step):
        yield arr[start : start + step], out[start : start + step]


def _declared_range(img: Image.Image) -> tuple[int, int]:
    tags = getattr(img, "tag_v2", None)
    if img.format == "TIFF" and tags is not None:
        bits = tags.get(258, (32,))
        bits = int(bits[0] if isinstance(bits, tuple) else bits)
        sample_format = tags.get(339, (1,))
        sample_format = int(sample_format[0] if isinstance(sample_format, tuple) else sample_format)
        if sample_format == 2:
            return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        return 0, 2**bits - 1
    return 0, 65535


def _float_to_u8(arr: np.ndarray, gray: np.ndarray) -> None:
    """Float gray into ``gray`` (uint8, same shape): [0, 1] images times 255, others stretched
    from their finite minimum to maximum; NaN is 0, +-inf clip to 255 and 0."""
    lo, hi = math.inf, -math.inf
    for block, _ in _row_blocks(arr, gray):
        finite = block[np.isfinite(block)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    if lo > hi:  # no finite value at all
        gray[...] = 0
        return
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    for block, out in _row_blocks(arr, gray):
        values = block.astype(np.float64)
        if hi > lo:
            scaled = (values - lo) * (255.0 / (hi - lo))
        else:  # constant image outside [0, 1]
            scaled = np.full(values.shape, 0.0 if lo < 0 else 255.0)
        scaled[np.isnan(scaled)] = 0.0
        out[...] = np.rint(np.clip(scaled, 0.0, 255.0))  # clip only touches +-inf


@lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=8)
def _cmyk_transform(icc: bytes) -> ImageCms.ImageCmsTransform | None:
    """A CMYK -> sRGB transform for an embedded profile (cached: building one takes ms)."""
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.buildTransform(src, _srgb_profile(), "CMYK", "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    icc = img.info.get("icc_profile")
    if icc:
        transform = _cmyk_transform(bytes(icc))
        if transform is not None:
            try:
                return ImageCms.applyTransform(img, transform)
            except (ImageCms.PyCMSError, ValueError):
                pass
    return img.convert("RGB")


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Geometry:
    """Resize the (oriented) image to ``size``; copy ``resized[src_y:src_y+h, src_x:src_x+w]``
    into ``out[:, dst_y:dst_y+h, dst_x:dst_x+w]``; the rest of ``out`` is the pad colour."""

    size: tuple[int, int]
    src_x: int
    src_y: int
    dst_x: int
    dst_y: int
    w: int
    h: int


def _torchvision_resize_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision ``Resize(size)`` with an int: shorter side -> size, longer side
    ``int(size * long / short)`` (``transforms.functional._compute_resized_output_size``)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _center(size: int, target: int) -> tuple[int, int, int]:
    """Per axis (src offset, dst offset, length) of torchvision's ``center_crop``: crop at
    ``int(round((size - target) / 2.0))``, or pad by ``(target - size) // 2`` before."""
    if target > size:
        return 0, (target - size) // 2, size
    return int(round((size - target) / 2.0)), 0, target


def _geometry(spec: Preprocessing, width: int, height: int) -> _Geometry:
    W, H = spec.width, spec.height
    if spec.resize == "aniso":
        return _Geometry((W, H), 0, 0, 0, 0, W, H)
    if spec.resize == "isopad":
        scale = min(W / width, H / height)
        nw = min(W, max(1, round(width * scale)))
        nh = min(H, max(1, round(height * scale)))
        return _Geometry((nw, nh), 0, 0, (W - nw) // 2, (H - nh) // 2, nw, nh)
    if spec.resize_size is not None:
        nw, nh = _torchvision_resize_size(width, height, spec.resize_size)
    elif W / width >= H / height:  # cover W x H with no margin
        nw, nh = W, max(H, int(height * W / width))
    else:
        nw, nh = max(W, int(width * H / height)), H
    sx, dx, w = _center(nw, W)
    sy, dy, h = _center(nh, H)
    return _Geometry((nw, nh), sx, sy, dx, dy, w, h)


def draft_size_for(spec: Preprocessing, width: int, height: int) -> tuple[int, int]:
    """The ``(width, height)`` the image is resized to before cropping or padding.

    This is what a reduced-size (draft) JPEG decode must still cover: for ``isocrop`` the
    torchvision ``Resize(resize_size)`` size (e.g. 341x256 for a 4:3 image at 256), for
    ``isopad`` the fitted size, for ``aniso`` the input size.

    Args:
        spec: the preprocessing spec.
        width, height: the image size in pixels, in display orientation.
    """
    if width < 1 or height < 1:
        raise InvalidParameterError(f"image size must be positive, not {width}x{height}")
    return _geometry(spec, width, height).size


# --------------------------------------------------------------------------- tensors


@dataclass(frozen=True)
class _SpecConstants:
    scale: np.float32  # ToTensor's divisor (255)
    mean: tuple[np.float32, np.float32, np.float32]  # per output channel
    std: tuple[np.float32, np.float32, np.float32]  # per output channel
    bands: tuple[int, int, int]  # source RGB band for each output channel
    pad: tuple[float, float, float]  # normalised pad colour per output channel
    resample: Image.Resampling

    def normalise(self, pixels: np.ndarray, c: int, out: np.ndarray) -> None:
        """``out = (pixels / scale - mean[c]) / std[c]``, float32 throughout, as torchvision computes
        it (``ToTensor`` then ``Normalize``); ``pixels`` uint8 [h, w] or float32 already divided."""
        if pixels.dtype != np.float32:
            np.divide(pixels, self.scale, out=out, dtype=np.float32)
            pixels = out
        np.subtract(pixels, self.mean[c], out=out)
        np.divide(out, self.std[c], out=out)


@lru_cache(maxsize=64)
def _constants(spec: Preprocessing) -> _SpecConstants:
    """Per-spec constants: the normalisation's float32 constants and the resampling filter.

    Normalisation is computed like torchvision (float32 throughout): ``ToTensor`` divides by
    255 in float32, ``Normalize`` subtracts and divides by float32 mean/std. (Elementwise
    arithmetic: faster than a 256-entry lookup table, and bit-identical to it.)
    """
    try:
        resample = _INTERPOLATIONS[spec.interpolation.lower()]
    except KeyError:
        raise InvalidParameterError(
            f"unknown interpolation {spec.interpolation!r}",
            hint=f"use one of {', '.join(_INTERPOLATIONS)}",
        ) from None
    bands = (0, 1, 2) if spec.channel_order == "RGB" else (2, 1, 0)
    scale = np.float32(spec.scale)
    mean = tuple(np.float32(spec.mean[c]) for c in range(3))
    std = tuple(np.float32(spec.std[c]) for c in range(3))
    pad_rgb = _check_color(spec.pad_color, "pad_color")
    pad = tuple(float((np.float32(pad_rgb[bands[c]]) / scale - mean[c]) / std[c]) for c in range(3))
    return _SpecConstants(scale, mean, std, bands, pad, resample)  # type: ignore[arg-type]


def _check_color(color: Sequence[int], name: str) -> Color:
    if len(color) != 3 or any(not 0 <= int(v) <= 255 for v in color):
        raise InvalidParameterError(f"{name} must be three integers 0..255, not {tuple(color)!r}")
    return int(color[0]), int(color[1]), int(color[2])


def preprocess(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """Resize, crop/pad and normalise a decoded image into the model input.

    Args:
        image: a PIL image, normally mode ``RGB`` from :func:`decode` (other modes are
            converted as :func:`decode` does, onto ``spec.background``).
        spec: the preprocessing spec. ``isocrop`` equals torchvision's
            ``Resize(resize_size)`` + ``CenterCrop((height, width))`` (Pillow resampling,
            which antialiases when shrinking, as torchvision's PIL path does);
            ``isopad`` fits the whole image, centred, padding with ``pad_color``;
            ``aniso`` stretches to the input size.

    Returns:
        float32 array [3, spec.height, spec.width], C-contiguous, channels in
        ``spec.channel_order``, values ``(p / scale - mean[c]) / std[c]``.

    Raises:
        InvalidParameterError: unknown interpolation or bad pad colour in the spec.
    """
    out = np.empty((3, spec.height, spec.width), dtype=np.float32)
    _preprocess_into(image, spec, out)
    return out


def _preprocess_into(image: Image.Image, spec: Preprocessing, out: np.ndarray) -> None:
    plan = _constants(spec)
    gray = image.mode == "L" and "transparency" not in image.info
    original = image.info.get(ORIGINAL_SIZE) or image.size  # the geometry of the full image (draft)
    content = image.info.get(CONTENT_BOX)
    if not gray and (image.mode != "RGB" or "transparency" in image.info):
        image = to_rgb(image, _check_color(spec.background, "background"))
    width, height = image.size
    left, top, right, bottom = content or (0.0, 0.0, float(width), float(height))
    g = _geometry(spec, *original)
    nw, nh = g.size
    if nw * nh > MAX_INTERMEDIATE_PIXELS and (g.w, g.h) != (nw, nh):
        # Pathological aspect ratio: resample only the crop window.
        fx, fy = (right - left) / nw, (bottom - top) / nh
        box = (left + g.src_x * fx, top + g.src_y * fy, left + (g.src_x + g.w) * fx, top + (g.src_y + g.h) * fy)
        region = image.resize((g.w, g.h), plan.resample, box=box)
    else:
        if content is not None:
            resized = image.resize((nw, nh), plan.resample, box=content)
        else:
            resized = image.resize((nw, nh), plan.resample) if (nw, nh) != (width, height) else image
        if (g.src_x, g.src_y, g.w, g.h) != (0, 0, nw, nh):
            resized = resized.crop((g.src_x, g.src_y, g.src_x + g.w, g.src_y + g.h))
        region = resized
    pixels = np.asarray(region)  # uint8 [h, w, 3], or [h, w] for gray (L resamples like each band of RGB)
    full = (g.dst_x, g.dst_y, g.w, g.h) == (0, 0, spec.width, spec.height)
    if gray:  # one division for the three channels
        pixels = np.divide(pixels, plan.scale, dtype=np.float32)
    for c in range(3):
        if not full:
            out[c].fill(plan.pad[c])
        target = out[c, g.dst_y:g.dst_y + g.h, g.dst_x:g.dst_x + g.w]
        plan.normalise(pixels if gray else pixels[:, :, plan.bands[c]], c, target)


DRAFT_GAP = 2.0
"""A JPEG is decoded at reduced size only down to this many times the size it is then resized
to (Pillow's ``reducing_gap`` idea in ``Image.thumbnail``): the final resize still averages
over at least 2x2 decoded pixels, so drafting changes the result little even on noisy images
and odd sizes. ``draft_size_for`` gives the resize size itself."""


def _draft_target(spec: Preprocessing, width: int, height: int) -> tuple[int, int]:
    nw, nh = _geometry(spec, width, height).size
    return math.ceil(nw * DRAFT_GAP), math.ceil(nh * DRAFT_GAP)


def _decode_for(data: bytes, spec: Preprocessing, max_pixels: int, draft: bool = True) -> Image.Image:
    """Decode for :func:`_preprocess_into`: RGB, or L for opaque 8-bit gray."""
    return _decode(
        data, max_pixels, _check_color(spec.background, "background"),
        (lambda w, h: _draft_target(spec, w, h)) if draft else (lambda w, h: None),
        keep_gray=True,
    )


def image_to_tensor(
    data: bytes, spec: Preprocessing, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft: bool = True
) -> np.ndarray:
    """Decode one image and preprocess it: the per-image hot path.

    Args:
        data: encoded image bytes.
        spec: the preprocessing spec (its constants are computed once per spec and cached).
        max_pixels: see :func:`decode`.
        draft: let large JPEGs decode at reduced size (see :data:`DRAFT_TOLERANCE`);
            ``False`` decodes at full size, matching torchvision exactly.

    Returns:
        float32 [3, spec.height, spec.width], C-contiguous.

    Raises:
        ImageDecodeError, ImageTooLargeError: as :func:`decode`.
    """
    _constants(spec)  # validate the spec before decoding
    return preprocess(_decode_for(data, spec, max_pixels, draft), spec)


def images_to_batch(
    items: Sequence[Any],
    spec: Preprocessing,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: bool = True,
    read: Callable[[Any], bytes] | None = None,
    between: Callable[[], None] | None = None,
) -> tuple[np.ndarray, list[int], list[tuple[int, ImgfeatError]]]:
    """Decode and preprocess many images, one at a time; a bad image never spoils the batch.

    Args:
        items: encoded images (``None`` counts as a bad image, "image is NULL"), or what
            ``read`` turns into one.
        spec, max_pixels, draft: as :func:`image_to_tensor`.
        read: called on each item just before it is decoded (e.g. to read a file), so that
            only one image's bytes are held at a time; its :class:`ImgfeatError` makes that
            item a bad one.
        between: called before each item (e.g. to let the database act on a cancel); what it
            raises ends the batch.

    Returns:
        ``(batch, good, bad)``: ``batch`` float32 [len(good), 3, spec.height, spec.width]
        (C-contiguous, NCHW) holding the images at indices ``good`` (in order), and ``bad``
        the ``(index, error)`` of every image that could not be read or decoded.
    """
    _constants(spec)
    out = np.empty((len(items), 3, spec.height, spec.width), dtype=np.float32)
    good: list[int] = []
    bad: list[tuple[int, ImgfeatError]] = []
    _check_color(spec.background, "background")
    for i, item in enumerate(items):
        if between is not None:
            between()
        try:
            if item is None:
                raise ImageDecodeError("image is NULL")
            img = _decode_for(read(item) if read is not None else item, spec, max_pixels, draft)
        except ImgfeatError as e:
            bad.append((i, e))
            continue
        _preprocess_into(img, spec, out[len(good)])
        good.append(i)
    return out[: len(good)], good, bad
