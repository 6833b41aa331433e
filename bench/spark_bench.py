"""Benchmark: images per second and CPU per image of ``featurize_spark`` on local and standalone Spark.

Usage::

    python bench/spark_bench.py [--dsn DSN] [--faces DIR] [--model resnet18]
                                [--masters 'local[1],local[2],standalone[2]'] [--batch-size 32]
                                [--repeat 2] [--in-database]

Featurizes the 312 full-resolution left/right CMU faces (``--faces``, default
``$IMGFEAT_CMU_FACES`` or ../shared/data/cmu-faces/faces) from files (Spark's
``binaryFile`` source; ids are the paths) into a fresh PostgreSQL table, on each master of
``--masters``: ``local[N]`` (one JVM, N task slots), ``local-cluster[N,1,1024]`` (N executor
JVMs of one core) or ``standalone[N]`` (a standalone master and N workers of one core each on
127.0.0.1, started and stopped here: :class:`imgfeat_loader.spark_standalone.StandaloneCluster`).
onnxruntime runs with one thread per task. Each configuration is first warmed up on a few
faces (JVMs and Python workers started, model shipped and loaded), then timed ``--repeat``
times into new tables. Printed per run: featurized images / wall seconds of the Spark job,
and CPU milliseconds per image over the executors' whole process trees (JVM, PySpark daemon,
Python workers) and of the Python workers alone. ``--in-database`` also times
``CALL imgfeat.featurize`` on the same faces (one backend, one onnxruntime thread) for
comparison, with the backend's CPU per image when the server runs on this machine.

The database is ``--dsn`` / ``IMGFEAT_DSN`` if given (imgfeat installed, the model
registered), else a throwaway local cluster with a synthetic resnet18.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from imgfeat_loader import db, models
from imgfeat_loader.cluster import LocalCluster
from imgfeat_loader.spark import featurize_spark, spark_session
from imgfeat_loader.spark_standalone import StandaloneCluster

FACES_GLOB = "*/*_{left,right}_*_{open,sunglasses}.pgm"
"""The 312 full-resolution left/right faces (the scaled copies end in _2.pgm / _4.pgm)."""

_STANDALONE = re.compile(r"^standalone\[(\d+)\]$")


@dataclass(frozen=True)
class Run:
    """One timed run: images/s (wall), CPU ms per image over the executors' process trees and of the Python workers."""

    images_per_second: float
    tree_ms: float
    python_ms: float


def bench_spark(
    dsn: str, faces: Path, model: str, master: str, batch_size: int, repeat: int, verbose: bool = False
) -> list[Run]:
    """``repeat`` timed runs on ``master`` (see the module docstring), after a warm-up."""
    found = _STANDALONE.match(master)
    cluster = StandaloneCluster(workers=int(found.group(1)), cores=1, memory="1g") if found else None
    url = cluster.start() if cluster is not None else master
    runs = []
    try:
        spark = spark_session(url, app_name=f"imgfeat-bench-{master}", conf={"spark.ui.enabled": "false"})
        try:
            started = time.perf_counter()
            warm = f"spark_bench_{uuid.uuid4().hex[:8]}"
            featurize_spark(spark, dsn, model, files=f"{faces}/an2i/an2i_left_*_open.pgm", target=warm,
                            partitions=spark.sparkContext.defaultParallelism, batch_size=batch_size)
            print(f"{master}: warm-up (JVMs, Python workers, model) {time.perf_counter() - started:.1f} s")
            for r in range(repeat):
                table = f"spark_bench_{uuid.uuid4().hex[:8]}"
                try:
                    report = featurize_spark(spark, dsn, model, files=f"{faces}/{FACES_GLOB}", target=table,
                                             batch_size=batch_size)
                finally:
                    with db.connect(dsn) as conn:
                        conn.execute(f"DROP TABLE IF EXISTS {table}")
                run = Run(report.images_per_second, 1000 * report.cpu_seconds / report.featurized,
                          1000 * report.python_cpu_seconds / report.featurized)
                runs.append(run)
                print(f"{master}, run {r + 1}: {report.featurized} images in {report.seconds:.2f} s "
                      f"({report.partitions} partitions, {report.executors} executor(s)) = "
                      f"{run.images_per_second:.1f} images/s; CPU {run.tree_ms:.0f} ms per image over the executors' "
                      f"process trees, {run.python_ms:.0f} ms in the Python workers")
                if verbose:
                    print(f"  partitions (worker pid, seconds, model load seconds): {report.partition_seconds}")
            with db.connect(dsn) as conn:
                conn.execute(f"DROP TABLE IF EXISTS {warm}")
        finally:
            spark.stop()
    finally:
        if cluster is not None:
            cluster.stop()
    return runs


def backend_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a local process (/proc/PID/stat), 0.0 if unreadable (remote server)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_in_database(dsn: str, faces: Path, model: str, batch_size: int) -> float:
    files = sorted(faces.glob("*/*.pgm"))
    files = [p for p in files if len(p.stem.split("_")) == 4 and p.stem.split("_")[1] in ("left", "right")]
    src, dst = f"spark_bench_src_{uuid.uuid4().hex[:8]}", f"spark_bench_dst_{uuid.uuid4().hex[:8]}"
    with db.connect(dsn) as conn:
        conn.execute(f"CREATE TABLE {src} (id text PRIMARY KEY, image bytea)")
        with conn.cursor().copy(f"COPY {src} (id, image) FROM STDIN") as copy:
            for p in files:
                copy.write_row((str(p), p.read_bytes()))
        try:
            conn.execute(f"SELECT imgfeat.featurize_image(image, %s) FROM {src} LIMIT 1", (model,))  # warm the backend
            cpu_before = backend_cpu_seconds(conn.info.backend_pid)
            started = time.perf_counter()
            conn.execute(f"CALL imgfeat.featurize('{src}', '{dst}', %s, batch_size => %s)", (model, batch_size))
            seconds = time.perf_counter() - started
            cpu = backend_cpu_seconds(conn.info.backend_pid) - cpu_before
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {src}, {dst}")
    speed = len(files) / seconds
    per_cpu = (f"; CPU {1000 * cpu / len(files):.0f} ms per image in the backend "
               f"({len(files) / cpu:.1f} images per CPU-second)") if cpu > 0 else ""
    print(f"in-database CALL imgfeat.featurize (1 backend): {len(files)} images in {seconds:.2f} s = "
          f"{speed:.1f} images/s{per_cpu}")
    return speed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="database with imgfeat and the model (default: $IMGFEAT_DSN, else a throwaway cluster)")
    parser.add_argument("--faces", type=Path, help="the CMU faces (default: where the demo and tests find them)")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--masters", default="local[1],local[2],standalone[2]",
                        help="comma-separated masters: local[N], local-cluster[N,1,1024], standalone[N] "
                             "(default local[1],local[2],standalone[2])")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--in-database", action="store_true", help="also time CALL imgfeat.featurize")
    parser.add_argument("--verbose", action="store_true", help="print per-partition timings")
    args = parser.parse_args(argv)
    if args.faces is None:
        from imgfeat_loader.datasets import cmu_faces_dir

        args.faces = cmu_faces_dir()
    if not args.faces.is_dir():
        print(f"spark_bench: CMU faces not found at {args.faces} (set --faces or IMGFEAT_CMU_FACES)", file=sys.stderr)
        return 1
    dsn = args.dsn or os.environ.get("IMGFEAT_DSN")
    cluster = None
    if not dsn:
        cluster = LocalCluster().start()
        dbname = f"spark_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {dbname}")
        dsn = cluster.dsn(dbname)
        with db.connect(dsn) as conn:
            conn.execute("CREATE EXTENSION imgfeat CASCADE")
            models.add_synthetic(conn, args.model, "resnet18")
        print(f"throwaway cluster, synthetic {args.model} registered")
    try:
        print(f"CPU cores: {os.cpu_count()}; faces: {args.faces}/{FACES_GLOB}; batch size {args.batch_size}")
        results = {}
        for master in re.split(r",(?![^\[]*\])", args.masters):  # commas inside [...] belong to the master
            results[master] = bench_spark(dsn, args.faces, args.model, master, args.batch_size, args.repeat, args.verbose)
        if args.in_database:
            bench_in_database(dsn, args.faces, args.model, args.batch_size)
        base = statistics.median(r.images_per_second for r in next(iter(results.values())))
        for master, runs in results.items():
            speed = statistics.median(r.images_per_second for r in runs)
            print(f"median, {master}: {speed:.1f} images/s ({speed / base:.2f}x the first); CPU "
                  f"{statistics.median(r.tree_ms for r in runs):.0f} ms per image over the executors' process trees, "
                  f"{statistics.median(r.python_ms for r in runs):.0f} ms in the Python workers")
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
