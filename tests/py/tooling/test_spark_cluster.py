"""Spark as its users run it: a standalone master and worker started here, the worker in its own
mount namespace where the driver's checkout and virtualenv are hidden (so its executors can
only run what the driver ships), ``spark-submit`` with the packed environment; the executors'
database address checked; a dying driver JVM reported in one line.

Every Spark here runs in a subprocess (``spark-submit``, or the ``imgfeat`` CLI), so these tests
do not share a JVM with the local-cluster tests of test_spark.py.
"""

from __future__ import annotations

import re

import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg
import pytest
from psycopg import conninfo

import imgfeat_loader
from imgfeat.core.errors import ConfigurationError, InvalidParameterError
from imgfeat_loader.cli import main
from imgfeat_loader.spark import check_executors_reach
from imgfeat_loader.spark_env import EXECUTOR_REQUIREMENTS, _requirement_closure, executor_archive
from imgfeat_loader.spark_standalone import StandaloneCluster, pyspark_home

CHECKOUT = Path(imgfeat_loader.__file__).resolve().parents[2]
VENV = Path(sys.prefix).resolve()
FACES_GLOB = "*/*_{left,right}_*_{open,sunglasses}.pgm"
TOL = 1e-5

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the worker's mount namespace (unshare --mount) needs root")


def _hidden_paths(cache: Path) -> list[Path]:
    """The checkout, the virtualenv unless it lies inside the checkout, and the archive cache."""
    paths = [CHECKOUT]
    if not VENV.is_relative_to(CHECKOUT):
        paths.append(VENV)
    if not cache.is_relative_to(CHECKOUT):
        paths.append(cache)
    return paths


def _spark_env(tmp: Path, archive_cache: Path | None = None) -> dict[str, str]:
    """The environment of a Spark subprocess: loopback only, its logs under ``tmp``, its
    archive cache ``archive_cache`` (else under ``tmp``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_"))}
    cache = archive_cache.parents[1] if archive_cache is not None else tmp / "cache"
    env.update(SPARK_LOCAL_IP="127.0.0.1", XDG_STATE_HOME=str(tmp / "state"), XDG_CACHE_HOME=str(cache))
    return env


@pytest.fixture(scope="module")
def archive_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archive cache, where :func:`imgfeat_loader.spark_env.cache_directory` finds it when
    ``XDG_CACHE_HOME`` is this path's grandparent (see :func:`_spark_env`)."""
    path = tmp_path_factory.mktemp("xdg-cache") / "imgfeat" / "spark-env"
    path.mkdir(parents=True, mode=0o700)
    path.parent.chmod(0o700)
    return path


@pytest.fixture(scope="module")
def archive(archive_cache: Path) -> Path:
    return executor_archive(archive_cache)


@pytest.fixture(scope="module")
def tcp_dsn(dsn: str) -> str:
    """The test database over TCP on 127.0.0.1 (what executors on a loopback cluster use)."""
    return conninfo.make_conninfo(dsn, host="127.0.0.1")


@pytest.fixture(scope="module")
def faces312(dsn: str, resnet18: str, face_files: list[Path]) -> dict[str, np.ndarray]:
    """Table ``cluster_faces`` (id bigint 1..312 in path order, path, image) and the in-database
    features of ``CALL imgfeat.featurize``, by path."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE cluster_faces (id bigint PRIMARY KEY, path text NOT NULL, image bytea)")
        with c.cursor().copy("COPY cluster_faces (id, path, image) FROM STDIN") as copy:
            for i, p in enumerate(face_files, start=1):
                copy.write_row((i, str(p), p.read_bytes()))
        c.execute("CALL imgfeat.featurize('cluster_faces', 'cluster_faces_ref', %s, batch_size => 64)", (resnet18,))
        rows = c.execute("SELECT f.path, r.features FROM cluster_faces_ref r JOIN cluster_faces f USING (id)").fetchall()
    assert len(rows) == 312
    return {p: np.asarray(v, dtype=np.float32) for p, v in rows}


@pytest.fixture(scope="module")
def standalone(archive_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    """A master and one two-core worker on 127.0.0.1, the worker blind to the checkout, the
    virtualenv and the archive cache."""
    cluster = StandaloneCluster(workers=1, cores=2, memory="2g", hide=_hidden_paths(archive_cache),
                                base_dir=tmp_path_factory.mktemp("standalone"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def features_by_path(conn: psycopg.Connection[Any], table: str, model: str, join_ids: bool = False) -> dict[str, np.ndarray]:
    if join_ids:
        sql = f"SELECT f.path, t.features FROM {table} t JOIN cluster_faces f USING (id) WHERE t.model_name = %s"
    else:
        sql = f"SELECT id, features FROM {table} WHERE model_name = %s"
    return {p: np.asarray(v, dtype=np.float32) for p, v in conn.execute(sql, (model,)).fetchall()}


def worst_diff(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    assert set(got) == set(want)
    return max(float(np.max(np.abs(got[k] - want[k]))) for k in want)


# --------------------------------------------------------------------------- the archive


def test_archive_is_this_environment_packed_once(archive: Path, archive_cache: Path, tmp_path: Path) -> None:
    again = executor_archive(archive_cache)
    assert again == archive and again.stat().st_mtime == archive.stat().st_mtime  # reused, not rebuilt
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        python = tar.getmember("bin/python3.11" if "bin/python3.11" in names else "bin/python3")
        assert python.issym() and Path(python.linkname) == Path(sys._base_executable)  # type: ignore[attr-defined]
        site = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
        shipped = tar.extractfile(f"{site}/imgfeat_loader/spark_job.py").read()  # type: ignore[union-attr]
        assert shipped == (CHECKOUT / "loader" / "imgfeat_loader" / "spark_job.py").read_bytes()
        tops = {n.split("/")[3] for n in names if n.startswith(site + "/") and n.count("/") >= 4}
    for module in ("imgfeat", "imgfeat_loader", "numpy", "onnxruntime", "PIL", "psycopg", "psycopg_binary", "psutil"):
        assert module in tops
    for absent in ("torch", "pyspark", "sklearn", "scipy", "pytest"):  # not what executors run
        assert absent not in tops
    dists = {d.metadata["Name"].lower() for d in _requirement_closure(EXECUTOR_REQUIREMENTS)}
    assert {"numpy", "onnxruntime", "pillow", "psycopg", "psycopg-binary", "psutil", "protobuf"} <= dists
    # a changed package file names a new archive: the content key covers the code
    from imgfeat_loader import spark_env

    probe = tmp_path / "probe.py"
    probe.write_text("a = 1\n")
    key1 = spark_env.content_key([], [(probe, "imgfeat/probe.py")])
    probe.write_text("a = 2\n")
    assert spark_env.content_key([], [(probe, "imgfeat/probe.py")]) != key1


def test_archive_cache_must_be_private(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigurationError, match="writable by others"):
        executor_archive(shared)


def test_cli_pack_prints_the_archive_and_spark_submit_options(
    archive: Path, archive_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["spark", "pack", "--cache", str(archive_cache)]) == 0
    assert capsys.readouterr().out.strip() == str(archive)
    assert main(["spark", "pack", "--cache", str(archive_cache), "--spark-submit"]) == 0
    options = capsys.readouterr().out.split()
    assert options[:4] == ["--archives", f"{archive}#env", "--conf", "spark.pyspark.python=./env/bin/python"]
    assert options[4:6] == ["--conf", f"spark.pyspark.driver.python={sys.executable}"]
    assert options[-1].endswith("imgfeat_loader/spark_app.py") and Path(options[-1]).is_file()


# --------------------------------------------------------------------------- a real cluster


def test_worker_sees_nothing_of_the_driver(standalone: StandaloneCluster, cmu_faces: Path) -> None:
    """The worker's mount namespace: the checkout (and the venv) are an empty tmpfs; the
    shared data and the system's Python and Java are there."""
    worker = next(p for p in psutil.Process(standalone._procs[1].pid).children(recursive=True) + [psutil.Process(standalone._procs[1].pid)]
                  if p.name() == "java")
    root = Path(f"/proc/{worker.pid}/root")
    assert sorted(os.listdir(root / CHECKOUT.relative_to("/"))) == []
    assert not (root / VENV.relative_to("/") / "bin" / "python").exists()
    assert (root / cmu_faces.relative_to("/")).is_dir()
    assert os.readlink(f"/proc/{worker.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert standalone.status()["aliveworkers"] == 1


def _submit(standalone: StandaloneCluster, archive_cache: Path, tmp: Path, *app_args: str) -> subprocess.CompletedProcess[str]:
    """``spark-submit`` as the README shows it: the options of ``imgfeat spark pack --spark-submit``."""
    pack = subprocess.run([sys.executable, "-m", "imgfeat_loader.cli", "spark", "pack", "--spark-submit",
                           "--cache", str(archive_cache)], capture_output=True, text=True, check=True)
    argv = [str(pyspark_home() / "bin" / "spark-submit"), "--master", standalone.master_url,
            "--conf", "spark.ui.enabled=false", *pack.stdout.split(), *app_args]
    return subprocess.run(argv, capture_output=True, text=True, env=_spark_env(tmp), timeout=900, cwd=tmp)


@pytest.mark.slow
def test_spark_submit_files_on_standalone_cluster(
    standalone: StandaloneCluster, archive_cache: Path, tmp_path: Path, tcp_dsn: str, resnet18: str,
    cmu_faces: Path, faces312: dict[str, np.ndarray], conn: psycopg.Connection[Any],
) -> None:
    proc = _submit(standalone, archive_cache, tmp_path, "--dsn", tcp_dsn, "spark", "featurize",
                   "--files", f"{cmu_faces}/{FACES_GLOB}", "--model", resnet18, "--target", "cluster_files_r18")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith("featurized 312 images"), proc.stdout
    got = features_by_path(conn, "cluster_files_r18", resnet18)
    assert worst_diff(got, faces312) <= TOL
    # the executor ran the shipped environment: unpacked as ./env in its work directory
    app_dirs = list((standalone.base_dir / "work-1").glob("app-*/*/env/bin/python"))  # type: ignore[operator]
    assert app_dirs, "no executor unpacked the environment"
    # CPU over the executor's whole process tree (JVM + Python workers) >= the Python workers' own
    tree_ms, python_ms = _cpu_figures(summary)
    assert tree_ms >= python_ms > 0


def _cpu_figures(summary: str) -> tuple[float, float]:
    import re

    found = re.search(r"CPU (\d+) ms per image over (\d+) executor process trees? .*Python workers alone (\d+) ms", summary)
    assert found, summary
    return float(found.group(1)), float(found.group(3))


@pytest.mark.slow
def test_spark_submit_jdbc_table_on_standalone_cluster(
    standalone: StandaloneCluster, archive_cache: Path, tmp_path: Path, tcp_dsn: str, resnet18: str,
    faces312: dict[str, np.ndarray], conn: psycopg.Connection[Any],
) -> None:
    """The JDBC driver given with --jars before the driver JVM starts: the JDBC reader works on
    the driver and on the executors."""
    proc = _submit(standalone, archive_cache, tmp_path, "--dsn", tcp_dsn, "spark", "featurize",
                   "--table", "cluster_faces", "--reader", "jdbc", "--model", resnet18, "--target", "cluster_jdbc_r18",
                   "--partitions", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("featurized 312 images from public.cluster_faces")
    assert worst_diff(features_by_path(conn, "cluster_jdbc_r18", resnet18, join_ids=True), faces312) <= TOL


@pytest.mark.slow
def test_cli_ships_the_archive_to_a_cluster_it_connects_to(
    standalone: StandaloneCluster, archive: Path, archive_cache: Path, tmp_path: Path, tcp_dsn: str, resnet18: str,
    cmu_faces: Path, faces312: dict[str, np.ndarray], conn: psycopg.Connection[Any],
) -> None:
    """Without spark-submit: ``imgfeat spark featurize --master spark://... --python archive``
    starts the driver JVM itself and ships the cached archive (the worker sees nothing else)."""
    glob = f"{cmu_faces}/an2i/an2i_{{left,right}}_*_{{open,sunglasses}}.pgm"
    argv = [sys.executable, "-m", "imgfeat_loader.cli", "--dsn", tcp_dsn, "spark", "featurize",
            "--master", standalone.master_url, "--python", "archive", "--conf", "spark.ui.enabled=false",
            "--files", glob, "--model", resnet18, "--target", "cluster_cli_r18"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=_spark_env(tmp_path, archive_cache), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("featurized 16 images"), proc.stdout
    assert sorted(p.name for p in archive_cache.glob("*.tar.gz")) == [archive.name]  # the cached one, not rebuilt
    got = features_by_path(conn, "cluster_cli_r18", resnet18)
    assert worst_diff(got, {p: v for p, v in faces312.items() if p in got}) <= TOL and len(got) == 16


# --------------------------------------------------------------------------- addresses only this machine has


def test_executors_refuse_addresses_of_this_machine(dsn: str, tcp_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    for master in ("yarn", "k8s://https://kubernetes.invalid:6443", "spark://spark-master.invalid:7077"):
        with pytest.raises(InvalidParameterError, match="Unix socket in /"):
            check_executors_reach(master, "/var/run/postgresql")
        with pytest.raises(InvalidParameterError, match="127.0.0.1, the machine each executor runs on"):
            check_executors_reach(master, "127.0.0.1")
        with pytest.raises(InvalidParameterError, match="localhost"):
            check_executors_reach(master, "db.example.com", jdbc_url="jdbc:postgresql://localhost:5432/photos")
        check_executors_reach(master, "db.example.com", "192.0.2.10")  # a network address: fine
    for master in ("local[*]", "local-cluster[2,1,1024]", "spark://127.0.0.1:7077"):
        check_executors_reach(master, "/var/run/postgresql")  # every executor is on this machine
    # the CLI refuses before starting any JVM, in its own words
    javas = {p.pid for p in psutil.Process().children(recursive=True) if p.name() == "java"}
    rc = main(["--dsn", dsn, "spark", "featurize", "--files", "/nonexistent/*.png", "--target", "t",
               "--master", "spark://spark-master.invalid:7077"])
    err = capsys.readouterr().err
    assert rc == 1
    assert {p.pid for p in psutil.Process().children(recursive=True) if p.name() == "java"} == javas
    lines = err.strip().splitlines()
    # the test database's DSN is a Unix socket here, 127.0.0.1 when IMGFEAT_TEST_DSN names a server (PG 17 suite)
    assert re.match(r"imgfeat: the Spark executors would reach the database through (the Unix socket in /|127\.0\.0\.1, )",
                    lines[0]), lines[0]
    assert "spark://spark-master.invalid:7077 runs them on other machines" in lines[0]
    assert "host=db.example.com" in lines[1] and "Traceback" not in err
    rc = main(["--dsn", tcp_dsn, "spark", "featurize", "--table", "t", "--target", "t", "--master", "yarn"])
    assert rc == 1 and "through 127.0.0.1, the machine each executor runs on" in capsys.readouterr().err


# --------------------------------------------------------------------------- a JVM that dies


@pytest.mark.slow
def test_driver_jvm_death_is_one_line_with_its_log(
    dsn: str, resnet18: str, cmu_faces: Path, tmp_path: Path, conn: psycopg.Connection[Any],
) -> None:
    argv = [sys.executable, "-m", "imgfeat_loader.cli", "--dsn", dsn, "spark", "featurize", "--master", "local[1]",
            "--files", f"{cmu_faces}/{FACES_GLOB}", "--model", resnet18, "--target", "jvm_dies", "--batch-size", "4"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_spark_env(tmp_path))
    try:
        deadline = time.monotonic() + 300
        java = None
        while time.monotonic() < deadline and proc.poll() is None:
            rows = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'jvm_dies'").fetchone()
            if rows == (1,) and conn.execute("SELECT count(*) > 0 FROM jvm_dies").fetchone() == (True,):
                java = next(p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "java")
                break
            time.sleep(0.5)
        assert java is not None, "the job never wrote a batch"
        java.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"imgfeat: Spark's driver JVM (pid {java.pid}) died during the job (killed by signal 9); its log: ")
    log = Path(lines[0].rsplit("its log: ", 1)[1])
    assert log.is_file() and log.parent == tmp_path / "state" / "imgfeat" / "spark"
    assert "sc.setLogLevel" in log.read_text(errors="replace")  # the JVM's output went there, not to the terminal
    assert out == ""
