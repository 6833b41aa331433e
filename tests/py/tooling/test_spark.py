"""featurize_spark on a two-executor Spark (local-cluster[2,1,1024]): files and tables in,
PostgreSQL tables and Parquet out, features equal to CALL imgfeat.featurize, resumable."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pyspark.sql import SparkSession

from imgfeat.core.errors import ImageDecodeError, InvalidParameterError, ModelError, ModelNotFoundError
from imgfeat.core.model_info import ModelInfo
from imgfeat.core.spec import Preprocessing
from imgfeat_loader.cli import main
from imgfeat_loader.spark import featurize_spark, file_id, spark_session
from imgfeat_loader.spark_job import verify_model_bytes

MASTER = "local-cluster[2,1,1024]"
N_FACES = 40
TOL = 1e-5


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    """Two executors of one core each, the venv's Python on both, the Debian JDBC jar."""
    session = spark_session(MASTER, app_name="imgfeat-tests", conf={"spark.ui.enabled": "false"})
    assert session.sparkContext.defaultParallelism == 2
    yield session
    session.stop()


@pytest.fixture(scope="module")
def faces40(tmp_path_factory: pytest.TempPathFactory, face_files: list[Path]) -> list[Path]:
    """Copies of 40 CMU faces (every 7th full-resolution left/right face) in one directory."""
    root = tmp_path_factory.mktemp("faces40")
    picked = face_files[::7][:N_FACES]
    assert len(picked) == N_FACES
    return sorted(Path(shutil.copy(p, root / p.name)) for p in picked)


@pytest.fixture(scope="module")
def reference(dsn: str, resnet18: str, faces40: list[Path]) -> dict[str, np.ndarray]:
    """path -> features of CALL imgfeat.featurize on the same bytes (tables spark_ref text ids,
    spark_faces bigint ids 1..40 in path order)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE spark_ref (id text PRIMARY KEY, image bytea)")
        c.execute("CREATE TABLE spark_faces (id bigint PRIMARY KEY, path text, image bytea)")
        with c.cursor().copy("COPY spark_ref (id, image) FROM STDIN") as copy:
            for p in faces40:
                copy.write_row((str(p), p.read_bytes()))
        with c.cursor().copy("COPY spark_faces (id, path, image) FROM STDIN") as copy:
            for i, p in enumerate(faces40, start=1):
                copy.write_row((i, str(p), p.read_bytes()))
        c.execute("CALL imgfeat.featurize('spark_ref', 'spark_ref_r18', %s, batch_size => 16)", (resnet18,))
        rows = c.execute("SELECT id, features FROM spark_ref_r18 WHERE model_name = %s", (resnet18,)).fetchall()
    assert len(rows) == N_FACES
    return {i: np.asarray(f, dtype=np.float32) for i, f in rows}


def features_of(conn: psycopg.Connection[Any], table: str, model: str) -> dict[Any, np.ndarray]:
    rows = conn.execute(f"SELECT id, features FROM {table} WHERE model_name = %s", (model,)).fetchall()
    return {i: np.asarray(f, dtype=np.float32) for i, f in rows}


def worst_diff(got: dict[Any, np.ndarray], want: dict[Any, np.ndarray]) -> float:
    assert set(got) == set(want)
    return max(float(np.max(np.abs(got[k] - want[k]))) for k in want)


def test_files_to_table_equal_in_database(
    spark: SparkSession, dsn: str, resnet18: str, faces40: list[Path], reference: dict[str, np.ndarray],
    conn: psycopg.Connection[Any],
) -> None:
    report = featurize_spark(spark, dsn, resnet18, files=f"{faces40[0].parent}/*.pgm", target="spark_files_r18",
                             partitions=4, batch_size=8)
    assert (report.featurized, report.already_done, report.failed, report.partitions) == (N_FACES, 0, 0, 4)
    cols = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'spark_files_r18'::regclass AND attnum > 0 ORDER BY attnum"
    ).fetchall()
    assert cols == [("id", "text"), ("model_name", "text"), ("features", "real[]"),
                    ("featurized_at", "timestamp with time zone")]
    pk = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'spark_files_r18'::regclass AND contype = 'p'"
    ).fetchone()
    assert pk == ("PRIMARY KEY (id, model_name)",)
    got = features_of(conn, "spark_files_r18", resnet18)
    assert worst_diff(got, reference) <= TOL
    assert all(v.shape == (512,) for v in got.values())
    assert not np.allclose(got[str(faces40[0])], got[str(faces40[1])])


def test_interrupted_job_run_again_gives_one_row_per_image(
    spark: SparkSession, dsn: str, resnet18: str, faces40: list[Path], reference: dict[str, np.ndarray],
    conn: psycopg.Connection[Any],
) -> None:
    folder = faces40[0].parent
    # the "interrupted" job: only the faces of users a..c were done
    first = featurize_spark(spark, dsn, resnet18, files=f"{folder}/[a-c]*.pgm", target="spark_resume", partitions=2)
    partial = [p for p in faces40 if p.name[0] in "abc"]
    assert 0 < first.featurized == len(partial) < N_FACES
    # and one more row was committed by another job before the crash (a marker vector)
    extra = next(p for p in faces40 if p.name[0] not in "abc")
    conn.execute("INSERT INTO spark_resume (id, model_name, features) VALUES (%s, %s, array_fill(7::real, ARRAY[512]))",
                 (str(extra), resnet18))
    before = conn.execute("SELECT max(featurized_at) FROM spark_resume").fetchone()
    again = featurize_spark(spark, dsn, resnet18, files=f"{folder}/*.pgm", target="spark_resume", partitions=3, batch_size=4)
    assert again.already_done == len(partial) + 1
    assert again.featurized == N_FACES - len(partial) - 1
    per_id = conn.execute("SELECT id, count(*) FROM spark_resume GROUP BY id").fetchall()
    assert len(per_id) == N_FACES and {n for _, n in per_id} == {1}
    got = features_of(conn, "spark_resume", resnet18)
    assert np.all(got[str(extra)] == 7.0)  # committed work is kept, never redone
    del got[str(extra)]
    assert worst_diff(got, {k: v for k, v in reference.items() if k != str(extra)}) <= TOL
    # rows of the first run were not rewritten
    assert conn.execute("SELECT count(*) FROM spark_resume WHERE featurized_at <= %s", before).fetchone() == (len(partial) + 1,)
    # a third run has nothing to do
    third = featurize_spark(spark, dsn, resnet18, files=f"{folder}/*.pgm", target="spark_resume")
    assert (third.featurized, third.already_done) == (0, N_FACES)


def test_job_that_dies_midway_completes_when_run_again(
    spark: SparkSession, dsn: str, resnet18: str, faces40: list[Path], reference: dict[str, np.ndarray],
    conn: psycopg.Connection[Any],
) -> None:
    """A crash in the middle of a partition (here: the database refuses id 30, so that task
    fails on every retry and Spark aborts the job); the next run does only what is missing.
    The psycopg reader reads each id range in id order, so batch 21..24 and 25..28 of the
    second range (21..40) are committed before the batch holding 30 fails."""
    conn.execute("CREATE TABLE spark_crash (id bigint NOT NULL, model_name text NOT NULL, features real[] NOT NULL, "
                 "featurized_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, model_name))")
    conn.execute("CREATE FUNCTION spark_crash_at_30() RETURNS trigger LANGUAGE plpgsql AS "
                 "$$BEGIN IF NEW.id = 30 THEN RAISE EXCEPTION 'simulated crash'; END IF; RETURN NEW; END$$")
    conn.execute("CREATE TRIGGER crash BEFORE INSERT ON spark_crash FOR EACH ROW EXECUTE FUNCTION spark_crash_at_30()")
    with pytest.raises(Exception, match="simulated crash"):
        featurize_spark(spark, dsn, resnet18, table="spark_faces", target="spark_crash", partitions=2, batch_size=4,
                        reader="psycopg")
    done = {i for (i,) in conn.execute("SELECT id FROM spark_crash").fetchall()}
    assert set(range(21, 29)) <= done and 30 not in done  # the batches before the crash were committed
    conn.execute("DROP TRIGGER crash ON spark_crash")
    again = featurize_spark(spark, dsn, resnet18, table="spark_faces", target="spark_crash", partitions=2,
                            batch_size=4, reader="psycopg")
    assert (again.featurized, again.already_done) == (N_FACES - len(done), 0)  # done rows are not even read
    per_id = conn.execute("SELECT id, count(*) FROM spark_crash GROUP BY id").fetchall()
    assert sorted(i for i, _ in per_id) == list(range(1, N_FACES + 1)) and {n for _, n in per_id} == {1}
    got = features_of(conn, "spark_crash", resnet18)
    assert worst_diff({str(p): got[i] for i, p in enumerate(faces40, start=1)}, reference) <= TOL


def test_table_through_jdbc_by_id_ranges(
    spark: SparkSession, dsn: str, resnet18: str, faces40: list[Path], reference: dict[str, np.ndarray],
    conn: psycopg.Connection[Any],
) -> None:
    report = featurize_spark(spark, dsn, resnet18, table="spark_faces", target="spark_jdbc_r18", partitions=3,
                             reader="jdbc", batch_size=16)
    assert (report.reader, report.partitions, report.featurized, report.failed) == ("jdbc", 3, N_FACES, 0)
    got = features_of(conn, "spark_jdbc_r18", resnet18)
    by_path = {str(p): got[i] for i, p in enumerate(faces40, start=1)}
    assert worst_diff(by_path, reference) <= TOL
    assert conn.execute("SELECT format_type(atttypid, -1) FROM pg_attribute WHERE attrelid = 'spark_jdbc_r18'::regclass "
                        "AND attname = 'id'").fetchone() == ("bigint",)
    # only rows without features are read again: half deleted, half redone
    conn.execute("DELETE FROM spark_jdbc_r18 WHERE id % 2 = 0")
    again = featurize_spark(spark, dsn, resnet18, table="spark_faces", target="spark_jdbc_r18", reader="jdbc")
    assert (again.featurized, again.already_done) == (N_FACES // 2, 0)
    got = features_of(conn, "spark_jdbc_r18", resnet18)
    assert worst_diff({str(p): got[i] for i, p in enumerate(faces40, start=1)}, reference) <= TOL


def test_table_through_psycopg_ranges_text_ids(
    spark: SparkSession, dsn: str, resnet18: str, reference: dict[str, np.ndarray], conn: psycopg.Connection[Any],
) -> None:
    report = featurize_spark(spark, dsn, resnet18, table="public.spark_ref", target="public.spark_psy_r18", partitions=5)
    assert report.reader == "psycopg"  # text ids: JDBC partitions by numbers only
    assert (report.partitions, report.featurized) == (5, N_FACES)
    assert worst_diff(features_of(conn, "spark_psy_r18", resnet18), reference) <= TOL
    with pytest.raises(InvalidParameterError, match="integer id ranges"):
        featurize_spark(spark, dsn, resnet18, table="spark_ref", target="spark_psy_r18", reader="jdbc")


def test_parquet_output(
    spark: SparkSession, dsn: str, resnet18: str, faces40: list[Path], reference: dict[str, np.ndarray], tmp_path: Path,
) -> None:
    out = tmp_path / "features.parquet"
    report = featurize_spark(spark, dsn, resnet18, files=f"{faces40[0].parent}/*.pgm", parquet=str(out), partitions=2)
    assert report.featurized == N_FACES
    df = spark.read.parquet(str(out))
    assert [(f.name, f.dataType.simpleString()) for f in df.schema.fields] == [
        ("id", "string"), ("model_name", "string"), ("features", "array<float>"), ("featurized_at", "timestamp")]
    rows = df.collect()
    assert {r.model_name for r in rows} == {resnet18}
    got = {r.id: np.asarray(r.features, dtype=np.float32) for r in rows}
    assert worst_diff(got, reference) <= TOL
    with pytest.raises(Exception, match="already exists"):
        featurize_spark(spark, dsn, resnet18, files=f"{faces40[0].parent}/*.pgm", parquet=str(out))


def test_broken_images_raise_or_skip(
    spark: SparkSession, dsn: str, resnet18: str, faces40: list[Path], tmp_path: Path, conn: psycopg.Connection[Any],
) -> None:
    for p in faces40[:3]:
        shutil.copy(p, tmp_path / p.name)
    broken = tmp_path / "zz_broken.pgm"
    broken.write_bytes(b"P5\n128 120\n255\n" + b"\x00" * 100)  # truncated
    empty = tmp_path / "zz_empty.pgm"  # Spark's file sources read no row for it: it must still fail
    empty.write_bytes(b"")
    glob = f"{tmp_path}/*.pgm"
    with pytest.raises(ImageDecodeError, match="zz_broken.pgm") as exc:
        featurize_spark(spark, dsn, resnet18, files=glob, target="spark_broken", partitions=1)
    assert "on_error='skip'" in (exc.value.hint or "")
    assert conn.execute("SELECT count(*) FROM spark_broken").fetchone() == (0,)  # the failing batch is not written
    report = featurize_spark(spark, dsn, resnet18, files=glob, target="spark_broken", partitions=1, on_error="skip")
    assert (report.featurized, report.failed) == (3, 2)
    assert [(f.id, f.error_class, f.message) for f in report.failures] == [
        (str(broken), "image_decode_error", report.failures[0].message),
        (str(empty), "image_decode_error", "image is empty (0 bytes)"),
    ]
    assert conn.execute("SELECT count(*) FROM spark_broken").fetchone() == (3,)
    # Parquet output lists it too
    pq = featurize_spark(spark, dsn, resnet18, files=glob, parquet=str(tmp_path / "out.parquet"), on_error="skip")
    assert (pq.featurized, [f.id for f in pq.failures]) == (3, [str(broken), str(empty)])

    # a table source records failures in imgfeat.featurize_errors, as the database does
    conn.execute("CREATE TABLE spark_bad (id int PRIMARY KEY, image bytea)")
    conn.execute("INSERT INTO spark_bad VALUES (1, %s), (2, NULL), (3, 'not an image'::bytea)", (faces40[0].read_bytes(),))
    report = featurize_spark(spark, dsn, resnet18, table="spark_bad", target="spark_bad_r18", on_error="skip")
    assert (report.featurized, report.failed) == (1, 2)
    errors = conn.execute(
        "SELECT id, error_class FROM imgfeat.featurize_errors WHERE source = 'spark_bad'::regclass ORDER BY id"
    ).fetchall()
    assert errors == [("2", "image_decode_error"), ("3", "image_decode_error")]


def test_model_errors(spark: SparkSession, dsn: str, resnet18: str, faces40: list[Path]) -> None:
    with pytest.raises(ModelNotFoundError, match="no_such_model") as exc:
        featurize_spark(spark, dsn, "no_such_model", files=f"{faces40[0].parent}/*.pgm", target="spark_x")
    assert "resnet18" in (exc.value.detail or "")  # the registered models are listed
    info = ModelInfo("m", "custom", 224, 224, 512, Preprocessing(), "custom", "input", "features", False,
                     "0" * 64, 3)
    with pytest.raises(ModelError, match="do not match the registered sha256"):
        verify_model_bytes(info, b"abc")
    with pytest.raises(InvalidParameterError, match="exactly one source"):
        featurize_spark(spark, dsn, resnet18, target="spark_x")


def test_file_ids() -> None:
    assert file_id("file:/data/faces/a b.pgm") == "/data/faces/a b.pgm"  # Spark's path column is not percent-encoded
    assert file_id("file:/data/100%25.png") == "/data/100%25.png"
    assert file_id("file:///data/x.png") == "/data/x.png"
    assert file_id("hdfs://nn:8020/imgs/x.png") == "hdfs://nn:8020/imgs/x.png"


def test_cli_spark_featurize(
    spark: SparkSession, dsn: str, resnet18: str, faces40: list[Path], reference: dict[str, np.ndarray],
    conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str],
) -> None:
    rc = main(["--dsn", dsn, "spark", "featurize", "--files", f"{faces40[0].parent}/*.pgm", "--model", resnet18,
               "--target", "spark_cli", "--master", MASTER, "--partitions", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"featurized {N_FACES} images" in out
    assert "ms per image over 2 executor process trees (JVM and Python workers; Python workers alone" in out
    assert worst_diff(features_of(conn, "spark_cli", resnet18), reference) <= TOL
    assert not spark.sparkContext._jsc.sc().isStopped()  # the CLI leaves a session it did not create
    rc = main(["--dsn", dsn, "spark", "featurize", "--table", "spark_nope", "--model", resnet18, "--target", "spark_cli"])
    assert rc == 1
    assert 'relation "spark_nope" does not exist' in capsys.readouterr().err


@pytest.mark.slow
def test_all_312_faces_equal_in_database(
    spark: SparkSession, dsn: str, resnet18: str, cmu_faces: Path, face_files: list[Path], conn: psycopg.Connection[Any],
) -> None:
    report = featurize_spark(spark, dsn, resnet18, files=f"{cmu_faces}/*/*_{{left,right}}_*_{{open,sunglasses}}.pgm",
                             target="spark_all", batch_size=32)
    assert report.featurized == len(face_files) == 312
    conn.execute("CREATE TABLE spark_all_src (id text PRIMARY KEY, image bytea)")
    with conn.cursor().copy("COPY spark_all_src (id, image) FROM STDIN") as copy:
        for p in face_files:
            copy.write_row((str(p), p.read_bytes()))
    conn.execute("CALL imgfeat.featurize('spark_all_src', 'spark_all_ref', %s, batch_size => 64)", (resnet18,))
    assert worst_diff(features_of(conn, "spark_all", resnet18), features_of(conn, "spark_all_ref", resnet18)) <= TOL


def _errors(conn: psycopg.Connection[Any], source: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT target::text, id, count(*) FROM imgfeat.featurize_errors WHERE source = %s::regclass "
        "GROUP BY 1, 2 ORDER BY 1, id::int", (source,)
    ).fetchall()


def test_error_table_one_row_per_source_target_model_id(
    spark: SparkSession, dsn: str, resnet18: str, faces40: list[Path], conn: psycopg.Connection[Any],
) -> None:
    """Spark and in-database jobs, run again and again, keep one featurize_errors row per
    (source, target, model, id); a later run that featurizes the id removes it."""
    good = faces40[0].read_bytes()
    conn.execute("CREATE TABLE spark_err (id int PRIMARY KEY, image bytea)")
    conn.execute("INSERT INTO spark_err VALUES (1, %s), (5, ''::bytea), (50, 'not an image'::bytea), (1000, NULL)", (good,))
    for _ in range(3):
        report = featurize_spark(spark, dsn, resnet18, table="spark_err", target="spark_err_a", on_error="skip",
                                 partitions=2)
        assert [f.id for f in report.failures] == [5, 50, 1000]  # in id order, numerically
    assert _errors(conn, "spark_err") == [("spark_err_a", "5", 1), ("spark_err_a", "50", 1), ("spark_err_a", "1000", 1)]
    conn.execute("CALL imgfeat.featurize('spark_err', 'spark_err_a', %s, on_error => 'skip')", (resnet18,))
    conn.execute("CALL imgfeat.featurize('spark_err', 'spark_err_b', %s, on_error => 'skip')", (resnet18,))
    featurize_spark(spark, dsn, resnet18, table="spark_err", target="spark_err_b", on_error="skip")
    assert _errors(conn, "spark_err") == [("spark_err_a", "5", 1), ("spark_err_a", "50", 1), ("spark_err_a", "1000", 1),
                                          ("spark_err_b", "5", 1), ("spark_err_b", "50", 1), ("spark_err_b", "1000", 1)]
    messages = dict(conn.execute("SELECT id, message FROM imgfeat.featurize_errors WHERE source = 'spark_err'::regclass "
                                 "AND target = 'spark_err_a'::regclass").fetchall())
    assert messages["5"] == "image is empty (0 bytes)" and messages["1000"] == "image is NULL"
    # fixed images: Spark clears its target's rows, the in-database job its own
    conn.execute("UPDATE spark_err SET image = %s WHERE id IN (5, 50)", (good,))
    featurize_spark(spark, dsn, resnet18, table="spark_err", target="spark_err_a", on_error="skip")
    assert _errors(conn, "spark_err") == [("spark_err_a", "1000", 1),
                                          ("spark_err_b", "5", 1), ("spark_err_b", "50", 1), ("spark_err_b", "1000", 1)]
    conn.execute("CALL imgfeat.featurize('spark_err', 'spark_err_b', %s, on_error => 'skip')", (resnet18,))
    assert _errors(conn, "spark_err") == [("spark_err_a", "1000", 1), ("spark_err_b", "1000", 1)]
    # the unique index holds it even against a direct second insert by imgfeat's own writer
    conn.execute("SELECT imgfeat_internal.record_errors('spark_err', 'spark_err_a', %s, ARRAY['1000', '1000'], "
                 "ARRAY['x', 'y'], ARRAY['first', 'second'])", (resnet18,))
    assert conn.execute("SELECT error_class, message FROM imgfeat.featurize_errors WHERE source = 'spark_err'::regclass "
                        "AND target = 'spark_err_a'::regclass").fetchall() == [("y", "second")]


def test_raise_names_the_smallest_failing_id(
    spark: SparkSession, dsn: str, resnet18: str, faces40: list[Path], conn: psycopg.Connection[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two partitions stop at ids 1000 and 50: the error names 50 (numeric order, not text
    order); the CLI's hint speaks its flags, in sentences."""
    good = faces40[0].read_bytes()
    conn.execute("CREATE TABLE spark_order (id bigint PRIMARY KEY, image bytea)")
    conn.execute("INSERT INTO spark_order VALUES (1, %s), (50, 'GIF89a-not-really'::bytea), "
                 "(1000, 'GIF89a-not-really'::bytea), (2000, %s)", (good, good))
    with pytest.raises(ImageDecodeError) as exc:
        featurize_spark(spark, dsn, resnet18, table="spark_order", target="spark_order_r18", partitions=2,
                        reader="psycopg", batch_size=1)
    assert exc.value.message.startswith("image id=50 could not be featurized")
    assert "2 partitions stopped at a failing image" in (exc.value.detail or "")
    assert exc.value.hint is not None and "ICO. Pass on_error='skip'" in exc.value.hint
    rc = main(["--dsn", dsn, "spark", "featurize", "--table", "spark_order", "--target", "spark_order_r18",
               "--model", resnet18, "--partitions", "2", "--reader", "psycopg", "--batch-size", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    lines = err.splitlines()
    assert lines[0].startswith("imgfeat: image id=50 could not be featurized: not a recognised image format")
    assert lines[-1].strip().endswith("JPEG 2000, ICO. Pass --on-error skip to record failures and go on.")
    assert "on_error" not in err and "Traceback" not in err


def test_cpu_over_executor_process_trees_and_threads(
    spark: SparkSession, dsn: str, resnet18: str, faces40: list[Path], reference: dict[str, np.ndarray],
    conn: psycopg.Connection[Any],
) -> None:
    report = featurize_spark(spark, dsn, resnet18, files=f"{faces40[0].parent}/*.pgm", target="spark_cpu",
                             partitions=4, intra_op_threads=2)
    assert report.featurized == N_FACES and report.executors == 2
    # the whole tree (executor JVM, PySpark daemon, Python workers) costs more than the workers alone
    assert report.cpu_seconds > report.python_cpu_seconds > 0
    assert report.cpu_per_image == pytest.approx(report.cpu_seconds / N_FACES)
    assert worst_diff(features_of(conn, "spark_cpu", resnet18), reference) <= TOL
    # the threads reach onnxruntime
    from imgfeat_loader.spark import fetch_model
    from imgfeat_loader.spark_job import JobSpec, _MODELS, model_for

    info, data = fetch_model(conn, resnet18)
    _MODELS.clear()
    model = model_for(JobSpec(model_name=resnet18, info=info, intra_op_threads=2), data)
    assert model.session.get_session_options().intra_op_num_threads == 2
    _MODELS.clear()
    with pytest.raises(InvalidParameterError, match="intra_op_threads must be positive"):
        featurize_spark(spark, dsn, resnet18, files=f"{faces40[0].parent}/*.pgm", target="spark_cpu", intra_op_threads=0)
