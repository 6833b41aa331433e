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

The driver checks the source and the target (created if missing, else it must belong to the
connecting role) and passes their OIDs to the executors, whose transactions read and write them
through temporary views bound to those OIDs (:func:`imgfeat_loader.spark_job.pin_target`), so
that no table put under their names later (by the owner of their schema) is used; so do the
driver's own later queries. The limit: Spark's JDBC reader runs a query that names the source
and the target, in Spark's own connections, where no view of ours exists; use the psycopg
reader when another role owns the schema of either.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import sql

from imgfeat.core.errors import ImgfeatError, InsufficientPrivilegeError, InvalidParameterError, ModelNotFoundError
from imgfeat.core.image import DEFAULT_MAX_PIXELS
from imgfeat.core.model_info import ROW_COLUMNS, ModelInfo
from imgfeat.db import catalog

from . import db
from .spark_job import (
    Failure,
    JobSpec,
    SOURCE_VIEW,
    TARGET_VIEW,
    PartitionSummary,
    failure_error,
    id_order,
    pin_source,
    pin_target,
    read_table_range,
    sentences,
    stop_error,
    verify_model_bytes,
    write_partition,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEBIAN_JDBC_JAR = "/usr/share/java/postgresql.jar"
"""Where Debian's ``libpostgresql-jdbc-java`` puts the PostgreSQL JDBC driver."""

JDBC_DRIVER = "org.postgresql.Driver"
READERS = ("auto", "jdbc", "psycopg")
PYTHONS = ("auto", "archive", "driver")
INTEGER_TYPES = ("smallint", "integer", "bigint")
PARTITIONS_PER_CORE = 4
"""Default partitions per executor core: small enough tasks to balance load and to lose
little work on an interruption, large enough to amortise a connection per partition."""

_LOCAL_MASTER = re.compile(r"^local(\[[^\]]*\]|-cluster\[[^\]]*\])?$")

# --------------------------------------------------------------------------- session


def default_jdbc_jar() -> str | None:
    """``$IMGFEAT_JDBC_JAR``, else Debian's /usr/share/java/postgresql.jar if present, else None."""
    env = os.environ.get("IMGFEAT_JDBC_JAR")
    if env:
        return env
    return DEBIAN_JDBC_JAR if Path(DEBIAN_JDBC_JAR).exists() else None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, without port) is this machine's loopback:
    ``localhost``, 127.0.0.0/8 or ::1. Names are not resolved."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def master_is_local(master: str) -> bool:
    """Whether every executor of ``master`` runs on this machine: ``local``, ``local[N]``,
    ``local-cluster[...]``, or a standalone master on the loopback (``spark://127.0.0.1:7077``:
    a master listening on the loopback accepts workers of this machine only)."""
    master = master.strip()
    if _LOCAL_MASTER.match(master):
        return True
    if master.startswith("spark://"):
        hosts = [urlsplit("spark://" + hp).hostname or "" for hp in master[len("spark://"):].split(",")]
        return all(is_loopback(h) for h in hosts)
    return False


def _package_roots() -> list[str]:
    """The directories holding the ``imgfeat`` and ``imgfeat_loader`` packages."""
    import imgfeat

    import imgfeat_loader

    return list(dict.fromkeys(str(Path(m.__file__).resolve().parents[1]) for m in (imgfeat, imgfeat_loader)))  # type: ignore[arg-type]


def _submitted() -> bool:
    """Whether spark-submit started this Python (and its JVM, with its configuration)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def spark_session(
    master: str | None = None,
    *,
    app_name: str = "imgfeat",
    jdbc_jar: str | None = "default",
    conf: dict[str, str] | None = None,
    log_level: str = "ERROR",
    python: str = "auto",
    jvm_log: str | Path | None = None,
    archive_cache: Path | None = None,
) -> SparkSession:
    """A SparkSession set up for :func:`featurize_spark` (or the active one, if any).

    Args:
        master: ``local[*]``, ``local-cluster[2,1,1024]``, ``spark://host:7077``, ``yarn``,
            ``k8s://...``; None leaves it to spark-submit (``--master``), else ``local[*]``.
        jdbc_jar: the PostgreSQL JDBC driver jar for the JDBC reader (``"default"``:
            :func:`default_jdbc_jar`; None: none, the psycopg reader is used). Put on the
            classpath when this call starts the JVM; under spark-submit, pass ``--jars`` to it
            instead (the driver's classpath is fixed when its JVM starts).
        conf: more Spark settings, applied last (they win).
        log_level: the driver's log level.
        python: the executors' Python. ``archive``: the packed environment of
            :func:`imgfeat_loader.spark_env.executor_archive` (built from this one, cached by
            content) shipped with ``spark.archives`` as ``env`` and run as ``./env/bin/python``;
            ``driver``: this interpreter and the imgfeat packages' directories (only where every
            executor sees this machine's file system); ``auto``: what ``spark.pyspark.python``
            says if it is set (spark-submit's ``--conf``, ``conf``), else ``driver`` for a master
            whose executors all run on this machine (:func:`master_is_local`), else ``archive``.
        jvm_log: when this call starts the driver JVM, its output (Spark's log, the JVM's own
            messages) goes to this file instead of the terminal.
        archive_cache: where packed environments are kept (default
            :func:`imgfeat_loader.spark_env.cache_directory`).

    Raises:
        InvalidParameterError: ``python`` is not one of ``auto``, ``archive``, ``driver``.
        ConfigurationError: ``archive`` needs a package the driver's environment lacks.
    """
    from pyspark import SparkConf
    from pyspark.core.context import SparkContext
    from pyspark.sql import SparkSession

    if python not in PYTHONS:
        raise InvalidParameterError(f"python must be one of {', '.join(PYTHONS)}, not {python!r}")
    user = dict(conf or {})
    existing: dict[str, str] = {}
    if _submitted():
        SparkContext._ensure_initialized()  # the JVM spark-submit started: its settings are known
        existing = dict(SparkConf().getAll())
    effective = master or user.get("spark.master") or existing.get("spark.master") or "local[*]"
    local = master_is_local(effective)
    settings = {
        "spark.ui.showConsoleProgress": "false",
        # A glob over many files expands to many root paths; listing them in a Spark job
        # (the default past 32 paths) costs a stage of tiny tasks for no gain.
        "spark.sql.sources.parallelPartitionDiscovery.threshold": "1000000",
    }
    if local:  # nothing outside this machine needs to reach the driver
        settings.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"})
    configured = user.get("spark.pyspark.python") or existing.get("spark.pyspark.python")
    choice = python if python != "auto" else ("configured" if configured else "driver" if local else "archive")
    if choice == "driver":
        paths = _package_roots() + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        settings["spark.pyspark.python"] = sys.executable
        settings["spark.executorEnv.PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    elif choice == "archive":
        from .spark_env import executor_archive

        archive = f"{executor_archive(archive_cache)}#env"
        others = user.get("spark.archives") or existing.get("spark.archives")
        settings["spark.archives"] = f"{others},{archive}" if others else archive
        settings["spark.pyspark.python"] = "./env/bin/python"
    jar = default_jdbc_jar() if jdbc_jar == "default" else jdbc_jar
    if jar:
        others = user.get("spark.jars") or existing.get("spark.jars")
        settings["spark.jars"] = f"{others},{jar}" if others and jar not in others.split(",") else (others or jar)
    settings.update(user)
    if settings.get("spark.pyspark.python") or configured:
        # PySpark's RDD functions run with $PYSPARK_PYTHON of the driver at context creation
        # (spark-submit sets it from spark.pyspark.python; a plain Python driver must).
        os.environ["PYSPARK_PYTHON"] = settings.get("spark.pyspark.python") or configured  # type: ignore[assignment]
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    if SparkContext._gateway is None and not _submitted() and jvm_log is not None:
        _launch_jvm(SparkConf().setAll(list(settings.items())).setAppName(app_name).setMaster(effective), Path(jvm_log))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(log_level)
    return spark


def _launch_jvm(conf: Any, log: Path) -> None:
    """Start the driver JVM (PySpark's ``launch_gateway``) with its output in ``log``."""
    import subprocess

    from pyspark.core.context import SparkContext
    from pyspark.java_gateway import launch_gateway

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        gateway = launch_gateway(conf, popen_kwargs={"stdout": out, "stderr": subprocess.STDOUT})
    SparkContext._ensure_initialized(gateway=gateway)
    _JVM_LOG[0] = log


_JVM_LOG: list[Path | None] = [None]


def driver_jvm(wait: float = 0.0) -> tuple[int | None, int | None, Path | None]:
    """The driver JVM that this process started: ``(pid, exit status or None while it runs,
    its log file or None)``; ``(None, None, None)`` when no JVM was started here (none yet, or
    spark-submit's). ``wait``: seconds to wait for it to exit (after its connection broke,
    the process may still be ending)."""
    import subprocess

    from pyspark.core.context import SparkContext

    proc = getattr(SparkContext._gateway, "proc", None)
    if proc is None:
        return None, None, None
    try:
        status = proc.wait(timeout=wait) if wait > 0 else proc.poll()
    except subprocess.TimeoutExpired:
        status = None
    return proc.pid, status, _JVM_LOG[0]


def jdbc_driver_loaded(spark: SparkSession) -> bool:
    """Whether the driver JVM can load the PostgreSQL JDBC driver (org.postgresql.Driver)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    try:
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName(JDBC_DRIVER, False, loader)
    except Exception:  # py4j raises Py4JJavaError (ClassNotFoundException)
        return False
    return True


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


def check_executors_reach(master: str, host: str | None, hostaddr: str | None = None, jdbc_url: str | None = None) -> None:
    """Refuse to send executors a database address that only this machine can use.

    When ``master`` runs executors on other machines (:func:`master_is_local` is false), a
    Unix socket (``host`` a directory, or empty: libpq's default socket) or a loopback
    address (``localhost``, 127.0.0.1, ::1: in ``host``, ``hostaddr`` or the JDBC URL) would
    reach each executor's own machine, not the database server.

    Raises:
        InvalidParameterError: such an address with a master that is not local.
    """
    if master_is_local(master):
        return
    where = None
    if not host or host.startswith(("/", "@")):
        where = f"the Unix socket in {host}" if host else "libpq's default Unix socket"
    elif is_loopback(host) or (hostaddr and is_loopback(hostaddr)):
        where = f"{hostaddr if hostaddr and is_loopback(hostaddr) else host}, the machine each executor runs on,"
    elif jdbc_url:
        jdbc_host = urlsplit(jdbc_url.removeprefix("jdbc:")).hostname or ""
        if is_loopback(jdbc_host):
            where = f"the JDBC URL's {jdbc_host}, the machine each executor runs on,"
    if where:
        raise InvalidParameterError(
            f"the Spark executors would reach the database through {where} but the master {master} "
            "runs them on other machines",
            hint="Connect with the database server's network address, reachable from every executor "
                 "(a DSN with host=db.example.com).",
        )


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
    # The type under any domains: the target gets it, the executors cast to it (no domain CHECK,
    # its owner's code, runs as the job's caller).
    return SourceTable(rel.oid, rel.quoted, id_col.quoted, img_col.quoted, id_col.base_type)


def check_temporary(conn: psycopg.Connection[Any]) -> None:
    """The driver and the executors read and write tables through temporary views (and the
    writers batch through a temporary table): they need the TEMPORARY privilege on the database.

    Raises:
        InsufficientPrivilegeError: the connecting role may not create temporary tables.
    """
    ok = conn.execute(
        "SELECT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'TEMPORARY')"
    ).fetchone()[0]  # type: ignore[index]
    if not ok:
        raise InsufficientPrivilegeError(
            "imgfeat spark featurize needs the TEMPORARY privilege on this database to read a table or write a target",
            detail="Its connections read and write the tables through temporary views bound to the tables checked "
            "when the job started, so that no table put under their names later is used.",
            hint="GRANT TEMPORARY ON DATABASE <db> TO <role>;",
        )


def target_relation(conn: psycopg.Connection[Any], target: str, id_type: str) -> catalog.Relation:
    """The features table ``target`` in the layout of ``CALL imgfeat.featurize``, created if
    missing, else checked (:func:`imgfeat.db.catalog.target_table`: it belongs to the connecting
    role); its OID is what the executors write to (:func:`imgfeat_loader.spark_job.pin_target`).

    Raises:
        InvalidParameterError: an existing table without the columns or the unique index on
            (id, model_name), or not a table name.
        InsufficientPrivilegeError: an existing table of another role, or with another role's
            domain as its id type.
    """
    schema = conn.execute("SELECT pg_catalog.current_schema()").fetchone()[0]  # type: ignore[index]
    rel = catalog.target_table(db.PsycopgDatabase(conn), target, id_type, schema)
    if not conn.autocommit:
        conn.commit()
    return rel


def prepare_target(conn: psycopg.Connection[Any], target: str, id_type: str) -> str:
    """:func:`target_relation`'s quoted name."""
    return target_relation(conn, target, id_type).quoted


def file_id(path: str) -> str:
    """The id of a file read by Spark: its ``path`` column without the ``file:`` scheme
    (``file:/data/a b.png`` -> ``/data/a b.png``; Spark spells local paths as Hadoop does, not
    percent-encoded); other URIs (``hdfs://``, ``s3a://``) stay as they are."""
    if path.startswith("file:"):
        rest = path[len("file:"):]
        if rest.startswith("//"):  # file://[authority]/path
            rest = "/" + rest[2:].partition("/")[2]
        return rest
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
    """CPU time of the executors' whole process trees (executor JVM, PySpark daemon, Python
    workers) from their first partition's start to their last one's end, summed over executors."""
    python_cpu_seconds: float = 0.0
    """Of which the Python workers' own CPU time within the partitions (decoding, onnxruntime, writing)."""
    executors: int = 0
    """Executors that ran partitions of the job."""

    @property
    def images_per_second(self) -> float:
        return self.featurized / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_image(self) -> float | None:
        """CPU seconds per featurized image over the executors' process trees (None: nothing featurized or measured)."""
        return self.cpu_seconds / self.featurized if self.featurized and self.cpu_seconds > 0 else None

    def summary(self) -> str:
        text = (
            f"featurized {self.featurized} images from {self.source} into {self.target} with {self.model_name} "
            f"({self.already_done} already done, {self.failed} failed) in {self.partitions} partitions, "
            f"{self.seconds:.1f} s, {self.images_per_second:.1f} images/s"
        )
        if self.cpu_per_image is not None:
            text += (f"; CPU {1000 * self.cpu_per_image:.0f} ms per image over {self.executors} executor "
                     f"process tree{'s' if self.executors != 1 else ''} (JVM and Python workers; "
                     f"Python workers alone {1000 * self.python_cpu_seconds / self.featurized:.0f} ms)")
        return text


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

    if intra_op_threads < 1:
        raise InvalidParameterError(f"intra_op_threads must be positive, not {intra_op_threads}")

    master = spark.sparkContext.master
    with db.connect(dsn) as conn:
        info, model_bytes = fetch_model(conn, model_name)
        if table is not None or target is not None:
            check_temporary(conn)
        src = source_table(conn, table, id_column, image_column) if table is not None else None
        id_type = src.id_type if src is not None else "text"
        tgt = target_relation(conn, target, id_type) if target is not None else None
        quoted_target = tgt.quoted if tgt is not None else None
        if target is not None or src is not None:  # the executors connect to the database
            check_executors_reach(master, conn.info.host, conn.info.hostaddr or None, jdbc_url)
        spec = JobSpec(
            model_name=model_name, info=info, batch_size=batch_size, on_error=on_error,
            dsn=executor_dsn(conn), target=quoted_target, target_oid=tgt.oid if tgt is not None else None,
            id_type=id_type, source_oid=src.oid if src is not None else None,
            max_pixels=max_pixels, intra_op_threads=intra_op_threads,
        )
        report = SparkReport(model_name, files if files is not None else src.quoted, quoted_target or parquet)  # type: ignore[union-attr,arg-type]
        if src is not None:
            chosen = _choose_reader(spark, reader, src)
            report.reader = chosen
            todo = _todo_sql(conn, src.quoted, src, quoted_target, model_name)  # by name: Spark's JDBC reader
            with conn.transaction():  # through views bound to the OIDs checked above, as the executors read
                # names were resolved above in the caller's search_path; from here on nothing is looked
                # up there (no other role's operator for the id comparisons; see pin_search_path)
                conn.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)")
                pin_source(conn, spec, src.quoted, src.id_quoted, src.image_quoted)
                if tgt is not None:
                    pin_target(conn, spec)
                pinned = _todo_sql(conn, SOURCE_VIEW, src, TARGET_VIEW if tgt is not None else None, model_name)
                count, lo, hi = conn.execute(f"SELECT count(*), min(s.{src.id_quoted}), max(s.{src.id_quoted}) {pinned}").fetchone()  # type: ignore[misc]
                n = partitions or max(1, min(_cores(spark) * PARTITIONS_PER_CORE, math.ceil(count / batch_size)))
                if count and chosen == "psycopg":
                    bounds = _range_bounds(conn, src, pinned, n)
                conn.execute(f"DROP VIEW IF EXISTS {TARGET_VIEW}, {SOURCE_VIEW}")
            if count == 0:
                return report
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
            df = spark.read.format("binaryFile").load(files)
            empty = empty_files(spark, df)
            df = df.select("path", "content")
            if partitions:
                df = df.repartition(partitions)
            rows = df.rdd.map(lambda r: (file_id(r[0]), bytes(r[1])))
            if empty:  # Spark's file sources skip zero-byte files: they fail like any undecodable image
                rows = rows.union(sc.parallelize([(file_id(p), b"") for p in empty], 1))
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
        if driver_jvm()[1] is None:  # not when the JVM is gone: there is nothing left to release
            broadcast.destroy(blocking=False)
    return report


def empty_files(spark: SparkSession, df: Any) -> list[str]:
    """The zero-byte files among those a ``binaryFile`` DataFrame lists, as its ``path`` column
    spells them (Spark's file sources read no row for an empty file).

    Both lists stay in the JVM: the listed files (URIs, percent-encoded) are decoded to
    Hadoop paths and anti-joined with the paths read (only the ``path`` column is read, not
    the files' contents); only the empty ones come back to Python.
    """
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    jvm = spark.sparkContext._jvm
    assert jvm is not None
    listed_seq = jvm.scala.collection.immutable.ArraySeq.unsafeWrapArray(df._jdf.inputFiles())
    listed = DataFrame(spark._jsparkSession.createDataset(listed_seq, jvm.org.apache.spark.sql.Encoders.STRING()), spark)
    # URI -> Hadoop path: percent-decoding ('+' is literal in a URI path, not a space),
    # and file:///x -> file:/x
    as_path = F.regexp_replace(F.url_decode(F.replace(F.col("value"), F.lit("+"), F.lit("%2B"))), "^file:///", "file:/")
    listed = listed.select(as_path.alias("path"))
    return sorted(r[0] for r in listed.join(df.select("path"), "path", "left_anti").collect())


def _merge(report: SparkReport, summaries: list[PartitionSummary]) -> None:
    """Add the partitions' counts and CPU to the report; failures in id order; with a stopped
    partition, raise the failure with the smallest id."""
    stopped: list[Failure] = []
    errors: list[Failure] = []
    trees: dict[str, list[float]] = {}
    for s in summaries:
        if s.error is not None:
            errors.append(s.error)
        report.featurized += s.featurized
        report.already_done += s.already_done
        report.failed += s.failed
        report.partition_seconds.append((s.worker_pid, round(s.seconds, 3), round(s.model_seconds, 3)))
        report.python_cpu_seconds += s.cpu_seconds
        _add_tree_cpu(trees, s.executor, *s.tree_cpu)
        (stopped if s.stopped else report.failures).extend(s.failures)
    _set_tree_cpu(report, trees)
    report.failures.sort(key=lambda f: id_order(f.id))
    if errors:  # the target (or source) changed under the job: that is what the caller must know first
        err = stop_error(errors[0])
        err.detail = sentences(
            err.detail,
            f"{report.featurized} images were featurized and committed before the job stopped "
            f"({len(errors)} partition{'s' if len(errors) != 1 else ''} stopped on it)",
        )
        raise err
    if stopped:
        first = min(stopped, key=lambda f: id_order(f.id))
        err = failure_error(first)
        done = (f"{report.featurized} images were featurized and committed before the job stopped "
                f"({len(stopped)} partition{'s' if len(stopped) != 1 else ''} stopped at a failing image)")
        err.detail = sentences(err.detail, done)
        raise err


def _add_tree_cpu(trees: dict[str, list[float]], executor: str, start: float, end: float) -> None:
    """Widen executor's [first start, last end] CPU reading span."""
    if not executor:
        return
    span = trees.setdefault(executor, [start, end])
    span[0], span[1] = min(span[0], start), max(span[1], end)


def _set_tree_cpu(report: SparkReport, trees: dict[str, list[float]]) -> None:
    report.executors = len(trees)
    report.cpu_seconds = sum(end - start for start, end in trees.values())


def _write_parquet(
    spark: SparkSession, report: SparkReport, spec: JobSpec, rows: Any, get_model: Any,
    path: str, mode: str, *, integer_ids: bool,
) -> None:
    """Featurize ``rows`` into Parquet (id, model_name, features array<float>, featurized_at)."""
    from pyspark.accumulators import AccumulatorParam
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from .spark_job import executor_cpu, feature_rows

    class ListParam(AccumulatorParam):  # type: ignore[type-arg]
        def zero(self, value: list[Any]) -> list[Any]:
            return []

        def addInPlace(self, a: list[Any], b: list[Any]) -> list[Any]:
            return a + b

    sc = spark.sparkContext
    failed = sc.accumulator([], ListParam())
    readings = sc.accumulator([], ListParam())
    done = sc.accumulator(0)
    to_id = int if integer_ids else str

    def featurize(it: Any) -> Any:
        executor, start = executor_cpu()
        for i, name, vec in feature_rows(spec, get_model, it, lambda f: failed.add([f])):
            done.add(1)
            yield to_id(i), name, vec
        readings.add([(executor, start, executor_cpu()[1])])

    schema = T.StructType([
        T.StructField("id", T.LongType() if integer_ids else T.StringType(), False),
        T.StructField("model_name", T.StringType(), False),
        T.StructField("features", T.ArrayType(T.FloatType(), False), False),
    ])
    out = spark.createDataFrame(rows.mapPartitions(featurize), schema).withColumn("featurized_at", F.current_timestamp())
    try:
        out.write.mode(mode).parquet(path)
    except Exception as exc:  # a task raised: surface the imgfeat error it carries, if any
        found = re.search(r"imgfeat\.core\.errors\.(\w+): (.+)", str(exc))
        if found:
            from imgfeat.core import errors

            cls = getattr(errors, found.group(1), None)
            if isinstance(cls, type) and issubclass(cls, ImgfeatError):
                raise cls(found.group(2).strip(),
                          hint="Pass on_error='skip' to record failures and go on.") from None
        raise
    report.featurized = done.value
    report.failures = sorted(failed.value, key=lambda f: id_order(f.id))
    report.failed = len(report.failures)
    trees: dict[str, list[float]] = {}
    for executor, start, end in readings.value:
        _add_tree_cpu(trees, executor, start, end)
    _set_tree_cpu(report, trees)


def _todo_sql(conn: psycopg.Connection[Any], source: str, src: SourceTable, target: str | None, model_name: str) -> str:
    """``FROM source s WHERE <id not null> [AND no features yet]``, with the model name as a
    literal; ``source`` and ``target`` are the tables' quoted names, or views bound to them."""
    todo = f"FROM {source} s WHERE s.{src.id_quoted} IS NOT NULL"
    if target is not None:
        todo += (
            f" AND NOT EXISTS (SELECT 1 FROM {target} t WHERE t.id = s.{src.id_quoted} "
            f"AND t.model_name = {sql.Literal(model_name).as_string(conn)})"
        )
    return todo


def _cores(spark: SparkSession) -> int:
    return max(1, spark.sparkContext.defaultParallelism)


def _choose_reader(spark: SparkSession, reader: str, src: SourceTable) -> str:
    integer = src.id_type in INTEGER_TYPES
    if reader == "auto":
        return "jdbc" if integer and jdbc_driver_loaded(spark) else "psycopg"
    if reader == "jdbc" and not integer:
        raise InvalidParameterError(
            f"the JDBC reader partitions by integer id ranges; {src.quoted} has id type {src.id_type}",
            hint="Use reader='psycopg' (any orderable id type).",
        )
    if reader == "jdbc" and not jdbc_driver_loaded(spark):
        raise InvalidParameterError(
            "the PostgreSQL JDBC driver (org.postgresql.Driver) is not on the Spark driver's classpath",
            hint=("Give its jar when the driver JVM starts: jdbc_jar=/usr/share/java/postgresql.jar, or "
                  "spark-submit --jars /usr/share/java/postgresql.jar (settings made later do not reach the "
                  "driver's classpath); or use reader='psycopg'."),
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
