"""``CALL imgfeat.featurize(...)``: featurize a table in committed batches, resumably.

Rows are read in ``id`` order with a keyset cursor (each batch asks for the next
``batch_size`` rows after the last id seen that have no features yet for the model), so
every batch can be committed: a crash or a cancel keeps what was done, and calling again
featurizes only the rows not yet done. The target has one row per (id, model_name).

Failed images: with ``on_error => 'skip'`` each is recorded in ``imgfeat.featurize_errors``
and the job goes on; with ``'raise'`` (the default) the job stops with an ERROR naming the
id, keeping the batches already committed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ImageDecodeError, ImgfeatError, InvalidParameterError

ON_ERROR = ("raise", "skip")
MAX_BATCH = 4096
NOTICE_SECONDS = 10.0
"""A progress NOTICE at most this often (seconds), plus one at the end."""


@dataclass(frozen=True)
class Column:
    name: str
    quoted: str
    type: str


@dataclass(frozen=True)
class Relation:
    oid: int
    quoted: str
    columns: dict[str, Column]


def relation(plpy: Any, regclass_text: str) -> Relation:
    """A table's OID, schema-qualified quoted name and columns (name -> Column)."""
    rows = plpy.execute(
        plpy.prepare(
            "SELECT c.oid::int8 AS oid, pg_catalog.format('%I.%I', n.nspname, c.relname) AS quoted "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = $1::pg_catalog.regclass",
            ["text"],
        ),
        [regclass_text],
    )
    oid, quoted = rows[0]["oid"], rows[0]["quoted"]
    cols = plpy.execute(
        plpy.prepare(
            "SELECT a.attname::text AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type "
            "FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1::pg_catalog.oid AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY a.attnum",
            ["int8"],
        ),
        [oid],
    )
    columns = {r["name"]: Column(r["name"], plpy.quote_ident(r["name"]), r["type"]) for r in cols}
    return Relation(oid, quoted, columns)


def column(rel: Relation, name: str, role: str) -> Column:
    if name not in rel.columns:
        raise InvalidParameterError(
            f"{role} column {name!r} does not exist in {rel.quoted}",
            detail=f"columns: {', '.join(rel.columns)}",
        )
    return rel.columns[name]


def _check_id_type(plpy: Any, src: Relation, id_col: Column) -> None:
    """The id column must be a scalar type with an ordering (integer, text, uuid, date, ...).

    Raises:
        InvalidParameterError: bytea, json, xml, arrays, composites, ranges.
    """
    row = plpy.execute(
        plpy.prepare(
            "SELECT t.typtype::text AS kind, t.typcategory::text AS category "
            "FROM pg_catalog.pg_attribute att JOIN pg_catalog.pg_type t ON t.oid = att.atttypid "
            "WHERE att.attrelid = $1::pg_catalog.oid AND att.attname = $2",
            ["int8", "text"],
        ),
        [src.oid, id_col.name],
    )[0]
    if row["kind"] not in ("b", "d", "e") or row["category"] == "A" or id_col.type in ("bytea", "json", "xml"):
        raise InvalidParameterError(
            f"id column {id_col.name!r} is {id_col.type}: it must be a scalar type with an ordering "
            "(integer, bigint, text, uuid, date, timestamp, ...)",
            hint="pass id_column => the table's key column",
        )


def _check_unique_ids(plpy: Any, src: Relation, id_col: Column) -> None:
    """The target keeps one row per id, so duplicate ids would lose images silently.

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
            f"SELECT s.{id_col.quoted}::text AS id FROM {src.quoted} s WHERE s.{id_col.quoted} IS NOT NULL "
            f"GROUP BY s.{id_col.quoted} HAVING count(*) > 1 ORDER BY 1 LIMIT 10"
        )
        if dups:
            raise InvalidParameterError(
                f"id column {id_col.name!r} of {src.quoted} is not unique: "
                f"{', '.join(r['id'] for r in dups)}{' and more' if len(dups) == 10 else ''} appear more than once",
                detail="The target keeps one row of features per id and model.",
                hint="Featurize a view that gives each image its own id (e.g. row_number() or the primary key).",
            )
    nulls = plpy.execute(f"SELECT count(*) AS n FROM {src.quoted} s WHERE s.{id_col.quoted} IS NULL")[0]["n"]
    if nulls:
        plpy.notice(f"imgfeat.featurize: {nulls} rows of {src.quoted} have a NULL {id_col.name} and are skipped")


def _lock_job(plpy: Any, src: Relation, tgt: Relation, model_name: str) -> None:
    """One job at a time per (source, target, model): a session-level advisory lock, released
    when the job ends (or its session does). Its key is 64 random bits kept in
    ``imgfeat_internal.job_locks``, which only roles that may read the source can read or
    create (row-level security): a key anyone could compute would let any role that can
    connect take the lock first and block the job for good.

    Raises:
        InvalidParameterError: another session runs the same job.
    """
    plpy.execute(
        plpy.prepare(
            "INSERT INTO imgfeat_internal.job_locks (source, target, model_name) "
            "VALUES ($1::pg_catalog.oid::pg_catalog.regclass, $2::pg_catalog.oid::pg_catalog.regclass, $3) "
            "ON CONFLICT DO NOTHING",
            ["int8", "int8", "text"],
        ),
        [src.oid, tgt.oid, model_name],
    )
    key = plpy.execute(
        plpy.prepare(
            "SELECT lock_key FROM imgfeat_internal.job_locks WHERE source = $1::pg_catalog.oid::pg_catalog.regclass "
            "AND target = $2::pg_catalog.oid::pg_catalog.regclass AND model_name = $3",
            ["int8", "int8", "text"],
        ),
        [src.oid, tgt.oid, model_name],
    )[0]["lock_key"]
    got = plpy.execute(plpy.prepare("SELECT pg_catalog.pg_try_advisory_lock($1) AS ok", ["int8"]), [key])[0]["ok"]
    if not got:
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


def target_relation(plpy: Any, target: str, id_type: str) -> Relation:
    """The target table, created if missing with (id, model_name, features real[], featurized_at).

    ``target`` is parsed as a (possibly schema-qualified, possibly quoted) identifier with
    ``parse_ident``; an unqualified name goes to the current schema.
    """
    if not target or not target.strip():
        raise InvalidParameterError("target must name a table (table or schema.table)")
    try:
        parts = plpy.execute(plpy.prepare("SELECT pg_catalog.parse_ident($1) AS p", ["text"]), [target])[0]["p"]
    except plpy.SPIError:
        raise InvalidParameterError(
            f"target {target!r} is not a valid table name",
            hint='write table, schema.table, or quote unusual names: \'"My Table"\'',
        ) from None
    if len(parts) == 1:
        schema = plpy.execute("SELECT pg_catalog.current_schema() AS s")[0]["s"]
        if schema is None:
            raise InvalidParameterError("no schema to create the target table in: qualify it as schema.table")
        parts = [schema, parts[0]]
    if len(parts) != 2:
        raise InvalidParameterError(f"target {target!r} must be table or schema.table")
    quoted = f"{plpy.quote_ident(parts[0])}.{plpy.quote_ident(parts[1])}"
    exists = plpy.execute(plpy.prepare("SELECT pg_catalog.to_regclass($1) IS NOT NULL AS e", ["text"]), [quoted])[0]["e"]
    if not exists:
        # Jobs started at once into the same new target: one creates it; the others' CREATE
        # fails (the first's table, or its row type, exists) and they use the table it made.
        # No lock is taken: a lock with a key anyone can compute is a lock anyone can hold.
        try:
            plpy.execute(
                f"CREATE TABLE {quoted} (id {id_type} NOT NULL, model_name text NOT NULL, "
                "features real[] NOT NULL, featurized_at timestamptz NOT NULL DEFAULT pg_catalog.now(), "
                "PRIMARY KEY (id, model_name))"
            )
        except plpy.SPIError as exc:
            if getattr(exc, "sqlstate", None) not in ("42P07", "23505"):  # duplicate_table, unique_violation
                raise
    rel = relation(plpy, quoted)
    needed = {"id": None, "model_name": "text", "features": "real[]"}
    for name, typ in needed.items():
        col = rel.columns.get(name)
        if col is None or (typ is not None and col.type != typ):
            raise InvalidParameterError(
                f"target table {rel.quoted} exists but lacks column {name}" + (f" {typ}" if typ else ""),
                hint="Use a new target name, or a table with columns id, model_name text, features real[].",
            )
    has_unique = plpy.execute(
        plpy.prepare(
            "SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = $1::pg_catalog.oid AND i.indisunique "
            "AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_catalog.pg_attribute a "
            "WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) = ARRAY['id', 'model_name']",
            ["int8"],
        ),
        [rel.oid],
    )
    if not has_unique:
        raise InvalidParameterError(
            f"target table {rel.quoted} needs a unique index on (id, model_name)",
            hint=f"CREATE UNIQUE INDEX ON {rel.quoted} (id, model_name);",
        )
    return rel


REAL_DIGITS = 9
"""Significant digits that make any float32 survive a decimal round trip (C's
``FLT_DECIMAL_DIG``): ``'%.9g' % x`` read back by PostgreSQL's ``float4in`` is ``x`` exactly."""


def format_real_array(features: np.ndarray) -> str:
    """A PostgreSQL ``real[]`` literal of a flat float32 array (exact round trip)."""
    return "{" + ",".join(real_elements(features)) + "}"


def real_elements(features: np.ndarray) -> list[str]:
    """The elements of a flat float32 array as ``real`` input texts (``'%.9g'``: exact round trip;
    NaN and infinities as ``nan``, ``inf``, ``-inf``, which ``float4in`` reads).

    About 0.1 us per element: several times cheaper than ``repr`` of each float, and the
    texts are shorter, so ``float4in`` parses them faster too.
    """
    values = np.asarray(features, dtype=np.float32).ravel().tolist()
    if not values:
        return []
    return ((("%.9g," * len(values))[:-1]) % tuple(values)).split(",")


def real_array_rows(features: np.ndarray) -> list[str]:
    """Each row of a float32 [N, D] array as a ``real[]`` literal ``{...}`` (exact round trip)."""
    rows = np.asarray(features, dtype=np.float32).reshape(len(features), -1).tolist()
    if not rows or not rows[0]:
        return ["{}"] * len(rows)
    template = "{" + ("%.9g," * len(rows[0]))[:-1] + "}"
    return [template % tuple(r) for r in rows]


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
    source: str,
    target: str,
    model_name: str,
    id_column: str,
    image_column: str,
    batch_size: int,
    on_error: str,
    *,
    load_model: Any,
    tunables: Any,
    image_root: Any,
) -> None:
    """The body of ``CALL imgfeat.featurize``; see the module docstring.

    ``load_model(plpy, name, knobs)``, ``tunables(plpy)`` and ``image_root(plpy)`` come
    from :mod:`imgfeat.server` (the backend's cache and settings).
    """
    from . import files, image

    if on_error not in ON_ERROR:
        raise InvalidParameterError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if batch_size is None or not 1 <= batch_size <= MAX_BATCH:
        raise InvalidParameterError(f"batch_size must be between 1 and {MAX_BATCH}, not {batch_size}")
    src = relation(plpy, source)
    id_col = column(src, id_column, "id")
    img_col = column(src, image_column, "image")
    _check_id_type(plpy, src, id_col)
    if img_col.type == "bytea":
        from_paths = False
    elif img_col.type in ("text", "character varying") or img_col.type.startswith("character varying"):
        from_paths = True
    else:
        raise InvalidParameterError(
            f"image column {image_column!r} is {img_col.type}; it must be bytea (image bytes) or text (paths under imgfeat.image_root)"
        )
    knobs = tunables(plpy)
    model = load_model(plpy, model_name, knobs)
    root = image_root(plpy) if from_paths else None
    _check_unique_ids(plpy, src, id_col)
    tgt = target_relation(plpy, target, id_col.type)
    _lock_job(plpy, src, tgt, model_name)
    spec = model.meta["info"].preprocessing
    dim = model.meta["info"].feature_dim

    todo = (
        f"FROM {src.quoted} s WHERE s.{id_col.quoted} IS NOT NULL AND NOT EXISTS "
        f"(SELECT 1 FROM {tgt.quoted} t WHERE t.id = s.{id_col.quoted} AND t.model_name = $1)"
    )
    total = plpy.execute(plpy.prepare(f"SELECT count(*) AS n {todo}", ["text"]), [model_name])[0]["n"]
    select = f"SELECT s.{id_col.quoted} AS id, s.{img_col.quoted} AS image {todo}"
    first = plpy.prepare(f"{select} ORDER BY s.{id_col.quoted} LIMIT $2", ["text", "int4"])
    after = plpy.prepare(
        f"{select} AND s.{id_col.quoted} > $3 ORDER BY s.{id_col.quoted} LIMIT $2", ["text", "int4", id_col.type]
    )
    # One row per (id, features literal): each literal is parsed once. (Slicing one big
    # real[] parameter per row re-parsed the whole batch for every row under a generic plan.)
    insert = plpy.prepare(
        f"INSERT INTO {tgt.quoted} (id, model_name, features) "
        "SELECT u.id, $2, u.features::real[] "
        f"FROM ROWS FROM (pg_catalog.unnest($1::{id_col.type}[]), pg_catalog.unnest($3::text[])) AS u(id, features) "
        "ON CONFLICT (id, model_name) DO NOTHING",
        ["text", "text", "text[]"],
    )
    record_error = plpy.prepare(  # one row per failing (source, id, model): the latest failure
        "WITH older AS (DELETE FROM imgfeat.featurize_errors WHERE source = $1::pg_catalog.oid::pg_catalog.regclass "
        "AND id = $2 AND model_name = $3) "
        "INSERT INTO imgfeat.featurize_errors (source, id, model_name, error_class, message) "
        "VALUES ($1::pg_catalog.oid::pg_catalog.regclass, $2, $3, $4, $5)",
        ["int8", "text", "text", "text", "text"],
    )
    clear_errors = plpy.prepare(
        "DELETE FROM imgfeat.featurize_errors WHERE source = $1::pg_catalog.oid::pg_catalog.regclass "
        "AND model_name = $2 AND id = ANY ($3::text[])",
        ["int8", "text", "text[]"],
    )
    job_id = plpy.execute(
        plpy.prepare(
            "INSERT INTO imgfeat.featurize_jobs (source, target, model_name, rows_total) "
            "VALUES ($1::pg_catalog.oid::pg_catalog.regclass, $2, $3, $4) RETURNING job_id",
            ["int8", "text", "text", "int8"],
        ),
        [src.oid, tgt.quoted, model_name, total],
    )[0]["job_id"]
    update_job = plpy.prepare(
        "UPDATE imgfeat.featurize_jobs SET rows_done = $2, rows_failed = $3, images_per_second = $4, "
        "updated_at = pg_catalog.clock_timestamp(), status = $5, timings = $6::jsonb, "
        "finished_at = CASE WHEN $5 = 'running' THEN NULL ELSE pg_catalog.clock_timestamp() END "
        "WHERE job_id = $1",
        ["int8", "int8", "int8", "float8", "text", "text"],
    )
    plpy.commit()

    progress = Progress(total)
    infer_pool = _inference_pool()

    def fetch(after_id: Any) -> list[Any]:
        if after_id is None:
            return list(plpy.execute(first, [model_name, batch_size]))
        return list(plpy.execute(after, [model_name, batch_size, after_id]))

    def prepare(rows: list[Any]) -> Prepared:
        ids = [r["id"] for r in rows]
        images = [r["image"] for r in rows]
        prepared = prepare_batch(ids, images, spec, knobs["max_pixels"], root if from_paths else None)
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
        if good_ids:
            id_text = "{" + ",".join(_array_element(i) for i in good_ids) + "}"
            plpy.execute(insert, [id_text, model_name, real_array_rows(features)])
            plpy.execute(clear_errors, [src.oid, model_name, [str(i) for i in good_ids]])
        for bad_id, err in prepared.failures:
            plpy.execute(record_error, [src.oid, str(bad_id), model_name, _error_class(err), err.message])
        progress.done += len(good_ids)
        progress.failed += len(prepared.failures)
        plpy.execute(update_job, [job_id, progress.done, progress.failed, progress.rate, "running", progress.timings()])
        plpy.commit()
        progress.seconds["database"] += time.perf_counter() - started
        now = time.monotonic()
        if now - progress.last_notice >= NOTICE_SECONDS:
            progress.last_notice = now
            plpy.notice(progress.message(model_name, tgt.quoted))

    # Pipeline: while onnxruntime runs batch k in its own thread (session.run releases the
    # GIL), this thread fetches and decodes batch k+1 and stores batch k-1. (A separate decode
    # thread measured no faster on 2 cores: one thread besides onnxruntime's competes less.)
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
    plpy.execute(update_job, [job_id, progress.done, progress.failed, progress.rate, "done", progress.timings()])
    plpy.commit()
    plpy.notice(progress.message(model_name, tgt.quoted))


@dataclass
class Prepared:
    """A decoded batch: float32 NCHW tensor of the good images, their ids, and the failures."""

    good_ids: list[Any]
    batch: np.ndarray
    failures: list[tuple[Any, ImgfeatError]]
    seconds: float


def prepare_batch(
    ids: list[Any], images: list[Any], spec: Any, max_pixels: int, root: str | None
) -> Prepared:
    """Read (paths under ``root`` when given) and decode one batch. Does not call ``plpy``
    (it may run in any thread)."""
    from . import files, image

    started = time.perf_counter()
    failures: list[tuple[Any, ImgfeatError]] = []
    payloads: list[bytes | None] = []
    keep: list[int] = []
    for i, data in enumerate(images):
        if data is None:
            failures.append((ids[i], ImageDecodeError("image is NULL")))
            continue
        if root is not None:
            try:
                data = files.read_image_file(root, data)
            except ImgfeatError as err:
                failures.append((ids[i], err))
                continue
        keep.append(i)
        payloads.append(data)
    batch, ok, bad = image.images_to_batch(payloads, spec, max_pixels=max_pixels)
    failures.extend((ids[keep[j]], err) for j, err in bad)
    failures.sort(key=lambda f: ids.index(f[0]))
    return Prepared([ids[keep[j]] for j in ok], batch, failures, time.perf_counter() - started)


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


def _error_class(err: ImgfeatError) -> str:
    """snake_case of the error's class name, e.g. ImageDecodeError -> image_decode_error."""
    name = type(err).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
