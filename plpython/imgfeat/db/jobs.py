"""``CALL imgfeat.featurize(...)``: featurize a table in committed batches, resumably.

Rows are read in ``id`` order with a keyset cursor (each batch asks for the next
``batch_size`` rows after the last id seen that have no features yet for the model), so
every batch can be committed: a crash or a cancel keeps what was done, and calling again
featurizes only the rows not yet done. The target has one row per (id, model_name).

Failed images: with ``on_error => 'skip'`` each is recorded in ``imgfeat.featurize_errors``
and the job goes on; with ``'raise'`` (the default) the job stops with an ERROR naming the
id, keeping the batches already committed.

Every transaction of a job reads its source and writes its target through temporary views
bound to the OIDs it checked when it started (:class:`Pinned`), never by name: a table put
under either name between batches is never read or written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import (
    ImageDecodeError,
    ImgfeatError,
    InsufficientPrivilegeError,
    InvalidParameterError,
)
from ..core.real_text import real_array_rows
from . import catalog, state
from .catalog import Column, Relation

ON_ERROR = ("raise", "skip")
MAX_BATCH = 512
"""Largest ``batch_size``: a batch's decoded tensor is 0.6 MB per 224x224 image, and several
batches are in flight at once (fetched, decoded, running, being stored)."""

MAX_BATCH_BYTES = 256 * 1024 * 1024
"""Encoded image bytes fetched per batch at most (at least one row): a batch of large images
is cut short rather than held whole."""
NOTICE_SECONDS = 10.0
"""A progress NOTICE at most this often (seconds), plus one at the end."""


def _check_unique_ids(plpy: Any, src: Relation, id_col: Column, source: str) -> None:
    """The target keeps one row per id, so duplicate ids would lose images silently. ``source``:
    the name to read ``src`` by (:attr:`Pinned.SOURCE`).

    Raises:
        InvalidParameterError: ids that appear more than once (up to 10 named).
    Rows whose id is NULL cannot be stored: a NOTICE counts them.
    """
    unique = plpy.execute(
        plpy.prepare(
            "SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = $1::pg_catalog.oid AND i.indisunique AND i.indnkeyatts = 1 "
            "AND i.indpred IS NULL AND a.attname = $2",
            ["int8", "text"],
        ),
        [src.oid, id_col.name],
    )
    if not unique:
        dups = plpy.execute(
            f"SELECT s.{id_col.quoted}::text AS id FROM {source} s WHERE s.{id_col.quoted} IS NOT NULL "
            f"GROUP BY s.{id_col.quoted} HAVING count(*) > 1 ORDER BY 1 LIMIT 10"
        )
        if dups:
            raise InvalidParameterError(
                f"id column {id_col.name!r} of {src.quoted} is not unique: "
                f"{', '.join(r['id'] for r in dups)}{' and more' if len(dups) == 10 else ''} appear more than once",
                detail="The target keeps one row of features per id and model.",
                hint="Featurize a view that gives each image its own id (e.g. row_number() or the primary key).",
            )
    nulls = plpy.execute(f"SELECT count(*) AS n FROM {source} s WHERE s.{id_col.quoted} IS NULL")[0]["n"]
    if nulls:
        plpy.notice(f"imgfeat.featurize: {nulls} rows of {src.quoted} have a NULL {id_col.name} and are skipped")


class Pinned:
    """The job's source and target, bound to the OIDs checked at the start in every transaction.

    A name is looked up again whenever a statement is planned, and a job's plans are replanned
    after each of its commits: between two batches, the owner of the target's (or the source's)
    schema could drop the table and put one of its own under the same name, whose triggers,
    rules, policies or view functions would run with the caller's rights (or rename the schema
    and put another one under its name, which locks no table). So the job never names them:
    in each transaction it creates temporary views ``pg_temp.imgfeat_job_source`` (the id and
    image columns) and ``pg_temp.imgfeat_job_target`` (id, model_name, features) over the
    names the OIDs have now, checks that each view reads exactly its OID (``pg_depend``: a name
    taken over in between shows there), and that the target still belongs to the caller
    (:func:`imgfeat.db.catalog.pin_view`, which the Spark executors use too); the
    views' creation holds a lock on both relations (no DROP, RENAME or OWNER TO until the
    commit), and every query of the transaction reads and writes through them. They are dropped
    before each commit, so nothing of the job's stays behind in the catalog between batches (the
    caller or the schema's owner may drop the tables; the next batch then stops with an error,
    keeping what was committed).
    """

    SOURCE = "pg_temp.imgfeat_job_source"
    TARGET = "pg_temp.imgfeat_job_target"

    def __init__(self, plpy: Any, src: Relation, id_col: Column, img_col: Column) -> None:
        self.plpy = plpy
        self.db = catalog.PlpyDatabase(plpy)
        self.src = src
        self.columns = f"s.{id_col.quoted}, s.{img_col.quoted}"
        self.tgt: Relation | None = None
        self.open = False

    def check_temp_privilege(self) -> None:
        """The views need the TEMPORARY privilege on the database.

        Raises:
            InsufficientPrivilegeError: the caller may not create temporary tables.
        """
        ok = self.plpy.execute(
            "SELECT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'TEMPORARY') AS ok"
        )[0]["ok"]
        if not ok:
            raise InsufficientPrivilegeError(
                "CALL imgfeat.featurize needs the TEMPORARY privilege on this database",
                detail="A job reads its source and writes its target through temporary views bound to the "
                "tables checked when it started, so that no table put under their names later is used.",
                hint="GRANT TEMPORARY ON DATABASE <db> TO <role>;",
            )

    def ensure(self) -> None:
        """Create this transaction's views, if not yet (see the class docstring).

        Raises:
            ConfigurationError: the source or target was dropped while the job ran.
            InsufficientPrivilegeError: the target no longer belongs to the caller, or a name
                did not lead to the checked OID.
        """
        if self.open:
            return
        self.open = True  # close() drops whatever part was created
        self._view(self.SOURCE, self.src, "source", self.columns)
        if self.tgt is not None:
            self._view(self.TARGET, self.tgt, "target", "s.id, s.model_name, s.features")

    def _view(self, view: str, rel: Relation, what: str, columns: str) -> None:
        catalog.pin_view(self.db, view, rel.oid, rel.quoted, what, columns, owned=what == "target")

    def close(self) -> None:
        """Drop this transaction's views (before its commit)."""
        if self.open:
            self.open = False
            self.plpy.execute(f"DROP VIEW IF EXISTS {self.TARGET}, {self.SOURCE}")


def _lock_job(plpy: Any, src: Relation, tgt: Relation, model_name: str) -> None:
    """One job at a time per (source, target, model): a session-level advisory lock, released
    when the job ends (or its session does). Its key is 64 random bits that
    ``imgfeat_internal.job_lock_key`` hands only to roles that may run the job (read the source,
    write the target): a key anyone could compute would let another role take the lock first
    and block the job for good. A running job's key shows in ``pg_locks``: one found held by a
    backend that is not running this job is replaced there by a fresh key. The function keeps
    the job's row locked until this transaction (which records the job) commits, and gives
    NULL while another session holds it, i.e. is starting the same job.

    Raises:
        InvalidParameterError: another session runs (or is starting) the same job.
    """
    key: int | None = plpy.execute(
        plpy.prepare(
            "SELECT imgfeat_internal.job_lock_key($1::pg_catalog.oid::pg_catalog.regclass, "
            "$2::pg_catalog.oid::pg_catalog.regclass, $3) AS key",
            ["int8", "int8", "text"],
        ),
        [src.oid, tgt.oid, model_name],
    )[0]["key"]
    try_lock = plpy.prepare("SELECT pg_catalog.pg_try_advisory_lock($1) AS ok", ["int8"])
    if key is None or not plpy.execute(try_lock, [key])[0]["ok"]:
        raise InvalidParameterError(
            f"a featurize job from {src.quoted} into {tgt.quoted} with model {model_name!r} is already running",
            hint="Watch it in imgfeat.featurize_progress; call again when it has finished (it resumes where it stopped).",
        )
    _HELD_LOCKS.append(key)


def release_job_locks(plpy: Any) -> None:
    """Release the advisory locks taken by :func:`_lock_job` (best effort)."""
    while _HELD_LOCKS:
        key = _HELD_LOCKS.pop()
        try:
            plpy.execute(plpy.prepare("SELECT pg_catalog.pg_advisory_unlock($1)", ["int8"]), [key])
        except plpy.SPIError:
            pass


_HELD_LOCKS: list[int] = []


class Progress:
    """Rows done, rate and ETA for the job row and NOTICEs."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self.last_notice = self.started
        self.seconds = {"decode": 0.0, "inference": 0.0, "database": 0.0}

    def timings(self) -> str:
        """Seconds spent so far per stage, as JSON (decode and database work overlap inference)."""
        import json

        return json.dumps({k: round(v, 3) for k, v in self.seconds.items()})

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self) -> float | None:
        rate = self.rate
        left = self.total - self.done - self.failed
        return left / rate if rate > 0 else None

    def message(self, model: str, target: str) -> str:
        eta = self.eta_seconds()
        eta_text = f", ETA {eta:.0f} s" if eta is not None and self.done + self.failed < self.total else ""
        return (
            f"imgfeat.featurize {target} ({model}): {self.done + self.failed}/{self.total} rows, "
            f"{self.done} featurized, {self.failed} failed, {self.rate:.1f} images/s{eta_text}"
        )


def featurize(
    plpy: Any,
    caller: state.Caller,
    target: str,
    model_name: str,
    id_column: str,
    image_column: str,
    batch_size: int,
    on_error: str,
) -> None:
    """The body of ``CALL imgfeat.featurize``; see the module docstring. ``caller``: the source's
    OID and the caller's current schema (:func:`imgfeat.db.state.procedure_context`)."""
    try:
        _featurize(plpy, caller, target, model_name, id_column, image_column, batch_size, on_error)
    finally:
        release_job_locks(plpy)


def _featurize(
    plpy: Any, caller: state.Caller, target: str, model_name: str, id_column: str, image_column: str, batch_size: int,
    on_error: str,
) -> None:
    if on_error not in ON_ERROR:
        raise InvalidParameterError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if batch_size is None or not 1 <= batch_size <= MAX_BATCH:
        raise InvalidParameterError(f"batch_size must be between 1 and {MAX_BATCH}, not {batch_size}")
    db = catalog.PlpyDatabase(plpy)
    src = catalog.relation(db, caller.source_oid)
    id_col = src.column(id_column, "id")
    img_col, from_paths = catalog.image_column(src, image_column)
    catalog.check_id_column(src, id_col)
    pinned = Pinned(plpy, src, id_col, img_col)
    pinned.check_temp_privilege()
    try:
        _run(plpy, caller, db, src, id_col, img_col, from_paths, pinned, target, model_name, batch_size, on_error)
    finally:
        try:
            pinned.close()
        except plpy.SPIError:  # a failed transaction: its rollback drops them
            pass


def _run(
    plpy: Any, caller: state.Caller, db: catalog.Database, src: Relation, id_col: Column, img_col: Column,
    from_paths: bool, pinned: Pinned, target: str, model_name: str, batch_size: int, on_error: str,
) -> None:
    """The job once its source is known: every query reads and writes through ``pinned``, and
    every commit drops its views first (``commit`` below)."""
    # Ids are read, compared and stored as the type under any domain (a domain's CHECK is its
    # owner's code, which would run with the caller's rights): base is that type's name.
    base = id_col.base_type
    pinned.ensure()
    current = state.current_settings(plpy)
    info = state.model_info(plpy, model_name)
    model = state.session_for(plpy, info, current)
    root = state.image_root(plpy) if from_paths else None
    _check_unique_ids(plpy, src, id_col, Pinned.SOURCE)
    tgt = catalog.target_table(db, target, base, caller.schema)
    pinned.tgt = tgt
    pinned.close()
    pinned.ensure()
    _lock_job(plpy, src, tgt, model_name)
    spec = info.preprocessing
    dim = info.feature_dim

    def commit() -> None:
        pinned.close()
        caller.commit()

    todo = (
        f"FROM {Pinned.SOURCE} s WHERE s.{id_col.quoted} IS NOT NULL AND NOT EXISTS "
        f"(SELECT 1 FROM {Pinned.TARGET} t WHERE t.id = s.{id_col.quoted}::{base} AND t.model_name = $1)"
    )
    total = plpy.execute(plpy.prepare(f"SELECT count(*) AS n {todo}", ["text"]), [model_name])[0]["n"]
    # The next rows in id order, batch_size at most, cut where their encoded bytes pass
    # MAX_BATCH_BYTES (octet_length reads a stored value's size without detoasting it).
    select = (
        f"SELECT s.{id_col.quoted}::{base} AS id, s.{img_col.quoted} AS image, "
        f"pg_catalog.octet_length(s.{img_col.quoted}) AS size, "
        f"pg_catalog.sum(pg_catalog.octet_length(s.{img_col.quoted})) OVER (ORDER BY s.{id_col.quoted} "
        f"ROWS UNBOUNDED PRECEDING) AS upto {todo}"
    )
    budget = f"SELECT q.id, q.image FROM ({{}}) q WHERE COALESCE(q.upto - q.size, 0) < {MAX_BATCH_BYTES} ORDER BY q.id"
    first = plpy.prepare(budget.format(f"{select} ORDER BY s.{id_col.quoted} LIMIT $2"), ["text", "int4"])
    after = plpy.prepare(
        budget.format(f"{select} AND s.{id_col.quoted}::{base} > $3 ORDER BY s.{id_col.quoted} LIMIT $2"),
        ["text", "int4", base],
    )
    # One row per (id, features literal): each literal is parsed once. (Slicing one big
    # real[] parameter per row re-parsed the whole batch for every row under a generic plan.)
    insert = plpy.prepare(
        f"INSERT INTO {Pinned.TARGET} (id, model_name, features) "
        "SELECT u.id, $2, u.features::real[] "
        f"FROM ROWS FROM (pg_catalog.unnest($1::{base}[]), pg_catalog.unnest($3::text[])) AS u(id, features) "
        "ON CONFLICT (id, model_name) DO NOTHING",
        ["text", "text", "text[]"],
    )
    args = [src.oid, tgt.oid, model_name]
    record_errors = plpy.prepare(  # one row per failing (source, target, model, id): the latest failure
        "SELECT imgfeat_internal.record_errors($1::pg_catalog.oid::pg_catalog.regclass, "
        "$2::pg_catalog.oid::pg_catalog.regclass, $3, $4, $5, $6)",
        ["int8", "int8", "text", "text[]", "text[]", "text[]"],
    )
    clear_errors = plpy.prepare(
        "SELECT imgfeat_internal.clear_errors($1::pg_catalog.oid::pg_catalog.regclass, "
        "$2::pg_catalog.oid::pg_catalog.regclass, $3, $4)",
        ["int8", "int8", "text", "text[]"],
    )
    job_id = plpy.execute(
        plpy.prepare(
            "SELECT imgfeat_internal.start_job($1::pg_catalog.oid::pg_catalog.regclass, "
            "$2::pg_catalog.oid::pg_catalog.regclass, $3, $4) AS job_id",
            ["int8", "int8", "text", "int8"],
        ),
        [*args, total],
    )[0]["job_id"]
    update_job = plpy.prepare(
        "SELECT imgfeat_internal.update_job($1, $2, $3, $4, $5, $6::pg_catalog.jsonb, $7)",
        ["int8", "int8", "int8", "float8", "text", "text", "text"],
    )
    commit()

    progress = Progress(total)
    infer_pool = _inference_pool()
    interruptible = state.interrupt_check(plpy)

    def fetch(after_id: Any) -> list[Any]:
        pinned.ensure()
        if after_id is None:
            return list(plpy.execute(first, [model_name, batch_size]))
        return list(plpy.execute(after, [model_name, batch_size, after_id]))

    def prepare(rows: list[Any]) -> Prepared:
        ids = [r["id"] for r in rows]
        images = [r["image"] for r in rows]
        prepared = prepare_batch(ids, images, spec, current.max_image_pixels, root, between=interruptible)
        progress.seconds["decode"] += prepared.seconds
        return prepared

    def infer(batch: np.ndarray) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        features = model.run(batch)
        return features, time.perf_counter() - started

    def store(prepared: Prepared, running: Any) -> None:
        """Wait for a batch's features, insert them, record its failures, commit."""
        if running is not None:
            features, seconds = running.result()
            progress.seconds["inference"] += seconds
            if features.shape[1] != dim:
                raise InvalidParameterError(
                    f"model {model_name!r} produced {features.shape[1]} features, registered as {dim}"
                )
        started = time.perf_counter()
        good_ids = prepared.good_ids
        pinned.ensure()
        if good_ids:
            id_text = "{" + ",".join(_array_element(i) for i in good_ids) + "}"
            plpy.execute(insert, [id_text, model_name, real_array_rows(features)])
            plpy.execute(clear_errors, [*args, [str(i) for i in good_ids]])
        if prepared.failures:
            plpy.execute(record_errors, [*args, [str(i) for i, _ in prepared.failures],
                                         [e.error_class for _, e in prepared.failures],
                                         [e.message for _, e in prepared.failures]])
        progress.done += len(good_ids)
        progress.failed += len(prepared.failures)
        plpy.execute(update_job, [job_id, progress.done, progress.failed, progress.rate, "running", progress.timings(), None])
        commit()
        progress.seconds["database"] += time.perf_counter() - started
        now = time.monotonic()
        if now - progress.last_notice >= NOTICE_SECONDS:
            progress.last_notice = now
            plpy.notice(progress.message(model_name, tgt.quoted))

    # Pipeline: while onnxruntime runs batch k in its own thread (session.run releases the
    # GIL), this thread fetches and decodes batch k+1 and stores batch k-1. (A separate decode
    # thread was no faster on 2 cores: one thread besides onnxruntime's competes less.)
    try:
        rows = fetch(None)
        pending = prepare(rows) if rows else None
        inflight: tuple[Prepared, Any] | None = None
        while pending is not None:
            prepared = pending
            if prepared.failures and on_error == "raise":
                if inflight is not None:
                    store(*inflight)  # keep every batch before the bad one
                bad_id, err = prepared.failures[0]
                raise type(err)(
                    f"image id={bad_id} in {src.quoted} could not be featurized: {err.message}",
                    detail=err.detail,
                    hint=(err.hint.rstrip(".") + ". " if err.hint else "")
                    + "Pass on_error => 'skip' to record failures in imgfeat.featurize_errors and go on.",
                )
            running = infer_pool.submit(infer, prepared.batch) if prepared.good_ids else None
            started = time.perf_counter()
            next_rows = fetch(rows[-1]["id"])
            progress.seconds["database"] += time.perf_counter() - started
            pending = prepare(next_rows) if next_rows else None
            rows = next_rows
            if inflight is not None:
                store(*inflight)
            inflight = (prepared, running)
        if inflight is not None:
            store(*inflight)
    except Exception as exc:  # the job row says why it stopped; what was done stays done
        message = exc.message if isinstance(exc, ImgfeatError) else str(exc).split("\n", 1)[0]
        try:
            plpy.execute(update_job, [job_id, progress.done, progress.failed, progress.rate, "failed",
                                      progress.timings(), message])
            commit()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        raise
    plpy.execute(update_job, [job_id, progress.done, progress.failed, progress.rate, "done", progress.timings(), None])
    commit()
    if total == 0:
        plpy.notice(f"imgfeat.featurize {tgt.quoted} ({model_name}): nothing to do: every row of {src.quoted} "
                    "already has features (100 %)")
    else:
        plpy.notice(progress.message(model_name, tgt.quoted))


@dataclass
class Prepared:
    """A decoded batch: float32 NCHW tensor of the good images, their ids, and the failures."""

    good_ids: list[Any]
    batch: np.ndarray
    failures: list[tuple[Any, ImgfeatError]]
    seconds: float


def prepare_batch(
    ids: list[Any], images: list[Any], spec: Any, max_pixels: int, root: str | None,
    between: Any = None,
) -> Prepared:
    """Read (paths under ``root`` when given, one file at a time) and decode one batch;
    ``between`` runs before each image (the caller lets PostgreSQL act on a cancel there)."""
    from ..core import files, image

    started = time.perf_counter()
    read = None if root is None else (lambda path: files.read_image_file(root, path))
    batch, ok, bad = image.images_to_batch(images, spec, max_pixels=max_pixels, read=read, between=between)
    return Prepared([ids[j] for j in ok], batch, [(ids[j], err) for j, err in bad], time.perf_counter() - started)


_POOL: list[Any] = []


def _inference_pool() -> Any:
    """One onnxruntime thread per backend, created on first use (``session.run`` releases the
    GIL, so the backend's own thread meanwhile decodes and talks to the database)."""
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgfeat-infer"))
    return _POOL[0]


def _array_element(value: Any) -> str:
    """An element of an array literal: double-quoted, with \\ and " escaped."""
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
