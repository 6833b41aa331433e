"""Loading image files into a table: ``imgfeat load`` and :func:`load_directory`.

The table (created if missing) holds one row per file::

    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY
    path       text NOT NULL UNIQUE   -- the file's absolute path (symlinks resolved)
    image      bytea NOT NULL         -- the file's bytes; with as_='paths': text, the absolute path
    bytes      bigint NOT NULL        -- file size in bytes
    sha256     text NOT NULL          -- hex sha256 of the file's bytes
    loaded_at  timestamptz NOT NULL DEFAULT now()

The ``image`` bytea column is set to ``STORAGE EXTERNAL`` (TOASTed out of line, never
compressed): image formats are compressed already, and pglz on raw formats such as PGM cost
the server most of the load time (loads several times slower in ``bench/load_bench.py``) for
little space.

Rows arrive through binary ``COPY ... FROM STDIN (FORMAT BINARY)`` in batches (at most
:data:`BATCH_FILES` files or :data:`BATCH_BYTES` bytes), each batch in its own transaction:
an interrupted load keeps the finished batches and a re-run picks up the rest.

Re-running is idempotent: a file whose path is already in the table with the same sha256 is
skipped without being sent. A file whose path is known but whose content changed (another
sha256) **updates** that row in place (``image``, ``bytes``, ``sha256``, ``loaded_at``; the
``id`` stays), counted in :attr:`LoadReport.updated`. Rows of files that disappeared are left
alone. Two loaders writing the same paths into one table at the same time can collide on the
``path`` unique constraint (the later batch fails); run one loader per table.

Image check: each file's header is identified with Pillow (``Image.open``, which reads the
header only, never decodes pixels). Files Pillow cannot identify are reported in
:attr:`LoadReport.not_images` and skipped; truncated or corrupt pixel data behind a valid
header is not detected here (``imgfeat.featurize_image`` reports it when it decodes).

With ``as_='paths'`` the ``image`` column is ``text`` holding the same absolute path as
``path`` (files are still read, to check the header and compute the sha256):
``imgfeat.featurize_image_file(image)`` can then read them on the database server when they
are inside its ``imgfeat.image_root``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from tqdm import tqdm

from . import db

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Largest file loaded by default: 64 MiB. PostgreSQL caps one field at 1 GB (and a bytea's
text form at twice its size); images this big are well past what featurization decodes."""

MAX_FIELD_BYTES = (1 << 30) - 1
"""PostgreSQL's largest field (``MaxAllocSize``, 1 GiB - 1 byte): ``max_bytes`` must be below it."""

BATCH_FILES = 1000
"""Files per COPY batch (one transaction each)."""

BATCH_BYTES = 32 * 1024 * 1024
"""Bytes per COPY batch (a batch closes once it holds this much)."""

AS_CHOICES = ("bytes", "paths")


class LoadError(RuntimeError):
    """The load cannot start: missing directory, bad table name, or an existing table of another shape."""


@dataclass(frozen=True)
class Rejected:
    """A file that was not loaded, and why."""

    path: str
    reason: str


@dataclass
class LoadReport:
    """What a load did.

    Attributes:
        table: the table as PostgreSQL shows it (``regclass``: quoted where needed, schema-qualified
            when not on the search_path), e.g. ``images`` or ``"Pics"."My Images"``.
        files: files considered (matching the pattern).
        loaded: new rows inserted.
        updated: rows whose file changed (same path, another sha256) and were rewritten.
        skipped_existing: files already in the table with the same sha256 (not sent).
        not_images: files whose header Pillow cannot identify (skipped).
        too_large: files over ``max_bytes`` (skipped; never read).
        unreadable: files that could not be read (permissions, vanished).
        ignored: files left out by a loader's own rules (e.g. names outside a data set's scheme).
        seconds: wall-clock duration of the load.
    """

    table: str
    files: int = 0
    loaded: int = 0
    updated: int = 0
    skipped_existing: int = 0
    not_images: list[Rejected] = field(default_factory=list)
    too_large: list[Rejected] = field(default_factory=list)
    unreadable: list[Rejected] = field(default_factory=list)
    ignored: list[Rejected] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Rows written (loaded + updated) per second of wall-clock time (0.0 for an empty load)."""
        written = self.loaded + self.updated
        return written / self.seconds if self.seconds > 0 and written else 0.0

    def summary(self) -> str:
        """One line for humans."""
        return (
            f"{self.table}: {self.loaded} loaded, {self.updated} updated, {self.skipped_existing} already there, "
            f"{len(self.not_images)} not images, {len(self.too_large)} too large, {len(self.unreadable)} unreadable"
            + (f", {len(self.ignored)} ignored" if self.ignored else "")
            + f" ({self.seconds:.2f} s, {self.images_per_second:.0f} images/s)"
        )


@dataclass(frozen=True)
class ExtraColumn:
    """An extra column of a loader's table: name, SQL type (DDL), and the COPY type name."""

    name: str
    ddl: str
    copy_type: str


def image_header_error(data: bytes) -> str | None:
    """None if Pillow identifies ``data`` as an image from its header, else the reason it does not.

    Only the header is parsed (``PIL.Image.open`` is lazy); pixels are not decoded. An image
    whose header declares more pixels than Pillow's decompression-bomb limit still counts as
    an image (the database server applies its own ``imgfeat.max_image_pixels``).
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        return "empty file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.width <= 0 or im.height <= 0:
                    return f"{im.format} header declares an empty {im.width}x{im.height} image"
    except Image.DecompressionBombError:
        return None
    except UnidentifiedImageError:
        return "not an image: Pillow does not recognise its header"
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        return f"bad image header: {e}"
    return None


def parse_table(conn: psycopg.Connection[Any], table: str) -> sql.Identifier:
    """``table`` (``name`` or ``schema.name``, SQL quoting rules: unquoted parts fold to lower
    case, ``"Mixed Case"`` keeps its case) as a safe identifier, parsed by PostgreSQL's
    ``parse_ident``. Raises :class:`LoadError` for anything else."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT pg_catalog.parse_ident(%s)", (table,)).fetchone()
    except psycopg.errors.InvalidParameterValue as e:
        raise LoadError(f"invalid table name {table!r}: {e.diag.message_primary}") from None
    parts = list(row[0]) if row else []
    if not 1 <= len(parts) <= 2:
        raise LoadError(f"invalid table name {table!r}: give name or schema.name")
    return sql.Identifier(*parts)


def ensure_table(
    conn: psycopg.Connection[Any],
    table: sql.Identifier,
    *,
    image_type: str = "bytea",
    extra: Sequence[ExtraColumn] = (),
    comment: str | None = None,
) -> None:
    """Create ``table`` if missing (see the module docstring for its columns, ``extra`` ones
    go before ``loaded_at``), else check that it has the loader's columns with the right types.

    Raises:
        LoadError: the table exists without a needed column, or with another type.
    """
    cols = [
        sql.SQL("id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
        sql.SQL("path text NOT NULL UNIQUE"),
        sql.SQL("image {} NOT NULL").format(sql.SQL(image_type)),
        sql.SQL("bytes bigint NOT NULL"),
        sql.SQL("sha256 text NOT NULL"),
        *(sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.ddl)) for c in extra),
        sql.SQL("loaded_at timestamptz NOT NULL DEFAULT now()"),
    ]
    with conn.transaction():
        exists = conn.execute("SELECT pg_catalog.to_regclass(%s)", (table.as_string(conn),)).fetchone()
        if exists and exists[0] is None:
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table, sql.SQL(", ").join(cols)))
            if image_type == "bytea":  # out of line, uncompressed: see the module docstring
                conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN image SET STORAGE EXTERNAL").format(table))
            if comment:
                conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(table, sql.Literal(comment)))
            return
        have = dict(conn.execute(
            "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            (table.as_string(conn),),
        ).fetchall())
    need = {"path": "text", "image": image_type, "bytes": "bigint", "sha256": "text"}
    need.update({c.name: c.ddl.split()[0] for c in extra})
    wrong = [f"{name} {typ}" for name, typ in need.items() if have.get(name) != typ]
    if wrong:
        found = ", ".join(f"{k} {v}" for k, v in have.items())
        hint = " (a table loaded with --as paths has image text; with bytes, image bytea)" if "image" in (
            w.split()[0] for w in wrong) else ""
        raise LoadError(
            f"table {table.as_string(conn)} exists but lacks the columns {', '.join(wrong)}{hint}; it has: {found}"
        )


@contextmanager
def connection(target: Any) -> Iterator[psycopg.Connection[Any]]:
    """A psycopg connection from ``target``: a connection (used as is, not closed), or a DSN,
    SQLAlchemy engine or URL, or None (``IMGFEAT_DSN``, then libpq's environment) — see :func:`db.resolve_dsn`."""
    if isinstance(target, psycopg.Connection):
        yield target
    else:
        with db.connect(target) as conn:
            yield conn


def scan(directory: str | os.PathLike[str], pattern: str = "*", recursive: bool = False) -> list[Path]:
    """Regular files in ``directory`` whose names match the glob ``pattern`` (:mod:`fnmatch`
    rules: ``*`` also matches a leading dot), at any depth if ``recursive``, as absolute
    resolved paths, sorted, without duplicates. Symlinked files are followed; symlinked
    directories are not descended into. A pattern containing ``/`` is matched by
    :meth:`pathlib.Path.glob` / ``rglob`` instead.

    Raises:
        LoadError: ``directory`` is not a directory.
    """
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise LoadError(f"{os.fspath(directory)!r} is not a directory")
    root = d.resolve()
    if "/" in pattern:
        found = root.rglob(pattern) if recursive else root.glob(pattern)
        return sorted({p.resolve() for p in found if p.is_file()})
    out: set[Path] = set()
    pending = [str(root)]
    while pending:
        dirpath = pending.pop()
        with os.scandir(dirpath) as entries:  # DirEntry caches the file type: no stat per file
            for e in entries:
                if recursive and e.is_dir(follow_symlinks=False):
                    pending.append(e.path)
                elif fnmatch.fnmatchcase(e.name, pattern) and e.is_file():
                    out.add(Path(os.path.realpath(e.path)) if e.is_symlink() else Path(e.path))
    return sorted(out)


@dataclass
class _Candidate:
    path: Path
    key: str
    size: int
    data: bytes
    sha256: str
    extra: tuple[Any, ...]


def load_files(
    dsn_or_conn: Any,
    files: Sequence[Path],
    table: str,
    *,
    as_: str = "bytes",
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: bool = True,
    key: Callable[[Path], str] | None = None,
    extra: Sequence[ExtraColumn] = (),
    extra_values: Callable[[Path], tuple[Any, ...]] | None = None,
    comment: str | None = None,
) -> LoadReport:
    """Load ``files`` into ``table`` (the engine behind :func:`load_directory` and the data set loaders).

    Args:
        key: the ``path`` value of a file (default its absolute path as a string); the
            idempotency key together with the sha256.
        extra: extra columns of the table; ``extra_values(path)`` gives their values, in order.
        Others: as :func:`load_directory`.

    Raises:
        ValueError: ``as_`` or ``max_bytes`` out of range.
        LoadError, psycopg.Error: see :func:`load_directory`.
    """
    if as_ not in AS_CHOICES:
        raise ValueError(f"as_ must be one of {AS_CHOICES}, got {as_!r}")
    if not 0 < max_bytes <= MAX_FIELD_BYTES:
        raise ValueError(f"max_bytes must be 1..{MAX_FIELD_BYTES} (PostgreSQL's field limit), got {max_bytes}")
    keyf = key or (lambda p: str(p))
    started = time.perf_counter()
    with connection(dsn_or_conn) as conn:
        ident = parse_table(conn, table)
        image_type = "bytea" if as_ == "bytes" else "text"
        ensure_table(conn, ident, image_type=image_type, extra=extra, comment=comment)
        shown = conn.execute("SELECT %s::regclass::text", (ident.as_string(conn),)).fetchone()
        report = LoadReport(table=shown[0] if shown else ident.as_string(conn), files=len(files))
        columns = ["path", "image", "bytes", "sha256", *(c.name for c in extra)]
        types = ["text", image_type, "int8", "text", *(c.copy_type for c in extra)]
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            ident, sql.SQL(", ").join(map(sql.Identifier, columns)))
        update_sql = sql.SQL("UPDATE {} SET {}, loaded_at = now() WHERE path = %s").format(
            ident, sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in columns[1:]))
        select_sql = sql.SQL("SELECT path, sha256 FROM {} WHERE path = ANY(%s)").format(ident)

        def flush(batch: list[_Candidate]) -> None:
            if not batch:
                return
            known = dict(conn.execute(select_sql, ([c.key for c in batch],)).fetchall())
            new = [c for c in batch if c.key not in known]
            changed = [c for c in batch if c.key in known and known[c.key] != c.sha256]
            report.skipped_existing += len(batch) - len(new) - len(changed)
            with conn.transaction(), conn.cursor() as cur:
                if new:
                    with cur.copy(copy_sql) as copy:
                        copy.set_types(types)
                        for c in new:
                            copy.write_row(_row(c, as_))
                if changed:
                    cur.executemany(update_sql, [(*_row(c, as_)[1:], c.key) for c in changed])
            report.loaded += len(new)
            report.updated += len(changed)

        batch: list[_Candidate] = []
        batch_bytes = 0
        with tqdm(total=len(files), unit="img", desc="loading", file=sys.stderr, leave=False,
                  disable=not progress or not sys.stderr.isatty()) as bar:
            for path in files:
                cand = _read(path, keyf, max_bytes, extra_values, report)
                bar.update(1)
                if cand is None:
                    continue
                batch.append(cand)
                batch_bytes += cand.size
                if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                    flush(batch)
                    batch, batch_bytes = [], 0
            flush(batch)
    report.seconds = time.perf_counter() - started
    return report


def _row(c: _Candidate, as_: str) -> tuple[Any, ...]:
    return (c.key, c.data if as_ == "bytes" else str(c.path), c.size, c.sha256, *c.extra)


def _read(
    path: Path,
    key: Callable[[Path], str],
    max_bytes: int,
    extra_values: Callable[[Path], tuple[Any, ...]] | None,
    report: LoadReport,
) -> _Candidate | None:
    def too_large(size: int) -> None:
        report.too_large.append(Rejected(str(path), (
            f"{size:,} bytes is over the {max_bytes:,}-byte limit per file "
            f"(raise it with --max-bytes / max_bytes, up to PostgreSQL's 1 GB field limit)")))

    try:
        size = path.stat().st_size
        if size > max_bytes:
            too_large(size)
            return None
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        report.unreadable.append(Rejected(str(path), e.strerror or str(e)))
        return None
    if len(data) > max_bytes:  # grew since stat()
        too_large(len(data))
        return None
    reason = image_header_error(data)
    if reason is not None:
        report.not_images.append(Rejected(str(path), reason))
        return None
    return _Candidate(
        path=path, key=key(path), size=len(data), data=data, sha256=hashlib.sha256(data).hexdigest(),
        extra=extra_values(path) if extra_values else (),
    )


def load_directory(
    dsn_or_engine: Any,
    directory: str | os.PathLike[str],
    table: str,
    *,
    pattern: str = "*",
    recursive: bool = False,
    as_: str = "bytes",
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: bool = True,
) -> LoadReport:
    """Load the image files of ``directory`` into ``table`` (created if missing).

    Args:
        dsn_or_engine: a libpq DSN or URL, a SQLAlchemy engine or URL (``postgresql+psycopg://``),
            a psycopg connection (used as is; with autocommit off, committing is yours), or
            None for ``IMGFEAT_DSN`` / libpq's PG* variables.
        directory: where the files are (client side).
        table: ``name`` or ``schema.name`` (SQL identifier syntax; quote mixed case: ``'"Faces"'``).
        pattern: glob matched against file names (``*.png``); default every file.
        recursive: also descend into subdirectories.
        as_: ``'bytes'``: ``image bytea`` holds the file; ``'paths'``: ``image text`` holds its
            absolute path, for ``imgfeat.featurize_image_file`` on the database host.
        max_bytes: files larger than this many bytes are refused (reported in ``too_large``);
            default :data:`DEFAULT_MAX_BYTES` (64 MiB), at most :data:`MAX_FIELD_BYTES`.
        progress: a tqdm bar on stderr (only when stderr is a terminal).

    Returns:
        A :class:`LoadReport`. Files that are not images, too large or unreadable are listed
        there and skipped; the load goes on.

    Raises:
        LoadError: ``directory`` is not a directory, ``table`` is not a valid name, or the
            table exists without the loader's columns (or with the other ``image`` type).
        ValueError: ``as_`` or ``max_bytes`` out of range.
        psycopg.Error: connection or permission problems (e.g. no CREATE on the schema).
    """
    started = time.perf_counter()
    files = scan(directory, pattern, recursive)
    report = load_files(dsn_or_engine, files, table, as_=as_, max_bytes=max_bytes, progress=progress)
    report.seconds = time.perf_counter() - started  # the directory scan included
    return report
