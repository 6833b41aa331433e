"""Featurize on Apache Spark when one PostgreSQL server is not fast enough.

The same library and the same model bytes as ``CALL imgfeat.featurize``, run by Spark
executors (the executor side is :mod:`imgfeat_loader.spark_job`):

* **model**: read once by the driver from the database (the ``imgfeat.models`` row and
  ``imgfeat.model_onnx(name)``), checked against the registered sha256, and shipped to the
  executors once as a Spark broadcast variable; each Python worker builds one onnxruntime
  session from it (checked again) and reuses it for every partition it runs.
* **sources**: image files (a path glob that every executor can read, any Hadoop file
  system, through Spark's ``binaryFile`` source; the id is the path, ``text``), or a
  PostgreSQL table (id + bytea column) read by id ranges, either through Spark's JDBC
  source (integer ids; the PostgreSQL JDBC driver jar must be on the Spark classpath, e.g.
  Debian's ``libpostgresql-jdbc-java``, /usr/share/java/postgresql.jar) or with psycopg
  inside each partition (any orderable id type; no jar needed). Only the rows without
  features for the model yet are read.
* **targets**: a PostgreSQL table in the layout ``CALL imgfeat.featurize`` creates (id,
  model_name text, features real[], featurized_at timestamptz; primary key (id,
  model_name)), written per batch by ``COPY`` into a temporary table and ``INSERT ... ON
  CONFLICT DO NOTHING``, so a job interrupted and run again completes with exactly one row
  per image and model; or Parquet files (id, model_name, features array<float>,
  featurized_at), written by Spark at the end of the job.

The executors connect to PostgreSQL themselves (to write, and for the psycopg reader), so
the DSN must reach the server from every executor.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import psycopg
from psycopg import sql

from imgfeat.core.errors import ImgfeatError, InvalidParameterError, ModelNotFoundError
from imgfeat.core.image import DEFAULT_MAX_PIXELS
from imgfeat.core.model_info import ROW_COLUMNS, ModelInfo
from imgfeat.db import catalog

from . import db
from .spark_job import (
    Failure,
    JobSpec,
    PartitionSummary,
    failure_error,
    read_table_range,
    verify_model_bytes,
    write_partition,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEBIAN_JDBC_JAR = "/usr/share/java/postgresql.jar"
"""Where Debian's ``libpostgresql-jdbc-java`` puts the PostgreSQL JDBC driver."""

JDBC_DRIVER = "org.postgresql.Driver"
READERS = ("auto", "jdbc", "psycopg")
INTEGER_TYPES = ("smallint", "integer", "bigint")
PARTITIONS_PER_CORE = 4
"""Default partitions per executor core: small enough tasks to balance load and to lose
little work on an interruption, large enough to amortise a connection per partition."""

# --------------------------------------------------------------------------- session


def default_jdbc_jar() -> str | None:
    """``$IMGFEAT_JDBC_JAR``, else Debian's /usr/share/java/postgresql.jar if present, else None."""
    env = os.environ.get("IMGFEAT_JDBC_JAR")
    if env:
        return env
    return DEBIAN_JDBC_JAR if Path(DEBIAN_JDBC_JAR).exists() else None


def _package_roots() -> list[str]:
    """The directories holding the ``imgfeat`` and ``imgfeat_loader`` packages."""
    import imgfeat

    import imgfeat_loader

    return list(dict.fromkeys(str(Path(m.__file__).resolve().parents[1]) for m in (imgfeat, imgfeat_loader)))  # type: ignore[arg-type]


def spark_session(
    master: str | None = None,
    *,
    app_name: str = "imgfeat",
    jdbc_jar: str | None = "default",
    conf: dict[str, str] | None = None,
    log_level: str = "ERROR",
) -> SparkSession:
    """A SparkSession set up for :func:`featurize_spark` (or the active one, if any).

    Args:
        master: ``local[*]``, ``local-cluster[2,1,1024]``, ``spark://host:7077``, ``yarn``...;
            None leaves it to spark-submit / ``spark-defaults.conf`` (``local[*]`` if unset).
        jdbc_jar: the PostgreSQL JDBC driver jar for the JDBC reader (``"default"``:
            :func:`default_jdbc_jar`; None: none, the psycopg reader is used).
        conf: more Spark settings, applied last.
        log_level: the driver's log level.

    Sets ``spark.pyspark.python`` to this interpreter and ``spark.executorEnv.PYTHONPATH``
    to the directories of the imgfeat packages: right when the executors share this
    machine's file system (local modes, NFS); on a real cluster install imgfeat (and
    onnxruntime, Pillow, numpy, psycopg) into the executors' Python instead.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    python = sys.executable
    paths = _package_roots() + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    settings = {
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        "spark.executorEnv.PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)),
        "spark.ui.showConsoleProgress": "false",
        # A glob over many files expands to many root paths; listing them in a Spark job
        # (the default past 32 paths) costs a stage of tiny tasks for no gain.
        "spark.sql.sources.parallelPartitionDiscovery.threshold": "1000000",
    }
    jar = default_jdbc_jar() if jdbc_jar == "default" else jdbc_jar
    if jar:
        settings["spark.jars"] = jar
    settings.update(conf or {})
    os.environ.setdefault("PYSPARK_PYTHON", python)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(log_level)
    return spark


# --------------------------------------------------------------------------- database side


def fetch_model(conn: psycopg.Connection[Any], name: str) -> tuple[ModelInfo, bytes]:
    """A registered model's metadata and ONNX bytes (``imgfeat.model_onnx``), sha256-verified.

    Raises:
        ModelNotFoundError: no such model (the message lists the registered ones).
        ModelError: the stored bytes do not match the registered size and sha256.
    """
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(f"SELECT {ROW_COLUMNS} FROM imgfeat.models WHERE name = %s", (name,)).fetchone()
    if row is None:
        from imgfeat.core.zoo.catalog import registration_hint

        names = [r[0] for r in conn.execute("SELECT name FROM imgfeat.models ORDER BY name").fetchall()]
        raise ModelNotFoundError(
            f"model {name!r} is not registered",
            detail=f"registered models: {', '.join(names) if names else '(none)'}",
            hint=registration_hint(name, cli=True),
        )
    info = ModelInfo.from_row(row)
    data = conn.execute("SELECT imgfeat.model_onnx(%s)", (name,)).fetchone()[0]  # type: ignore[index]
    return info, verify_model_bytes(info, bytes(data) if data is not None else None)


def executor_dsn(conn: psycopg.Connection[Any]) -> str:
    """An explicit DSN for the executors, equivalent to ``conn``'s (host, port, dbname, user
    and password resolved here, so PG* variables on the driver need not exist on executors)."""
    password = conn.info.password
    return psycopg.conninfo.make_conninfo(conn.info.dsn, **({"password": password} if password else {}))


def jdbc_options(conn: psycopg.Connection[Any], url: str | None = None) -> dict[str, str]:
    """Spark JDBC options (url, user, password, driver) for ``conn``'s database.

    JDBC speaks TCP only: a Unix-socket host (a directory) becomes ``localhost``, the same
    server when it also listens on TCP (PostgreSQL's default ``listen_addresses``). Pass
    ``url`` (``jdbc:postgresql://host:port/db``) to choose another address.
    """
    info = conn.info
    if url is None:
        host = info.host if info.host and not info.host.startswith("/") else "localhost"
        if ":" in host:
            host = f"[{host}]"
        url = f"jdbc:postgresql://{host}:{info.port}/{quote(info.dbname, safe='')}"
    opts = {"url": url, "driver": JDBC_DRIVER, "user": info.user}
    if info.password:
        opts["password"] = info.password
    return opts


@dataclass(frozen=True)
class SourceTable:
    """A source table: OID, quoted name, quoted id and image columns, id SQL type."""

    oid: int
    quoted: str
    id_quoted: str
    image_quoted: str
    id_type: str


def source_table(conn: psycopg.Connection[Any], table: str, id_column: str, image_column: str) -> SourceTable:
    """Resolve ``table`` (regclass syntax) and check its columns (:mod:`imgfeat.db.catalog`, as
    ``CALL imgfeat.featurize`` does).

    Raises:
        InvalidParameterError: missing column, or an image column that is not bytea.
        psycopg.errors.UndefinedTable: no such table.
    """
    rel = catalog.relation(db.PsycopgDatabase(conn), table)
    id_col = rel.column(id_column, "id")
    img_col, from_paths = catalog.image_column(rel, image_column)
    if from_paths:
        raise InvalidParameterError(
            f"image column {image_column!r} is {img_col.type}; featurize_spark reads bytea columns",
            hint="For image files, pass files=GLOB (paths readable by every executor) instead of a table.",
        )
    catalog.check_id_column(rel, id_col)
    return SourceTable(rel.oid, rel.quoted, id_col.quoted, img_col.quoted, id_col.type)


def prepare_target(conn: psycopg.Connection[Any], target: str, id_type: str) -> str:
    """The features table ``target`` in the layout of ``CALL imgfeat.featurize``, created if
    missing, else checked (:func:`imgfeat.db.catalog.target_table`); returns its quoted name.

    Raises:
        InvalidParameterError: an existing table without the columns or the unique index on
            (id, model_name), or not a table name.
    """
    schema = conn.execute("SELECT pg_catalog.current_schema()").fetchone()[0]  # type: ignore[index]
    rel = catalog.target_table(db.PsycopgDatabase(conn), target, id_type, schema)
    if not conn.autocommit:
        conn.commit()
    return rel.quoted


def file_id(path: str) -> str:
    """The id of a file read by Spark: a ``file:`` URI becomes the plain local path
    (``file:/data/a%20b.png`` -> ``/data/a b.png``); other URIs (``hdfs://``, ``s3a://``) stay as they are."""
    if path.startswith("file:"):
        return unquote(urlsplit(path).path)
    return path


# --------------------------------------------------------------------------- the job


@dataclass
class SparkReport:
    """What :func:`featurize_spark` did. ``seconds`` is the wall time of the Spark job(s)."""

    model_name: str
    source: str
    target: str
    featurized: int = 0
    already_done: int = 0
    failed: int = 0
    failures: list[Failure] = field(default_factory=list)
    partitions: int = 0
    reader: str = ""
    seconds: float = 0.0
    partition_seconds: list[tuple[int, float, float]] = field(default_factory=list)
    """Per partition written to PostgreSQL: (Python worker pid, seconds, of which model loading)."""
    cpu_seconds: float = 0.0
    """CPU time of the executors' Python workers, summed over the partitions (PostgreSQL targets)."""

    @property
    def images_per_second(self) -> float:
        return self.featurized / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"featurized {self.featurized} images from {self.source} into {self.target} with {self.model_name} "
            f"({self.already_done} already done, {self.failed} failed) in {self.partitions} partitions, "
            f"{self.seconds:.1f} s, {self.images_per_second:.1f} images/s"
        )


def featurize_spark(
    spark: SparkSession,
    dsn: Any = None,
    model_name: str = "resnet18",
    *,
    files: str | None = None,
    table: str | None = None,
    id_column: str = "id",
    image_column: str = "image",
    target: str | None = None,
    parquet: str | None = None,
    parquet_mode: str = "errorifexists",
    partitions: int | None = None,
    batch_size: int = 32,
    on_error: str = "raise",
    reader: str = "auto",
    jdbc_url: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    intra_op_threads: int = 1,
) -> SparkReport:
    """Featurize images on Spark with a model registered in the database.

    Args:
        spark: the session (see :func:`spark_session`).
        dsn: the database holding the model (and the source table and target): a libpq
            string, SQLAlchemy URL or engine, or None for ``$IMGFEAT_DSN`` / the PG* variables.
            It must reach the server from every executor.
        model_name: a model in ``imgfeat.models``.
        files: a path glob readable by every executor (``/data/faces/*/*.pgm``,
            ``hdfs:///imgs/**``); the id is the path (``text``).
        table: a table (regclass syntax) with ``id_column`` and a bytea ``image_column``;
            rows with a NULL id are ignored, a NULL image is a failed image.
        target: PostgreSQL table for the features (created if missing; see the module docstring).
        parquet: or a Parquet directory (``parquet_mode``: Spark's save mode, default
            ``errorifexists``; Parquet output is not resumable: it is written whole at the end).
        partitions: Spark partitions (default: Spark's file splits for files, and for a table
            4 per executor core, fewer for small tables). Also the granularity of work lost
            on an interruption is at most one batch per running partition.
        batch_size: images per onnxruntime run and per committed transaction (1..4096).
        on_error: ``raise``: an image that cannot be decoded stops its partition (nothing of
            that batch is written) and is raised after the job as its ImgfeatError, naming
            the id; the batches already written stay. ``skip``: go on; failures are in the
            report (and, for a table source and PostgreSQL target, in imgfeat.featurize_errors).
        reader: for a table: ``jdbc`` (Spark's JDBC source partitioned by id ranges; integer
            ids and the JDBC driver on the classpath), ``psycopg`` (each partition reads its
            id range with psycopg; any orderable id type), ``auto`` (jdbc when possible).
        jdbc_url: the JDBC URL when it cannot be derived from the DSN (see :func:`jdbc_options`).
        max_pixels: images whose header declares more pixels fail with ImageTooLargeError.
        intra_op_threads: onnxruntime threads per task (match ``spark.task.cpus``).

    Returns:
        A :class:`SparkReport`.

    Raises:
        ModelNotFoundError, ModelError: unknown model, bytes not matching the sha256.
        InvalidParameterError: bad arguments, source or target.
        ImgfeatError (ImageDecodeError, ...): with ``on_error='raise'``, the first failed image.
    """
    if (files is None) == (table is None):
        raise InvalidParameterError("give exactly one source: files=GLOB or table=NAME")
    if (target is None) == (parquet is None):
        raise InvalidParameterError("give exactly one destination: target=TABLE or parquet=PATH")
    if reader not in READERS:
        raise InvalidParameterError(f"reader must be one of {', '.join(READERS)}, not {reader!r}")
    if partitions is not None and partitions < 1:
        raise InvalidParameterError(f"partitions must be positive, not {partitions}")

    with db.connect(dsn) as conn:
        info, model_bytes = fetch_model(conn, model_name)
        src = source_table(conn, table, id_column, image_column) if table is not None else None
        id_type = src.id_type if src is not None else "text"
        quoted_target = prepare_target(conn, target, id_type) if target is not None else None
        spec = JobSpec(
            model_name=model_name, info=info, batch_size=batch_size, on_error=on_error,
            dsn=executor_dsn(conn), target=quoted_target, id_type=id_type,
            source_oid=src.oid if src is not None and target is not None else None,
            max_pixels=max_pixels, intra_op_threads=intra_op_threads,
        )
        report = SparkReport(model_name, files if files is not None else src.quoted, quoted_target or parquet)  # type: ignore[union-attr,arg-type]
        if src is not None:
            chosen = _choose_reader(spark, reader, src)
            report.reader = chosen
            todo = _todo_sql(conn, src, quoted_target, model_name)
            count, lo, hi = conn.execute(f"SELECT count(*), min(s.{src.id_quoted}), max(s.{src.id_quoted}) {todo}").fetchone()  # type: ignore[misc]
            n = partitions or max(1, min(_cores(spark) * PARTITIONS_PER_CORE, math.ceil(count / batch_size)))
            if count == 0:
                return report
            if chosen == "psycopg":
                bounds = _range_bounds(conn, src, todo, n)
        else:
            report.reader = "binaryFile"
        jdbc = jdbc_options(conn, jdbc_url) if src is not None and report.reader == "jdbc" else None

    sc = spark.sparkContext
    broadcast = sc.broadcast(model_bytes)
    del model_bytes

    def get_model() -> bytes:  # called on the executors, once per Python worker
        return broadcast.value  # type: ignore[no-any-return]

    started = time.perf_counter()
    rows: Any  # an RDD of (id, image bytes or None)
    try:
        if files is not None:
            df = spark.read.format("binaryFile").load(files).select("path", "content")
            if partitions:
                df = df.repartition(partitions)
            rows = df.rdd.map(lambda r: (file_id(r[0]), bytes(r[1])))
        elif report.reader == "jdbc":
            assert src is not None and jdbc is not None
            df = (
                spark.read.format("jdbc").options(**jdbc)
                .option("dbtable", f"(SELECT s.{src.id_quoted} AS id, s.{src.image_quoted} AS image {todo}) AS imgfeat_todo")
                .option("partitionColumn", "id").option("lowerBound", str(lo)).option("upperBound", str(hi + 1))
                .option("numPartitions", str(n)).option("fetchsize", str(batch_size))
                .load()
            )
            rows = df.rdd.map(lambda r: (r[0], None if r[1] is None else bytes(r[1])))
        else:
            assert src is not None
            rows = sc.parallelize(bounds, len(bounds)).mapPartitions(
                lambda ranges: (
                    row for lower, upper in ranges
                    for row in read_table_range(spec, src.quoted, src.id_quoted, src.image_quoted, lower, upper)
                )
            )
        report.partitions = rows.getNumPartitions()
        if target is not None:
            summaries: list[PartitionSummary] = rows.mapPartitions(
                lambda it: [write_partition(spec, get_model, it)]
            ).collect()
            _merge(report, summaries)
        else:
            _write_parquet(spark, report, spec, rows, get_model, parquet, parquet_mode,  # type: ignore[arg-type]
                           integer_ids=src is not None and src.id_type in INTEGER_TYPES)
    finally:
        report.seconds = time.perf_counter() - started
        broadcast.destroy(blocking=False)
    return report


def _merge(report: SparkReport, summaries: list[PartitionSummary]) -> None:
    """Add the partitions' counts to the report; with a stopped partition, raise its failure."""
    stopped: list[Failure] = []
    for s in summaries:
        report.featurized += s.featurized
        report.already_done += s.already_done
        report.failed += s.failed
        report.partition_seconds.append((s.worker_pid, round(s.seconds, 3), round(s.model_seconds, 3)))
        report.cpu_seconds += s.cpu_seconds
        (stopped if s.stopped else report.failures).extend(s.failures)
    if stopped:
        first = min(stopped, key=lambda f: str(f.id))
        err = failure_error(first)
        done = (f"{report.featurized} images were featurized and committed before the job stopped "
                f"({len(stopped)} partition(s) stopped at a failing image)")
        err.detail = f"{err.detail}; {done}" if err.detail else done
        raise err


def _write_parquet(
    spark: SparkSession, report: SparkReport, spec: JobSpec, rows: Any, get_model: Any,
    path: str, mode: str, *, integer_ids: bool,
) -> None:
    """Featurize ``rows`` into Parquet (id, model_name, features array<float>, featurized_at)."""
    from pyspark.accumulators import AccumulatorParam
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from .spark_job import feature_rows

    class ListParam(AccumulatorParam):  # type: ignore[type-arg]
        def zero(self, value: list[Any]) -> list[Any]:
            return []

        def addInPlace(self, a: list[Any], b: list[Any]) -> list[Any]:
            return a + b

    sc = spark.sparkContext
    failed = sc.accumulator([], ListParam())
    done = sc.accumulator(0)
    to_id = int if integer_ids else str

    def featurize(it: Any) -> Any:
        for i, name, vec in feature_rows(spec, get_model, it, lambda f: failed.add([f])):
            done.add(1)
            yield to_id(i), name, vec

    schema = T.StructType([
        T.StructField("id", T.LongType() if integer_ids else T.StringType(), False),
        T.StructField("model_name", T.StringType(), False),
        T.StructField("features", T.ArrayType(T.FloatType(), False), False),
    ])
    out = spark.createDataFrame(rows.mapPartitions(featurize), schema).withColumn("featurized_at", F.current_timestamp())
    try:
        out.write.mode(mode).parquet(path)
    except Exception as exc:  # a task raised: surface the imgfeat error it carries, if any
        found = re.search(r"imgfeat\.errors\.(\w+): (.+)", str(exc))
        if found:
            from imgfeat.core import errors

            cls = getattr(errors, found.group(1), None)
            if isinstance(cls, type) and issubclass(cls, ImgfeatError):
                raise cls(found.group(2).strip()) from None
        raise
    report.featurized = done.value
    report.failures = list(failed.value)
    report.failed = len(report.failures)


def _todo_sql(conn: psycopg.Connection[Any], src: SourceTable, target: str | None, model_name: str) -> str:
    """``FROM source s WHERE <id not null> [AND no features yet]``, with the model name as a literal."""
    todo = f"FROM {src.quoted} s WHERE s.{src.id_quoted} IS NOT NULL"
    if target is not None:
        todo += (
            f" AND NOT EXISTS (SELECT 1 FROM {target} t WHERE t.id = s.{src.id_quoted} "
            f"AND t.model_name = {sql.Literal(model_name).as_string(conn)})"
        )
    return todo


def _cores(spark: SparkSession) -> int:
    return max(1, spark.sparkContext.defaultParallelism)


def _choose_reader(spark: SparkSession, reader: str, src: SourceTable) -> str:
    jars = " ".join(spark.sparkContext.getConf().get(k, "") for k in ("spark.jars", "spark.driver.extraClassPath"))
    has_driver = "postgresql" in jars.lower()
    integer = src.id_type in INTEGER_TYPES
    if reader == "auto":
        return "jdbc" if has_driver and integer else "psycopg"
    if reader == "jdbc" and not integer:
        raise InvalidParameterError(
            f"the JDBC reader partitions by integer id ranges; {src.quoted} has id type {src.id_type}",
            hint="Use reader='psycopg' (any orderable id type).",
        )
    return reader


def _range_bounds(conn: psycopg.Connection[Any], src: SourceTable, todo: str, n: int) -> list[tuple[Any, Any]]:
    """``n`` (or fewer) id ranges ``(lower, upper]`` holding about equally many rows to do."""
    if n <= 1:
        return [(None, None)]
    fractions = [k / n for k in range(1, n)]
    cuts = conn.execute(
        f"SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY s.{src.id_quoted}) {todo}", (fractions,)
    ).fetchone()[0]  # type: ignore[index]
    cuts = sorted(set(cuts))
    edges: list[Any] = [None, *cuts, None]
    return list(itertools.pairwise(edges))
