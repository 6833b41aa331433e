"""Reading image files on the database server, confined to ``imgfeat.image_root``.

PL/Python runs with the server's operating-system rights, so a path from SQL is read only
if, after resolving ``..`` and every symlink, it lies inside the configured root and names
a regular file (not a directory, device, FIFO or socket) no larger than the byte limit.
The root is honoured only from the server configuration (see :mod:`imgfeat.settings`).
"""

from __future__ import annotations

import os
import stat

from .errors import ConfigurationError, ImageDecodeError, ImgfeatError

DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024
"""Largest image file read (256 MiB), well below PostgreSQL's 1 GB field limit."""


class FileAccessError(ImgfeatError):
    """A path outside the image root, or not a regular readable file (``42501`` insufficient_privilege)."""

    sqlstate = "42501"


def resolve(root: str | None, path: str) -> str:
    """The real path of ``path`` (relative paths are relative to ``root``), checked to lie inside ``root``.

    Raises:
        ConfigurationError: no image root is configured.
        FileAccessError: the resolved path escapes the root.
    """
    if not root:
        raise ConfigurationError(
            "imgfeat.image_root is not configured, so imgfeat reads no files",
            hint="A superuser sets it: SET imgfeat.image_root = ''; ALTER SYSTEM SET imgfeat.image_root = '/srv/images'; "
            "SELECT pg_reload_conf(); (the SET makes the placeholder known to ALTER SYSTEM)",
        )
    if "\x00" in path:
        raise FileAccessError("path contains a NUL byte")
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, path))
    if os.path.commonpath([real_root, real]) != real_root:
        raise FileAccessError(
            f"path {path!r} lies outside imgfeat.image_root ({root})",
            detail="Paths are resolved (.., symlinks) before the check.",
        )
    return real


def read_image_file(root: str | None, path: str, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file under ``root``.

    Raises:
        ConfigurationError, FileAccessError: see :func:`resolve`; also for directories,
            devices and other non-regular files.
        ImageDecodeError: the file is missing, unreadable, or larger than ``max_bytes``.
    """
    real = resolve(root, path)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageDecodeError(f"file {path!r} does not exist under imgfeat.image_root") from None
    except OSError as exc:
        raise FileAccessError(f"cannot open {path!r}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise FileAccessError(f"path {path!r} is {kind}")
        if st.st_size > max_bytes:
            raise ImageDecodeError(f"file {path!r} is {st.st_size} bytes, more than the limit of {max_bytes} bytes")
        chunks = []
        remaining = st.st_size + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
