"""The executor side of ``featurize_spark``: featurize one Spark partition with the imgfeat library.

Everything here runs inside a PySpark Python worker, and nothing here imports pyspark: the
functions take plain Python iterables, so they can be tested (and reused, e.g. by Dask or
a process pool) without Spark. The driver side is :mod:`imgfeat_loader.spark`.

Per partition:

1. the model: an onnxruntime session built once per Python worker from the broadcast ONNX
   bytes (verified against the registered sha256 again, cached by sha256, so reused by
   every later partition the worker runs; PySpark reuses workers by default);
2. rows ``(id, image bytes or None)`` are taken ``batch_size`` at a time; with a PostgreSQL
   target, ids that already have features for the model are dropped first (one query per
   batch), so a job run again after an interruption featurizes only what is missing;
3. each batch is decoded and preprocessed by :func:`imgfeat.image.images_to_batch` with the
   model's :class:`~imgfeat.spec.Preprocessing` (exactly what ``CALL imgfeat.featurize``
   does in the database) and run through :meth:`imgfeat.runtime.LoadedModel.run`;
4. the features are written in one transaction per batch: ``COPY`` into a temporary table,
   then ``INSERT ... SELECT ... ON CONFLICT (id, model_name) DO NOTHING`` into the target
   (idempotent on id and model; a batch is committed whole or not at all).

The target (and a table source read with psycopg) is never named in an executor's
transaction: the driver checked it and resolved its OID, and every transaction that reads or
writes it does so through a temporary view bound to that OID
(:func:`imgfeat.db.catalog.pin_view`, as ``CALL imgfeat.featurize`` does in each batch): the
owner of its schema cannot put a table of its own (whose triggers would run as the job's
role) under its name between two batches, nor rename the schema. A target dropped, replaced
or given to another role stops the partition with an error naming it (the batches committed
before stay), which the driver raises after the job.

Failed images: ``on_error='skip'`` records them (and, for a table source, in
``imgfeat.featurize_errors`` like the database does) and goes on; ``'raise'`` stops the
partition at the first failing batch without writing it and reports the failure to the
driver, which raises it after the job (a decode error is deterministic: letting Spark
retry the task would only fail again).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imgfeat.core.errors import (
    ConfigurationError,
    ImageDecodeError,
    ImgfeatError,
    InsufficientPrivilegeError,
    ModelError,
)
from imgfeat.core.image import DEFAULT_MAX_PIXELS
from imgfeat.core.model_info import ModelInfo, check_model_bytes

ON_ERROR = ("raise", "skip")
MAX_BATCH = 4096
MAX_REPORTED_FAILURES = 100
"""Failures listed per partition in the summary (all are counted)."""

_MODELS: dict[Any, Any] = {}
"""sha256 -> LoadedModel, per Python worker process (lives as long as the worker)."""


@dataclass(frozen=True)
class JobSpec:
    """What every partition needs; pickled to the executors with the task.

    Attributes:
        model_name: the registered model's name (the ``model_name`` column of the target).
        info: the model's registry row (input/output names, feature_dim, preprocessing).
        batch_size: images per onnxruntime run and per committed transaction (1..4096).
        on_error: ``raise`` or ``skip``.
        dsn: libpq connection string the executors write with (None: no database writes).
        target: the target table, schema-qualified and quoted as the driver checked it (None
            for Parquet output).
        target_oid: the target's OID, checked by the driver (it belongs to the job's role):
            the executors read and write the relation with this OID, whatever its name is then.
        id_type: the SQL type of the target's id column (``text`` for files), as
            ``format_type`` prints it.
        source_oid: OID of a source table, checked by the driver (read by this OID with
            psycopg; failures go to imgfeat.featurize_errors), or None for files.
        max_pixels: images whose header declares more pixels fail (ImageTooLargeError).
        intra_op_threads: onnxruntime intra-op threads per task (match ``spark.task.cpus``).
    """

    model_name: str
    info: ModelInfo
    batch_size: int = 32
    on_error: str = "raise"
    dsn: str | None = None
    target: str | None = None
    target_oid: int | None = None
    id_type: str = "text"
    source_oid: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    intra_op_threads: int = 1

    def __post_init__(self) -> None:
        from imgfeat.core.errors import InvalidParameterError

        if self.on_error not in ON_ERROR:
            raise InvalidParameterError(f"on_error must be 'raise' or 'skip', not {self.on_error!r}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise InvalidParameterError(f"batch_size must be between 1 and {MAX_BATCH}, not {self.batch_size}")


@dataclass
class Failure:
    """An image that could not be featurized: its id, error class name and message."""

    id: Any
    error_class: str
    message: str
    detail: str | None = None
    hint: str | None = None


@dataclass
class PartitionSummary:
    """What one partition did (returned to the driver)."""

    featurized: int = 0
    already_done: int = 0
    failed: int = 0
    failures: list[Failure] = field(default_factory=list)
    stopped: bool = False
    """True when ``on_error='raise'`` stopped the partition at a failing batch."""
    error: Failure | None = None
    """What stopped the partition when it was not an image: the target (or the source) was
    dropped, replaced or changed owner (``error_class`` as :attr:`ImgfeatError.error_class`;
    ``id`` None). The batches committed before stay."""
    seconds: float = 0.0
    """Wall time of the partition (reading, featurizing, writing)."""
    model_seconds: float = 0.0
    """Of which loading the model (0 when the worker had it cached)."""
    cpu_seconds: float = 0.0
    """CPU time of the Python worker for the partition (user + system, all its threads)."""
    worker_pid: int = 0
    executor: str = ""
    """The executor process this partition ran in, ``host:pid`` (see :func:`executor_cpu`)."""
    tree_cpu: tuple[float, float] = (0.0, 0.0)
    """CPU seconds of the executor's whole process tree when the partition started and ended."""

    def add_failure(self, failure: Failure) -> None:
        self.failed += 1
        if len(self.failures) < MAX_REPORTED_FAILURES:
            self.failures.append(failure)


def executor_cpu() -> tuple[str, float]:
    """The executor this Python worker serves and the CPU its whole process tree has used.

    The executor is the nearest ``java`` ancestor of this process (PySpark's Python workers
    are forked by a daemon the executor JVM starts; in local mode the JVM is the driver's),
    else this process. Its tree is the JVM, the PySpark daemon, every Python worker and any
    other descendant: user + system CPU of the live ones plus what their exited, reaped
    children used (so the figure only grows).

    Returns:
        ``("host:pid", cpu_seconds)``.
    """
    import socket

    import psutil

    me = psutil.Process()
    root = next((p for p in me.parents() if p.name() == "java"), me)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.Error:  # exited meanwhile: its parent's children_* will count it
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return f"{socket.gethostname()}:{root.pid}", total


def verify_model_bytes(info: ModelInfo, data: bytes | None) -> bytes:
    """``data`` if they are the registered model's bytes (size and sha256), else raise ModelError.

    Raises:
        ModelError: bytes missing (no chunks), of another size or another sha256.
    """
    if data is None:
        raise ModelError(f"model {info.name!r} has no stored bytes (imgfeat.model_onnx returned NULL)")
    check_model_bytes(info, len(data), hashlib.sha256(data).hexdigest())
    return data


def model_for(spec: JobSpec, model_bytes: Any) -> Any:
    """The worker's cached :class:`imgfeat.runtime.LoadedModel` for ``spec.info.sha256``.

    ``model_bytes`` is the ONNX bytes or a zero-argument callable returning them (a Spark
    broadcast's ``.value``, read only on a cache miss).
    """
    from imgfeat.core import runtime

    info = spec.info
    key = (info.sha256, info.precision, info.engines)  # a bf16 variant shares its fp32 model's bytes
    cached = _MODELS.get(key)
    if cached is not None:
        return cached
    data = verify_model_bytes(info, model_bytes() if callable(model_bytes) else model_bytes)
    # At the precision and on the engines the catalog row records, as in a backend.
    model = runtime.load(info, data, spec.intra_op_threads, 1)
    _MODELS.clear()  # one model per worker at a time: a job ships one model
    _MODELS[key] = model
    return model


def featurize_batch(
    spec: JobSpec, model: Any, ids: list[Any], payloads: list[bytes | None]
) -> tuple[list[Any], np.ndarray, list[Failure]]:
    """Decode, preprocess and run one batch.

    Returns:
        ``(good_ids, features, failures)``: features float32 [len(good_ids), feature_dim].

    Raises:
        ModelError: the model's output width differs from the registered feature_dim.
    """
    from imgfeat.core.image import images_to_batch

    info = spec.info
    failures: list[Failure] = []
    present = [i for i, p in enumerate(payloads) if p is not None]
    for i, p in enumerate(payloads):
        if p is None:
            failures.append(Failure(ids[i], "image_decode_error", "image is NULL"))
    batch, ok, bad = images_to_batch([payloads[i] for i in present], info.preprocessing, max_pixels=spec.max_pixels)
    for i, err in bad:
        failures.append(Failure(ids[present[i]], err.error_class, err.message, err.detail, err.hint))
    good_ids = [ids[present[i]] for i in ok]
    if not good_ids:
        return [], np.empty((0, info.feature_dim), dtype=np.float32), failures
    features = model.run(batch)
    if features.shape[1] != info.feature_dim:
        raise ModelError(
            f"model {info.name!r} produced {features.shape[1]} features, registered as {info.feature_dim}"
        )
    return good_ids, features, failures


PINNED_ERRORS = (ConfigurationError, InsufficientPrivilegeError)
"""What :func:`imgfeat.db.catalog.pin_view` raises when a table changed since the driver checked it."""

TARGET_VIEW = "pg_temp.imgfeat_spark_target"
SOURCE_VIEW = "pg_temp.imgfeat_spark_source"


def pin_target(conn: Any, spec: JobSpec) -> None:
    """Bind :data:`TARGET_VIEW` to the target's OID for the rest of ``conn``'s transaction
    (:func:`imgfeat.db.catalog.pin_view`; it must still belong to the connecting role).

    Raises:
        ConfigurationError: the target was dropped.
        InsufficientPrivilegeError: its name leads to another table now, or it belongs to another role.
    """
    from imgfeat.db import catalog

    from .db import PsycopgDatabase

    assert spec.target is not None and spec.target_oid is not None
    catalog.pin_view(PsycopgDatabase(conn), TARGET_VIEW, spec.target_oid, spec.target, "target",
                     "s.id, s.model_name, s.features", owned=True, job="the Spark job",
                     again="Run the Spark job again to go on")


def pin_source(conn: Any, spec: JobSpec, source: str, id_column: str, image_column: str) -> None:
    """Bind :data:`SOURCE_VIEW` (the quoted ``id_column`` and ``image_column``) to the source's
    OID, checked as ``source``, for the rest of ``conn``'s transaction (:func:`imgfeat.db.catalog.pin_view`).

    Raises:
        ConfigurationError: the source was dropped.
        InsufficientPrivilegeError: its name leads to another relation now.
    """
    from imgfeat.db import catalog

    from .db import PsycopgDatabase

    assert spec.source_oid is not None
    catalog.pin_view(PsycopgDatabase(conn), SOURCE_VIEW, spec.source_oid, source, "source",
                     f"s.{id_column}, s.{image_column}", owned=False, job="the Spark job",
                     again="Run the Spark job again to go on")


def pin_search_path(conn: Any) -> None:
    """Set ``conn``'s search_path to ``pg_catalog, pg_temp`` for the rest of its session, as the
    in-database procedures pin theirs: every table an executor touches is named by the pinned
    views or schema-qualified, so no operator, function or type another role put in a schema on
    the caller's path (``public``) can be picked for an executor's ``=``, ``>`` or cast and run
    with the caller's rights. Commits if ``conn`` is not in autocommit mode."""
    conn.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)")
    if not conn.autocommit:
        conn.commit()


class _Writer:
    """One connection per partition: done-id lookups, COPY + INSERT ... ON CONFLICT per batch,
    each transaction through :data:`TARGET_VIEW` (:func:`pin_target`), dropped before its commit."""

    TEMP = "imgfeat_spark_batch"

    def __init__(self, spec: JobSpec) -> None:
        import psycopg

        assert spec.dsn is not None and spec.target is not None and spec.target_oid is not None
        self.spec = spec
        self.conn = psycopg.connect(spec.dsn, autocommit=False, application_name="imgfeat spark executor")
        pin_search_path(self.conn)
        self.conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {self.TEMP} (id {spec.id_type}, features real[]) ON COMMIT DELETE ROWS"
        )
        self.conn.commit()
        self._done = (
            f"SELECT t.id FROM {TARGET_VIEW} t WHERE t.model_name = %s AND t.id = ANY (%s::{spec.id_type}[])"
        )
        self._insert = (
            f"INSERT INTO {TARGET_VIEW} (id, model_name, features) SELECT b.id, %s, b.features "
            f"FROM pg_temp.{self.TEMP} b ON CONFLICT (id, model_name) DO NOTHING"
        )

    def done(self, ids: list[Any]) -> set[Any]:
        """The ids of ``ids`` that already have features for the model.

        Raises:
            ConfigurationError, InsufficientPrivilegeError: see :func:`pin_target`.
        """
        with self.conn.transaction():
            pin_target(self.conn, self.spec)
            rows = self.conn.execute(self._done, (self.spec.model_name, ids)).fetchall()
            self.conn.execute(f"DROP VIEW {TARGET_VIEW}")
        self.conn.commit()
        return {r[0] for r in rows}

    def write(self, ids: list[Any], features: np.ndarray, failures: list[Failure]) -> int:
        """Insert the batch (and record/clear failures for a table source) in one transaction;
        returns the rows inserted (fewer than ``len(ids)`` when a concurrent job got there first).

        Raises:
            ConfigurationError, InsufficientPrivilegeError: see :func:`pin_target` (nothing of
                the batch is written).
        """
        spec = self.spec
        inserted = 0
        with self.conn.transaction():
            pin_target(self.conn, spec)
            if ids:
                with self.conn.cursor() as cur:
                    with cur.copy(f"COPY pg_temp.{self.TEMP} (id, features) FROM STDIN") as copy:
                        for i, vec in zip(ids, features.astype(np.float32).tolist()):
                            copy.write_row((i, vec))
                    cur.execute(self._insert, (spec.model_name,))
                    inserted = cur.rowcount
            if spec.source_oid is not None:
                # imgfeat.featurize_errors is written by imgfeat's own functions, which check that
                # the caller may run the job (read the source, write the target): one row per
                # (source, target, model, id), as CALL imgfeat.featurize keeps it. Both by OID.
                job = (spec.source_oid, spec.target_oid, spec.model_name)
                if ids:
                    self.conn.execute(
                        "SELECT imgfeat_internal.clear_errors(%s::oid::regclass, %s::oid::regclass, %s, %s::text[])",
                        (*job, [str(i) for i in ids]),
                    )
                if failures:
                    self.conn.execute(
                        "SELECT imgfeat_internal.record_errors(%s::oid::regclass, %s::oid::regclass, %s, %s::text[], "
                        "%s::text[], %s::text[])",
                        (*job, [str(f.id) for f in failures], [f.error_class for f in failures],
                         [f.message for f in failures]),
                    )
            self.conn.execute(f"DROP VIEW {TARGET_VIEW}")
        self.conn.commit()
        return inserted

    def close(self) -> None:
        self.conn.close()


def _batches(rows: Iterable[tuple[Any, bytes | None]], size: int) -> Iterator[list[tuple[Any, bytes | None]]]:
    it = iter(rows)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def write_partition(
    spec: JobSpec, model_bytes: Any, rows: Iterable[tuple[Any, bytes | None]]
) -> PartitionSummary:
    """Featurize ``rows`` (id, encoded image or None) into ``spec.target``; see the module docstring.

    A target (or psycopg-read source) dropped, replaced or given to another role since the
    driver checked it stops the partition: :attr:`PartitionSummary.error` says which and why
    (the driver raises it); what was committed stays.

    Raises:
        ModelError: the bytes do not match the registered sha256, or the output width is wrong.
        psycopg.Error: the database refused a write (Spark retries the task; committed
            batches are not redone).
    """
    started, cpu = time.perf_counter(), time.process_time()
    summary = PartitionSummary(worker_pid=os.getpid())
    summary.executor, tree_start = executor_cpu()
    writer: _Writer | None = None
    model = None
    try:
        for chunk in _batches(rows, spec.batch_size):
            if writer is None:
                writer = _Writer(spec)
            done = writer.done([i for i, _ in chunk])
            todo = [(i, p) for i, p in chunk if i not in done]
            summary.already_done += len(chunk) - len(todo)
            if not todo:
                continue
            if model is None:
                loading = time.perf_counter()
                model = model_for(spec, model_bytes)
                summary.model_seconds = time.perf_counter() - loading
            good_ids, features, failures = featurize_batch(spec, model, [i for i, _ in todo], [p for _, p in todo])
            if failures and spec.on_error == "raise":
                summary.add_failure(failures[0])
                summary.stopped = True
                return summary
            writer.write(good_ids, features, failures)
            summary.featurized += len(good_ids)
            for f in failures:
                summary.add_failure(f)
    except PINNED_ERRORS as exc:
        summary.error = Failure(None, exc.error_class, exc.message, exc.detail, exc.hint)
    finally:
        if writer is not None:
            writer.close()
        summary.seconds = time.perf_counter() - started
        summary.cpu_seconds = time.process_time() - cpu
        summary.tree_cpu = (tree_start, executor_cpu()[1])
    return summary


def feature_rows(
    spec: JobSpec, model_bytes: Any, rows: Iterable[tuple[Any, bytes | None]], failed: Any = None
) -> Iterator[tuple[Any, str, list[float]]]:
    """Featurize ``rows`` and yield ``(id, model_name, features)`` (for Parquet output).

    ``failed``: with ``on_error='skip'``, called with each :class:`Failure` (a Spark
    accumulator's ``add``); None drops them silently.

    Raises:
        ImgfeatError: with ``on_error='raise'``, the first failed image's error, naming its id.
    """
    model = None
    for chunk in _batches(rows, spec.batch_size):
        if model is None:
            model = model_for(spec, model_bytes)
        good_ids, features, failures = featurize_batch(spec, model, [i for i, _ in chunk], [p for _, p in chunk])
        if failures and spec.on_error == "raise":
            raise failure_error(failures[0])
        for f in failures:
            if failed is not None:
                failed(f)
        for i, vec in zip(good_ids, features.astype(np.float32).tolist()):
            yield i, spec.model_name, vec


def error_type(error_class: str, default: type[ImgfeatError] = ImageDecodeError) -> type[ImgfeatError]:
    """The ImgfeatError subclass whose :attr:`~ImgfeatError.error_class` is ``error_class``, else ``default``."""
    from imgfeat.core import errors

    cls_name = "".join(part.capitalize() for part in error_class.split("_"))
    cls = getattr(errors, cls_name, default)
    return cls if isinstance(cls, type) and issubclass(cls, ImgfeatError) else default


def stop_error(f: Failure) -> ImgfeatError:
    """The ImgfeatError that stopped a partition (:attr:`PartitionSummary.error`), rebuilt on the driver."""
    return error_type(f.error_class, ImgfeatError)(f.message, detail=f.detail, hint=f.hint)


def failure_error(f: Failure) -> ImgfeatError:
    """The ImgfeatError (of the failure's class) that ``on_error='raise'`` raises for ``f``."""
    cls = error_type(f.error_class)
    return cls(
        f"image id={f.id} could not be featurized: {f.message}",
        detail=f.detail,
        hint=sentences(f.hint, "Pass on_error='skip' to record failures and go on."),
    )


def sentences(*parts: str | None) -> str:
    """The non-empty ``parts`` joined as sentences: each ends with a full stop (unless it ends
    with ``.``, ``!``, ``?`` or ``:``), separated by one space."""
    out = []
    for p in parts:
        p = (p or "").strip()
        if p:
            out.append(p if p[-1] in ".!?:" else p + ".")
    return " ".join(out)


def id_order(value: Any) -> tuple[int, Any]:
    """A sort key giving the id column's order: integers numerically (1, 50, 1000), anything
    else as text (file paths, text ids)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def read_table_range(
    spec: JobSpec, source: str, id_column: str, image_column: str, lower: Any, upper: Any
) -> Iterator[tuple[Any, bytes | None]]:
    """Stream ``(id, image)`` of the rows of the source table ``spec.source_oid`` with ``lower < id
    <= upper`` (None: unbounded), in id order, through a server-side cursor; with a PostgreSQL
    target, only the rows that have no features yet for the model.

    ``source`` (the source's name when the driver checked it), ``id_column`` and
    ``image_column`` are already quoted identifiers (the driver quotes them); the bounds and the
    model name are passed as parameters. The read is one transaction, through temporary views
    bound to the source's and the target's OIDs (:func:`imgfeat.db.catalog.pin_view`): no
    relation put under their names since the driver checked them is read.

    Raises:
        ConfigurationError, InsufficientPrivilegeError: the source or the target was dropped or
            replaced (or the target given to another role) since the driver checked it.
    """
    import psycopg

    assert spec.dsn is not None and spec.source_oid is not None
    where = [f"s.{id_column} IS NOT NULL"]
    params: list[Any] = []
    if lower is not None:
        where.append(f"s.{id_column} > %s")
        params.append(lower)
    if upper is not None:
        where.append(f"s.{id_column} <= %s")
        params.append(upper)
    if spec.target is not None:
        where.append(f"NOT EXISTS (SELECT 1 FROM {TARGET_VIEW} t WHERE t.id = s.{id_column} AND t.model_name = %s)")
        params.append(spec.model_name)
    query = (
        f"SELECT s.{id_column}, s.{image_column} FROM {SOURCE_VIEW} s WHERE {' AND '.join(where)} "
        f"ORDER BY s.{id_column}"
    )
    with psycopg.connect(spec.dsn, application_name="imgfeat spark reader") as conn:
        pin_search_path(conn)
        # One transaction (not autocommit): the views, their locks and the cursor last until its end.
        pin_source(conn, spec, source, id_column, image_column)
        if spec.target is not None:
            pin_target(conn, spec)
        with conn.cursor(name="imgfeat_spark_read") as cur:
            cur.itersize = max(spec.batch_size, 16)
            cur.execute(query, params)
            for row in cur:
                yield row[0], row[1]
        # Nothing of the job stays in the catalog after its commit (a view would hold up a DROP of the
        # tables until the session's end); an error or an early close rolls them back.
        conn.execute(f"DROP VIEW IF EXISTS {TARGET_VIEW}, {SOURCE_VIEW}")
