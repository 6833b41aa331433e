"""Reading image files on the database server, confined to ``imgfeat.image_root``.

PL/Python runs with the server's operating-system rights, so a path from SQL is read only if
it names a regular file (not a directory, device, FIFO or socket, and no larger than the byte
limit) inside the configured root. Checking a resolved path and then opening it would leave a
window in which a directory inside the root is swapped for a symlink to somewhere else; so the
file is *opened* one component at a time from a descriptor of the root's directory
(``openat`` with ``O_NOFOLLOW``): ``..`` goes back up the descriptors already held (never above
the root), a symlink is read and followed only if its target stays inside the root, and what
was finally opened is checked again through ``/proc/self/fd`` before a byte is read. The root
is honoured only from the server configuration (see :mod:`imgfeat.settings`).
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque

from .errors import ConfigurationError, ImageDecodeError, ImgfeatError

DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024
"""Largest image file read (256 MiB), well below PostgreSQL's 1 GB field limit."""

MAX_SYMLINKS = 40
"""Symlinks followed while opening one path (Linux's own limit, ``MAXSYMLINKS``)."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class FileAccessError(ImgfeatError):
    """A path outside the image root, or not a regular readable file (``42501`` insufficient_privilege)."""

    sqlstate = "42501"


def require_root(root: str | None) -> str:
    """``root`` itself; raises :class:`ConfigurationError` when no image root is configured."""
    if not root:
        raise ConfigurationError(
            "imgfeat.image_root is not configured, so imgfeat reads no files",
            hint="A superuser sets it: SET imgfeat.image_root = ''; ALTER SYSTEM SET imgfeat.image_root = '/srv/images'; "
            "SELECT pg_reload_conf(); (the SET makes the placeholder known to ALTER SYSTEM)",
        )
    return root


def _outside(path: str, root: str) -> FileAccessError:
    return FileAccessError(
        f"path {path!r} lies outside imgfeat.image_root ({root})",
        detail="Paths are followed component by component from the root; '..' and symlinks may not leave it.",
    )


def _components(path: str) -> list[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


def _relative_to_root(target: str, root: str, real_root: str) -> list[str] | None:
    """The components of absolute ``target`` below the root (as configured or resolved), else None."""
    for base in (real_root, os.path.normpath(root)):
        if target == base or target.startswith(base.rstrip("/") + "/"):
            return _components(target[len(base):])
    return None


def open_under_root(root: str, path: str) -> int:
    """A read-only descriptor of the regular file ``path`` under ``root`` (the caller closes it).

    ``path`` is relative to ``root``, or absolute and inside it. No component is ever looked up
    outside the root: see the module docstring.

    Raises:
        ConfigurationError: no root configured.
        FileAccessError: the path leaves the root (``..``, a symlink, an absolute path
            elsewhere, a concurrent rename), names a directory or other non-regular file, too
            many symlinks, or cannot be opened (permissions).
        ImageDecodeError: no such file.
    """
    require_root(root)
    if "\x00" in path:
        raise FileAccessError("path contains a NUL byte")
    real_root = os.path.realpath(root)
    if path.startswith("/"):
        parts = _relative_to_root(os.path.normpath(path), root, real_root)
        if parts is None:
            raise _outside(path, root)
    else:
        parts = _components(path)
    if not parts:
        raise FileAccessError(f"path {path!r} is a directory")
    try:
        root_fd = os.open(real_root, _DIR_FLAGS)
    except OSError as exc:
        raise FileAccessError(f"cannot open imgfeat.image_root ({root}): {exc.strerror}") from None
    held = [root_fd]  # descriptors from the root down to the current directory
    todo = deque(parts)
    links = 0
    try:
        while todo:
            name = todo.popleft()
            if name == "..":
                if len(held) == 1:
                    raise _outside(path, root)
                os.close(held.pop())
                continue
            last = not todo
            try:
                fd = os.open(name, _FILE_FLAGS if last else _DIR_FLAGS, dir_fd=held[-1])
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    raise ImageDecodeError(f"file {path!r} does not exist under imgfeat.image_root") from None
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise FileAccessError(f"cannot open {path!r}: {exc.strerror}") from None
                target = _symlink_target(held[-1], name, path)
                links += 1
                if links > MAX_SYMLINKS:
                    raise FileAccessError(f"path {path!r}: too many levels of symbolic links, or it keeps changing") from None
                if target is None:  # it changed since the open: look the name up again
                    todo.appendleft(name)
                elif target.startswith("/"):
                    below = _relative_to_root(os.path.normpath(target), root, real_root)
                    if below is None:
                        raise _outside(path, root) from None
                    while len(held) > 1:
                        os.close(held.pop())
                    todo.extendleft(reversed(below))
                else:
                    todo.extendleft(reversed(_components(target)))
                continue
            if last:
                held_fd = fd
                break
            held.append(fd)
        else:  # the path ended on a directory ('..' or a symlink to one)
            raise FileAccessError(f"path {path!r} is a directory")
        try:
            _check_opened(held_fd, path, root, real_root)
        except BaseException:
            os.close(held_fd)
            raise
        return held_fd
    finally:
        for fd in held:
            os.close(fd)


def _symlink_target(dir_fd: int, name: str, path: str) -> str | None:
    """The target of the symlink ``name`` in ``dir_fd``; ``None`` if ``name`` is (now) a directory
    or a symlink no more (a concurrent rename: the caller looks it up again).

    Raises:
        FileAccessError: ``name`` is a file where a directory is needed.
    """
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        if exc.errno != errno.EINVAL:
            raise FileAccessError(f"cannot open {path!r}: {exc.strerror}") from None
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
        return None
    raise FileAccessError(f"cannot open {path!r}: a component is not a directory")


def _check_opened(fd: int, path: str, root: str, real_root: str) -> None:
    """What ``fd`` opened: a regular file that (per ``/proc/self/fd``) lies inside the root."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise FileAccessError(f"path {path!r} is {kind}")
    try:
        opened = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return  # no /proc: the walk above is the guarantee
    if not opened.startswith(real_root.rstrip("/") + "/"):
        raise _outside(path, root)


def read_image_file(root: str | None, path: str, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file under ``root`` (see :func:`open_under_root`).

    Raises:
        ConfigurationError, FileAccessError: see :func:`open_under_root`.
        ImageDecodeError: the file is missing, or larger than ``max_bytes``.
    """
    fd = open_under_root(require_root(root), path)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise ImageDecodeError(f"file {path!r} is {size} bytes, more than the limit of {max_bytes} bytes")
        chunks = []
        remaining = size + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise ImageDecodeError(f"file {path!r} grew past the limit of {max_bytes} bytes while it was read")
        return data
    finally:
        os.close(fd)
