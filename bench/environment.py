"""The benchmark's database: a throwaway cluster (or ``--dsn``), the CMU faces, the models."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import conninfo

def faces_dir() -> Path:
    """The CMU faces (``faces/<user>/*.pgm``), where the demo and the tests find them:
    ``IMGFEAT_CMU_FACES``, else ``../shared/data/cmu-faces/faces`` beside the project, else the
    UCI download (:func:`imgfeat_loader.datasets.cmu_faces_dir`).

    Raises:
        BenchError: none to be had, saying where it looked.
    """
    from imgfeat_loader.datasets import cmu_faces_dir
    from imgfeat_loader.download import DownloadError
    from imgfeat_loader.load import LoadError

    try:
        return cmu_faces_dir()
    except (LoadError, DownloadError) as e:
        raise BenchError(str(e)) from None


def face_files(root: Path) -> list[Path]:
    """The 312 full-resolution left/right faces (``<user>_<left|right>_<expr>_<eyes>.pgm``), sorted by path."""
    return sorted(
        p for p in root.glob("*/*.pgm") if len(p.stem.split("_")) == 4 and p.stem.split("_")[1] in ("left", "right")
    )


def split_faces(files: list[Path]) -> dict[Path, str]:
    """The train/test split: within each class (left, right) sorted by path, even positions
    (0, 2, ...) train, odd ones test."""
    split: dict[Path, str] = {}
    for label in ("left", "right"):
        members = sorted(p for p in files if p.stem.split("_")[1] == label)
        for i, p in enumerate(members):
            split[p] = "train" if i % 2 == 0 else "test"
    return split


def backend_stat(pid: int) -> dict[str, float]:
    """A process's CPU seconds (user + system, all threads) and memory (VmRSS, VmHWM in MB) from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    stat = {"cpu": (int(fields[11]) + int(fields[12])) / ticks}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            stat[key] = int(value.split()[0]) / 1024
    return stat


class BenchError(Exception):
    """A problem the user can fix (a bad ``--weights`` file): one line, no traceback."""


def check_weights(arch: str, path: Path) -> None:
    """Read a ``--weights`` file before any cluster starts: an ``.onnx`` file must parse, a
    state dict (``.pth``, ``.safetensors``) must have ``arch``'s keys and shapes.

    Raises:
        BenchError: the file cannot serve as ``arch``, with the reason.
    """
    from imgfeat.core.errors import ImgfeatError

    try:
        if path.suffix.lower() == ".onnx":
            import onnx

            try:
                onnx.checker.check_model(onnx.load_model_from_string(path.read_bytes()))
            except Exception as e:  # protobuf DecodeError, onnx ValidationError
                first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
                raise BenchError(f"--weights {arch}={path}: not a valid ONNX model ({first[:200]})") from None
        else:
            from imgfeat.core import zoo

            zoo.load_state_dict(path, arch=arch)
    except ImgfeatError as e:
        raise BenchError(f"--weights {arch}={path}: {e.message}") from None


def register(conn: psycopg.Connection[Any], arch: str, weights: Path | None, origin: str = "custom") -> None:
    """Register ``arch`` under its own name: synthetic (seeded) weights, or a file: ``.onnx``
    (cut at the feature layer by the server) or a torchvision state dict (``.pth``,
    ``.safetensors``).

    Raises:
        BenchError: the server refused the file (e.g. an ONNX model of another architecture).
    """
    if weights is None:
        conn.execute("SELECT imgfeat.register_synthetic_model(%s)", (arch,))
        return
    try:
        if weights.suffix.lower() == ".onnx":
            from imgfeat_loader.models import add_onnx

            add_onnx(conn, arch, weights.read_bytes(), architecture=arch, weights_origin=origin)
        else:
            from imgfeat_loader.models import add_weights

            add_weights(conn, arch, weights, arch, weights_origin=origin)
    except psycopg.Error as e:
        message = e.diag.message_primary or str(e).splitlines()[0]
        raise BenchError(f"--weights {arch}={weights}: the server refused it: {message[:300]}") from None


@dataclass
class BenchEnv:
    """A database with imgfeat, the faces table and registered synthetic models.

    ``faces``: id (1.. in path order), path, label (left/right), split (train/test), image bytea.
    ``faces_train``: a view of the training split (the int8 calibration images).
    """

    dsn: str
    files: list[Path]
    local: bool = True
    models: list[str] = field(default_factory=list)
    _cluster: Any = None
    _admin_dsn: str = ""
    _dbname: str = ""

    @classmethod
    @contextmanager
    def create(cls, dsn: str | None, files: list[Path], models: list[str],
               weights: dict[str, Path] | None = None, imagenet: set[str] | frozenset[str] = frozenset(),
               ) -> Iterator["BenchEnv"]:
        """Start a throwaway cluster unless ``dsn`` (a superuser DSN) is given, create a fresh
        database with the extension, load ``files`` and register ``models`` (synthetic weights,
        or ``weights[arch]``: a state dict or ONNX file); drop it all at the end."""
        cluster = None
        if dsn is None:
            from imgfeat_loader.cluster import LocalCluster

            cluster = LocalCluster()
            cluster.start()
            dsn = cluster.dsn()
        dbname = f"imgfeat_bench_{uuid.uuid4().hex[:8]}"
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{dbname}"')
            db_dsn = conninfo.make_conninfo(dsn, dbname=dbname)
            host = conninfo.conninfo_to_dict(db_dsn).get("host") or ""
            env = cls(db_dsn, files, local=not host or host.startswith("/") or host in ("localhost", "127.0.0.1"),
                      _cluster=cluster, _admin_dsn=dsn, _dbname=dbname)
            env._setup(models, weights or {}, imagenet)
            yield env
        finally:
            try:
                with psycopg.connect(dsn, autocommit=True) as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            finally:
                if cluster is not None:
                    cluster.stop()

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True)

    def _setup(self, models: list[str], weights: dict[str, Path], imagenet: set[str] | frozenset[str] = frozenset()) -> None:
        split = split_faces(self.files)
        with self.connect() as c:
            c.execute("SET client_min_messages = warning")
            c.execute("CREATE EXTENSION imgfeat CASCADE")
            c.execute("CREATE TABLE faces (id bigint PRIMARY KEY, path text NOT NULL, label text NOT NULL, "
                      "split text NOT NULL, image bytea NOT NULL)")
            with c.cursor().copy("COPY faces (id, path, label, split, image) FROM STDIN") as copy:
                for i, p in enumerate(self.files, start=1):
                    copy.write_row((i, str(p), p.stem.split("_")[1], split[p], p.read_bytes()))
            c.execute("CREATE VIEW faces_train AS SELECT id, image FROM faces WHERE split = 'train'")
            c.execute("ANALYZE faces")
            for arch in models:
                register(c, arch, weights.get(arch), "imagenet" if arch in imagenet else "custom")
                self.models.append(arch)

    def model_bytes(self, name: str) -> bytes:
        """A registered model's ONNX bytes (``imgfeat.model_onnx``)."""
        with self.connect() as c:
            row = c.execute("SELECT imgfeat.model_onnx(%s)", (name,)).fetchone()
        assert row is not None and row[0] is not None, name
        return bytes(row[0])

    def images(self, limit: int | None = None) -> list[tuple[int, bytes]]:
        with self.connect() as c:
            rows = c.execute("SELECT id, image FROM faces ORDER BY id" + (f" LIMIT {int(limit)}" if limit else "")).fetchall()
        return [(int(i), bytes(b)) for i, b in rows]

    def features(self, table: str) -> dict[int, np.ndarray]:
        with self.connect() as c:
            rows = c.execute(f"SELECT id, features FROM {table} ORDER BY id").fetchall()
        return {int(i): np.asarray(f, dtype=np.float32) for i, f in rows}
